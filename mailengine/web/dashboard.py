"""The dashboard: state, big numbers, the last hour's chart, queue, connections, destinations.

The page holds a fragment that the browser re-fetches every few seconds
(``/gui/admin/live``); without scripts it refreshes itself whole.
"""

from __future__ import annotations

from typing import Any

from mailengine.delivery.status import HostStatus
from mailengine.observe import statslines
from mailengine.observe.books import balance_line
from mailengine.queue.actions import plural
from mailengine.queue.shape import format_age as age
from mailengine.reports.categories import category_text
from mailengine.web.admin import Routes, WebAdmin
from mailengine.web.auth import identity_of
from mailengine.web.chart import SERIES, traffic_chart
from mailengine.web.cluster import cluster_card
from mailengine.web.destinations import destination_cells
from mailengine.web.render import (
    NONE,
    Html,
    count,
    el,
    grid,
    kilobytes,
    local_time,
    num,
    post_button,
    tr,
    url,
)
from mailengine.web.snapshot import Snapshot

REFRESH_SECONDS = 5
TOP_ROWS = 12  # destinations and hosts on the dashboard (the queue pages have them all)
FAILURE_ROWS = 10
DIR_MEANING = (
    ("retry", "waiting for the next attempt (and files dropped in by programs)"),
    ("working", "being sent now"),
    ("hold", "held by the operator: never sent until released"),
    ("incoming", "received for local domains"),
    ("done", "finished (kept with save_done)"),
)


def tile(key: str, label: str, value: str, unit: str, detail: Any = None, tone: str = "") -> Html:
    return el(
        "div",
        el("div", label, class_="label"),
        el("div", el("span", value, class_="value"), " ", el("span", unit, class_="unit")),
        el("div", detail, class_="detail") if detail else None,
        class_=f"tile {tone}".strip(),
        id=f"tile-{key}",
    )


def sending_now(s: Snapshot) -> str:
    """What outbound SMTP is doing, in one sentence."""
    busy = [h for h in s.hosts if h.open_connections]
    if not s.open_connections:
        return "no connection open: nothing is due right now."
    where = f" to {plural(len(busy), 'host')}" if busy else ""
    return f"{plural(s.open_connections, 'connection')} open{where}."


def state_bar(s: Snapshot, csrf: str) -> Html:
    pause = post_button("/gui/admin/controls/pause", "Pause sending", csrf)
    if s.paused:
        badge = el("span", "PAUSED", class_="badge paused")
        text = "Sending is paused: no new attempts; mail waits in retry/."
        if s.open_connections:
            text += (
                f" {plural(s.open_connections, 'connection')} still finish the attempts "
                "already under way."
            )
        button = post_button("/gui/admin/controls/resume", "Resume sending", csrf, cls="primary")
    elif not s.delivery_running:
        badge = el("span", "NOT SENDING", class_="badge idle")
        text = "The delivery engine is not running in this engine; mail waits in retry/."
        button = pause
    elif s.held_by_rate_cap:
        badge = el("span", "RATE CAP", class_="badge paused")
        text = (
            f"Sending is held: {count(s.rate_cap)} messages were sent in the last hour "
            "([smtp_out] max_messages_per_hour); more go as the hour moves on. " + sending_now(s)
        )
        button = pause
    else:
        badge = el("span", "SENDING", class_="badge sending")
        text = "Sending: " + sending_now(s)
        button = pause
    meta = [
        f"up {age(s.uptime_seconds)}",
        f"stats every {s.stats_interval_seconds} s"
        if s.stats_interval_seconds
        else "stats lines off",
        f"updated {local_time(s.now)}",
    ]
    return el(
        "div",
        badge,
        el("span", text, class_="state-text", id="state-text"),
        button,
        el("span", "TEST MODE", class_="badge test") if s.test_mode else None,
        el("span", " · ".join(meta), class_="meta"),
        class_="statebar" + (" is-paused" if s.paused or s.held_by_rate_cap else ""),
    )


