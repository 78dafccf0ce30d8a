"""Logs: the tail of today's log file, and downloads of log, undeliverable and bounce files."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from typing import Any

from twisted.protocols.basic import FileSender

from mailengine.web.admin import Routes, WebAdmin
from mailengine.web.login import arg
from mailengine.web.render import NONE, Html, count, el, grid, kilobytes, local_time, num, tr

REPORT_FILES = (
    ("hard-undeliverable.txt", "addresses that failed with a 5xx reply"),
    ("soft-undeliverable.txt", "addresses given up on after every retry"),
    ("hard-bounces.txt", "hard bounces received"),
    ("soft-bounces.txt", "soft bounces received"),
    ("unclassified-bounces.txt", "bounces received without a status code"),
)
DAILY_LOG = re.compile(r"^mailengine-\d{4}-\d{2}-\d{2}\.log$")
TAIL_BYTES = 512 * 1024
READ_WHOLE_BYTES = 1024 * 1024
DEFAULT_LINES = 300


def today_log_name(now: float) -> str:
    day = datetime.fromtimestamp(now, tz=UTC).astimezone().strftime("%Y-%m-%d")
    return f"mailengine-{day}.log"


def tail(path: str, lines: int) -> list[str]:
    """The last ``lines`` lines of a file, reading at most TAIL_BYTES from its end."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_BYTES))
            data = fh.read()
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", "replace").splitlines()
    if size > TAIL_BYTES and text:
        text = text[1:]  # the first line is probably cut
    return text[-lines:]


def downloadable(admin: WebAdmin, name: str) -> str | None:
    """The path of a file the logs page offers, or None (no other name reaches the disk)."""
    if name in dict(REPORT_FILES):
        return admin.engine.root_file(name)
    if DAILY_LOG.match(name):
        return os.path.join(admin.engine.log_dir, name)
    return None


def file_row(name: str, path: str, meaning: str) -> Html:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return tr(name, num(NONE), "", el("td", meaning, class_="muted"))
    return tr(
        el("a", name, href=f"/gui/admin/logs/file/{name}", download=name),
        num(kilobytes(st.st_size)),
        local_time(st.st_mtime, "%Y/%m/%d %H:%M"),
        el("td", meaning, class_="muted"),
    )


def add_routes(app: Routes, admin: WebAdmin) -> None:
    @app.route("/gui/admin/logs", methods=["GET"])
    async def logs(request: Any) -> bytes:
        try:
            lines = max(10, min(5000, int(arg(request, "lines", str(DEFAULT_LINES)))))
        except ValueError:
            lines = DEFAULT_LINES
        name = today_log_name(admin.now())
        path = os.path.join(admin.engine.log_dir, name)
        shown: list[str] = await admin.run_blocking(lambda: tail(path, lines))
        try:
            daily = sorted(
                (n for n in os.listdir(admin.engine.log_dir) if DAILY_LOG.match(n)), reverse=True
            )
        except FileNotFoundError:
            daily = []
        header = ["File", "#size", "Changed", ""]
        reports = [file_row(n, admin.engine.root_file(n), m) for n, m in REPORT_FILES]
        logfiles = [
            file_row(n, os.path.join(admin.engine.log_dir, n), "daily log") for n in daily[:30]
        ]
        body = el(
            "div",
            el("h1", "Logs"),
            el(
                "section",
                el(
                    "h2",
                    f"Today's log: {name}",
                    el("span", f"last {count(len(shown))} lines", class_="muted small"),
                ),
                el(
                    "form",
                    el(
                        "label",
                        "Lines ",
                        el("input", name="lines", value=str(lines), size="5", inputmode="numeric"),
                    ),
                    el("button", "Show", type="submit"),
                    method="get",
                    class_="inline",
                ),
                el(
                    "pre",
                    "\n".join(shown) or "(nothing logged today yet)",
                    class_="log",
                    id="log-tail",
                ),
                class_="card",
            ),
            el(
                "section",
                el("h2", "Undeliverable and bounce files"),
                grid(header, reports),
                class_="card",
            ),
            el(
                "section",
                el("h2", "Daily log files"),
                grid(header, logfiles, "No daily log files."),
                class_="card",
            ),
        )
        return admin.page(request, "Logs", body, active="logs")

    @app.route("/gui/admin/logs/file/<name>", methods=["GET"])
    async def download(request: Any, name: str) -> bytes:
        path = downloadable(admin, name)
        if path is None or not os.path.isfile(path):
            return admin.page(request, "Not found", el("p", f"No file {name}."), code=404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"content-disposition", f'attachment; filename="{name}"'.encode())
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            request.setHeader(b"content-length", str(size).encode())
            if size <= READ_WHOLE_BYTES:
                data: bytes = await admin.run_blocking(fh.read)
                return data
            # Larger files go out in chunks as the client takes them.
            await FileSender().beginFileTransfer(fh, request)
        return b""
