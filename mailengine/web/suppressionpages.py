"""The suppression list in the web admin (search, add, remove) and its JSON API."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.logger import Logger

from mailengine.queue.suppression import Entry, SuppressionList, normalize
from mailengine.web.admin import Routes, WebAdmin
from mailengine.web.auth import identity_of
from mailengine.web.login import arg
from mailengine.web.render import csrf_field, el, grid, local_time, post_button, tr, url

log = Logger(namespace="mailengine.web")
PAGE_SIZE = 100
MAX_LIMIT = 1000


class NoList(RuntimeError):
    """This engine has no suppression list (built without one, as in some tests)."""


def _list(admin: WebAdmin) -> SuppressionList:
    listing = admin.engine.suppression
    if listing is None:
        raise NoList("no suppression list")
    return listing


def entry_json(e: Entry) -> dict[str, Any]:
    return attrs.asdict(e)


def _valid(address: str) -> bool:
    local, at, domain = normalize(address).rpartition("@")
    return bool(at and local and domain) and not any(c.isspace() for c in address.strip())


def add_routes(app: Routes, admin: WebAdmin) -> None:
    async def add(address: str, reason: str, user: str) -> bool:
        listing = _list(admin)
        entry = Entry(address, reason or "added in the web admin", f"web:{user}", admin.now(), user)
        added: bool = await admin.run_blocking(lambda: listing.add_many([entry]) == 1)
        if added:
            log.info("web admin {user}: suppressed {a} ({r})", user=user, a=address, r=reason)
        return added

    async def remove(address: str, user: str) -> bool:
        listing = _list(admin)
        removed: bool = await admin.run_blocking(lambda: listing.remove(address))
        if removed:
            log.info("web admin {user}: unsuppressed {a}", user=user, a=address)
        return removed

    async def search(text: str, offset: int, limit: int) -> tuple[list[Entry], int]:
        listing = _list(admin)
        found: tuple[list[Entry], int] = await admin.run_blocking(
            lambda: listing.search(text, offset, limit)
        )
        return found

    @app.route("/gui/admin/suppression", methods=["GET"])
    async def page(request: Any) -> bytes:
        csrf = identity_of(request).csrf
        text = arg(request, "q")
        try:
            number = max(0, int(arg(request, "page", "0")))
        except ValueError:
            number = 0
        entries, total = await search(text, number * PAGE_SIZE, PAGE_SIZE)
        rows = [
            tr(
                el("td", e.address, class_="mono"),
                el("td", local_time(e.created, "%Y/%m/%d %H:%M"), class_="nowrap"),
                e.source,
                e.by,
                el("td", e.reason, class_="small"),
                el(
                    "td",
                    post_button("/gui/admin/suppression/remove", "Remove", csrf, address=e.address),
                ),
            )
            for e in entries
        ]
        finder = el(
            "form",
            el("label", "Search ", el("input", name="q", value=text, size="30")),
            el("button", "Search", type="submit"),
            el("a", "clear", href="/gui/admin/suppression"),
            method="get",
            class_="search",
        )
        adder = el(
            "form",
            csrf_field(csrf),
            el("label", "Address ", el("input", name="address", size="30", required=True)),
            el("label", " Reason ", el("input", name="reason", size="40")),
            el("button", "Suppress", type="submit", class_="primary"),
            method="post",
            action="/gui/admin/suppression/add",
        )
        more = []
        if (number + 1) * PAGE_SIZE < total:
            more.append(
                el(
                    "a",
                    "next page",
                    href=url("/gui/admin/suppression", q=text, page=str(number + 1)),
                )
            )
        body = el(
            "div",
            el("h1", "Suppression list"),
            el(
                "p",
                f"{total} address(es). RCPT TO a listed address is "
                + (
                    "accepted and dropped"
                    if admin.engine.config.suppression.action == "drop"
                    else "refused with 550 5.1.1"
                )
                + ("" if admin.engine.config.suppression.enabled else " (checking is off)")
                + ". Final bad-mailbox and bad-domain failures and hard bounces are added.",
                class_="muted",
            ),
            el("section", adder, class_="card"),
            el(
                "section",
                finder,
                grid(["Address", "Since", "Source", "By", "Reason", ""], rows, "None listed."),
                more,
                class_="card",
            ),
        )
        return admin.page(request, "Suppression list", body, active="suppression")

    @app.route("/gui/admin/suppression/add", methods=["POST"])
    async def add_form(request: Any) -> bytes:
        address = arg(request, "address").strip()
        if not _valid(address):
            admin.flash(request, f"{address!r} is not an address.")
        elif await add(address, arg(request, "reason").strip(), identity_of(request).user):
            admin.flash(request, f"{normalize(address)} suppressed.")
        else:
            admin.flash(request, f"{normalize(address)} was already listed.")
        return admin.redirect(request, "/gui/admin/suppression")

    @app.route("/gui/admin/suppression/remove", methods=["POST"])
    async def remove_form(request: Any) -> bytes:
        address = arg(request, "address").strip()
        if await remove(address, identity_of(request).user):
            admin.flash(request, f"{normalize(address)} removed: mail to it is relayed again.")
        else:
            admin.flash(request, f"{address} is not listed.")
        return admin.back(request, "/gui/admin/suppression")

    # -- JSON API -------------------------------------------------------------------

    @app.route("/api/suppression", methods=["GET"])
    async def api_list(request: Any) -> bytes:
        try:
            offset = max(0, int(arg(request, "offset", "0")))
            limit = max(0, min(MAX_LIMIT, int(arg(request, "limit", "100"))))
        except ValueError:
            return admin.json(request, {"error": "offset and limit are whole numbers"}, 400)
        entries, total = await search(arg(request, "search"), offset, limit)
        return admin.json(
            request,
            {"total": total, "offset": offset, "entries": [entry_json(e) for e in entries]},
        )

    @app.route("/api/suppression", methods=["POST"])
    async def api_add(request: Any) -> bytes:
        from mailengine.web.api import BadRequest, body_json

        try:
            data = body_json(request)
        except BadRequest as exc:
            return admin.json(request, {"error": str(exc)}, 400)
        address = str(data.get("address", "")).strip()
        if not _valid(address):
            return admin.json(request, {"error": 'send {"address": ..., "reason": ...}'}, 400)
        added = await add(address, str(data.get("reason", "")), identity_of(request).user)
        return admin.json(request, {"address": normalize(address), "added": added})

    @app.route("/api/suppression/<address>", methods=["DELETE"])
    async def api_remove(request: Any, address: str) -> bytes:
        removed = await remove(address, identity_of(request).user)
        code = 200 if removed else 404
        return admin.json(request, {"address": normalize(address), "removed": removed}, code)