def age_in_one_unit(seconds: float) -> tuple[str, str]:
    """``(value, unit)`` for a big number: 45 s, 12 min, 3.2 h, 2.5 days."""
    if seconds < 120:
        return str(int(seconds)), "s"
    if seconds < 7200:
        return str(int(seconds // 60)), "min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f}", "h"
    return f"{seconds / 86400:.1f}", "days"


def oldest_tile(s: Snapshot) -> Html:
    if not s.queue.indexed:
        return tile("oldest", "Oldest", NONE, "", "nothing queued")
    value, unit = age_in_one_unit(s.oldest_seconds)
    exact = "" if unit == "s" else f" ({age(s.oldest_seconds)})"
    return tile(
        "oldest",
        "Oldest",
        value,
        unit,
        "queued message" + exact,
        tone="warn" if s.oldest_seconds >= 3600 else "",
    )


def moved_period(s: Snapshot) -> str:
    """What the traffic numbers cover: the counts live in memory, so after a restart
    they start again from 0 and must not pass for the last hour's (issue 12 item 7)."""
    if s.uptime_seconds >= 3600:
        return "Last hour"
    return f"Since start ({age(s.uptime_seconds)} ago)"


def tiles(s: Snapshot) -> Html:
    """Big numbers in two groups: what moved in the last hour, and what is waiting now."""
    h = s.last_hour
    failed = h.failed_hard + h.failed_soft
    q = s.queue
    in_retry = q.dirs.get("retry", 0)
    last_hour = [
        tile(
            "received",
            "Received",
            count(s.received_last_hour),
            "messages",
            f"{count(s.per_hour(s.received_last_hour))}/h avg · {count(h.recv_inbound)} "
            f"inbound · {count(h.recv_relay)} relay",
        ),
        tile(
            "sent",
            "Sent",
            count(h.sent),
            "recipients",
            f"{count(s.per_hour(h.sent))}/h avg",
            tone="good" if h.sent else "",
        ),
        tile(
            "failed",
            "Failed",
            count(failed),
            "recipients",
            f"{count(h.failed_hard)} hard (5xx) · {count(h.failed_soft)} gave up",
            tone="bad" if failed else "",
        ),
        tile(
            "deferred",
            "Deferred",
            count(h.deferred),
            "recipients",
            "soft failures, will retry",
            tone="warn" if h.deferred else "",
        ),
    ]
    now = [
        tile(
            "retry",
            "In retry/",
            count(in_retry),
            "messages",
            "waiting for their next attempt",
            tone="warn" if s.paused and in_retry else "",
        ),
        tile(
            "memory",
            "In memory",
            count(q.memory_messages),
            "messages",
            f"{kilobytes(q.memory_bytes)} of message data",
        ),
        oldest_tile(s),
        tile(
            "connections",
            "Connections",
            count(s.open_connections),
            "open",
            "outbound SMTP to " + plural(sum(1 for h in s.hosts if h.open_connections), "host")
            if s.delivery_running
            else "delivery engine not running",
        ),
    ]
    return el(
        "div",
        el(
            "div",
            el("div", moved_period(s), class_="group-title"),
            el("div", last_hour, class_="tiles four"),
            class_="tilegroup",
        ),
        el(
            "div",
            el("div", "Now", class_="group-title"),
            el("div", now, class_="tiles four"),
            class_="tilegroup",
        ),
        class_="tilegroups",
    )


def chart_card(s: Snapshot) -> Html:
    legend = [
        el("span", el("i", style=f"background:{colour}"), name, class_="key")
        for name, colour, _ in SERIES
    ]
    return el(
        "section",
        el(
            "h2",
            "Traffic, last hour" if s.uptime_seconds >= 3600 else "Traffic since start",
            el("span", legend, class_="legend"),
        ),
        traffic_chart(s.intervals, s.now),
        class_="card",
    )


def stats_card(s: Snapshot) -> Html:
    h, t = s.last_hour, s.totals
    lines = [
        statslines.recv_line(h.recv_inbound, h.recv_relay, h.elapsed, t.received),
        statslines.sent_line(h.sent, h.elapsed, t.sent),
    ]
    totals = grid(
        [
            "Since start",
            "#received",
            "#sent",
            "#failed hard",
            "#failed soft",
            "#deferred",
            "#rejected",
        ],
        [
            tr(
                age(s.uptime_seconds),
                num(count(t.received)),
                num(count(t.sent)),
                num(count(t.failed_hard)),
                num(count(t.failed_soft)),
                num(count(t.deferred)),
                num(count(t.rejected)),
            )
        ],
    )
    moved = [
        iv
        for iv in s.intervals
        if iv.recv_inbound
        or iv.recv_relay
        or iv.sent
        or iv.failed_hard
        or iv.failed_soft
        or iv.deferred
    ]
    intervals = grid(
        ["Interval ending", "#length", "#received", "#sent", "#failed", "#deferred"],
        [
            tr(
                local_time(iv.end),
                num(f"{iv.elapsed:.0f} s"),
                num(count(iv.recv_inbound + iv.recv_relay)),
                num(count(iv.sent)),
                num(count(iv.failed_hard + iv.failed_soft)),
                num(count(iv.deferred)),
            )
            for iv in moved[-8:][::-1]
        ],
        "Nothing moved in the last hour."
        if s.uptime_seconds >= 3600
        else "Nothing moved since the start.",
    )
    return el(
        "section",
        el("h2", f"{moved_period(s)}, as the stats line prints it"),
        el(
            "div",
            el("div", el("pre", "\n".join(lines), class_="statsline"), totals),
            el("div", el("h3", "Latest stats intervals in which mail moved"), intervals),
            class_="columns",
        ),
        class_="card",
        id="stats",
    )


def queue_card(s: Snapshot) -> Html:
    rows = [
        tr(
            el("a", f"{name}/", href=url("/gui/admin/queue", dir=name)),
            num(count(s.queue.dirs.get(name, 0)), big=True),
            el("td", meaning, class_="muted"),
        )
        for name, meaning in DIR_MEANING
    ]
    rows.append(
        tr(
            el("a", "in memory", href=url("/gui/admin/queue", dir="memory")),
            num(count(s.queue.memory_messages), big=True),
            el("td", f"{kilobytes(s.queue.memory_bytes)} held for sending", class_="muted"),
        )
    )
    books = s.books
    return el(
        "section",
        el("h2", "Queue"),
        grid(["Directory", "#messages", ""], rows),
        # Every recipient taken in since start, and where it went (README: the books).
        el(
            "p",
            balance_line(books, s.books_queued),
            class_="muted" if not books.unaccounted(s.books_queued) else "error",
            id="books",
        ),
        class_="card",
        id="queue",
    )


def host_error_cell(h: HostStatus) -> Html:
    if h.protocol_errors:
        # Issue 9: a server out of step is shown as misbehaving, not just as failing.
        text = f"misbehaving ({plural(h.protocol_errors, 'protocol error')}): {h.misbehaving}"
        return el("td", text, class_="error-text")
    return el("td", h.last_error or NONE, class_="error-text" if h.last_error else "muted")


def hosts_card(s: Snapshot) -> Html:
    if not s.delivery_running:
        content = el(
            "p",
            "The delivery engine is not running, so no outbound connections are open.",
            class_="muted",
        )
    else:
        content = grid(
            ["Receiving host", "#open", "#sent", "#failed", "Last error"],
            [
                tr(
                    h.host,
                    num(count(h.open_connections) if h.open_connections else NONE, big=True),
                    num(count(h.sent)),
                    num(count(h.failed)),
                    host_error_cell(h),
                )
                for h in s.hosts[:TOP_ROWS]
            ],
            "No receiving host contacted since start.",
        )
    title = el("span", plural(s.open_connections, "connection") + " open", class_="aside")
    return el("section", el("h2", "Receiving hosts", title), content, class_="card", id="hosts")


def destinations_card(s: Snapshot) -> Html:
    rows = [tr(*destination_cells(d)) for d in s.destinations[:TOP_ROWS]]
    table = grid(
        ["Destination", "#queued recipients", "#oldest", "State", "Last error"],
        rows,
        "Nothing queued.",
    )
    aside = el("span", f"oldest message {age(s.oldest_seconds)}", class_="aside")
    return el(
        "section",
        el("h2", "Top destinations", aside if s.destinations else None),
        table,
        class_="card",
        id="destinations",
    )


def failures_card(s: Snapshot) -> Html:
    rows = [
        tr(
            el(
                "td",
                local_time(f.time, "%H:%M:%S"),
                class_="nowrap",
                title=local_time(f.time, "%Y/%m/%d %H:%M:%S"),
            ),
            el("td", f.address, title=f"message {f.message_id}"),
            el(
                "td",
                el("span", "hard" if f.hard else "soft", class_="pill bad" if f.hard else "pill"),
            ),
            el("td", category_text(f.category), class_="nowrap"),
            el("td", f.reason, class_="error-text"),
        )
        for f in s.failures[:FAILURE_ROWS]
    ]
    table = grid(
        ["Time", "Address", "", "Category", "Reason"], rows, "No final failures since start."
    )
    more = el("a", "all in hard-/soft-undeliverable.txt", href="/gui/admin/logs", class_="aside")
    return el(
        "section",
        el("h2", "Recent final failures", more if s.failures else None),
        table,
        class_="card",
        id="failures",
    )


def dashboard_body(s: Snapshot, csrf: str) -> Html:
    return el(
        "div",
        state_bar(s, csrf),
        cluster_card(s.cluster, s.now),
        tiles(s),
        chart_card(s),
        el("div", destinations_card(s), hosts_card(s), class_="columns"),
        el("div", failures_card(s), queue_card(s), class_="columns"),
        stats_card(s),
    )


def add_routes(app: Routes, admin: WebAdmin) -> None:
    @app.route("/")
    def root(request: Any) -> bytes:
        return admin.redirect(request, "/gui/admin", 302)

    @app.route("/gui/admin")
    async def dashboard(request: Any) -> bytes:
        s = await admin.snapshot()
        csrf = identity_of(request).csrf
        body = el(
            "div",
            el("noscript", el("meta", http_equiv="refresh", content=str(REFRESH_SECONDS * 2))),
            el(
                "div",
                dashboard_body(s, csrf),
                id="live",
                data_refresh="/gui/admin/live",
                data_seconds=str(REFRESH_SECONDS),
            ),
        )
        return admin.page(request, "Dashboard", body, active="dashboard")

    @app.route("/gui/admin/live")
    async def live(request: Any) -> bytes:
        s = await admin.snapshot()
        return admin.fragment(request, dashboard_body(s, identity_of(request).csrf))
