"""Queue pages: each directory listed, searched and paged; the summary by domain; one message.

The actions on these pages (buttons and the domain form) post to
``queueforms``, which asks for confirmation before anything changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mailengine.queue.actions import (
    ACTION_SOURCES,
    MessageDetail,
    QueueEntry,
    QueueFilter,
    parse_age,
)
from mailengine.queue.lastreply import last_replies, last_reply_of
from mailengine.queue.shape import bucket_labels
from mailengine.queue.shape import format_age as age
from mailengine.queue.store import BadMessageId
from mailengine.web.admin import Routes, WebAdmin
from mailengine.web.auth import identity_of
from mailengine.web.inmemory import BEING_SENT, MEMORY, WAITING_TO_SEND
from mailengine.web.login import arg
from mailengine.web.render import (
    NONE,
    Html,
    count,
    csrf_field,
    el,
    grid,
    id_path,
    kilobytes,
    local_time,
    num,
    post_button,
    tr,
    url,
)

PAGE_SIZE = 50
VIEW_DIRS = ("retry", "working", "hold", "incoming", "done", MEMORY)
SUMMARY_DIRS = ("retry", "working", MEMORY)  # what is still to be sent
LABELS = {"delete": "Delete", "retry-now": "Retry now", "hold": "Hold", "release": "Release"}


def parse_filter(
    get: Callable[[str], str], default_dirs: tuple[str, ...] = ("retry",)
) -> QueueFilter:
    """A QueueFilter from request fields; ValueError naming what is wrong."""
    dirs = tuple(d for d in get("dir").split(",") if d) or default_dirs
    for d in dirs:
        if d not in VIEW_DIRS:
            raise ValueError(f"no queue directory {d!r} (one of {', '.join(VIEW_DIRS)})")
    older = get("older_than").strip()
    return QueueFilter(
        dirs=dirs,
        domain=get("domain").strip().lstrip("@").lower(),
        address=get("address").strip(),
        text=get("q").strip(),
        older_than_seconds=parse_age(older) if older else 0.0,
    )


def dir_actions(dirname: str) -> list[str]:
    """The actions messages in ``dirname`` offer (memory: hold and delete)."""
    if dirname == MEMORY:
        return ["hold", "delete"]
    return [a for a in ("retry-now", "hold", "release", "delete") if dirname in ACTION_SOURCES[a]]


def actions_for(entry: QueueEntry) -> list[str]:
    """None while the message is being sent; otherwise those of its directory."""
    taken = entry.is_being_sent or entry.is_waiting_to_send
    return [] if taken else dir_actions(entry.dirname)


def message_link(message_id: str) -> Html:
    href = f"/gui/admin/queue/message/{id_path(message_id)}"
    return el("a", message_id, href=href, class_="mono")


def error_page(admin: WebAdmin, request: Any, text: str, code: int = 400) -> bytes:
    body = el("section", el("p", text, class_="error"), class_="card narrow")
    return admin.page(request, "Queue", body, code=code, active="queue")


def next_attempt(entry: QueueEntry, now: float) -> str:
    env = entry.envelope
    if entry.is_being_sent or entry.dirname == "working":
        return "being sent now"
    if entry.is_waiting_to_send:
        return "waiting for a connection"
    if entry.dirname == MEMORY:
        return "due: waits for the sender"
    if env is None or entry.dirname not in ("retry", "hold"):
        return env.status if env is not None and env.status else ""
    if env.retry_time is None or env.retry_time <= now:
        return "due" if entry.dirname == "retry" else "on release"
    return f"in {age(env.retry_time - now)}"


def entry_row(entry: QueueEntry, now: float) -> Html:
    env = entry.envelope
    if env is None:
        problem = el("td", f"unreadable: {entry.error}", colspan=8, class_="error-text")
        return tr(message_link(entry.message_id), problem)
    rcpts = entry.recipients
    shown = ", ".join(rcpts[:2]) + (f" (+{len(rcpts) - 2} more)" if len(rcpts) > 2 else "")
    return tr(
        message_link(entry.message_id),
        num(age(now - env.time_created)),
        env.mail_from or "<>",
        el("td", el("b", count(len(rcpts))), " ", shown),
        num(env.send_tries),
        next_attempt(entry, now),
        num(kilobytes(entry.size)),
        el("td", last_reply_of(env), class_="small error-text"),
        el("td", env.log[-1] if env.log else "", class_="small muted"),
    )


def dir_tabs(current: str, which: QueueFilter) -> Html:
    """Links to each directory (keeping the search) and to the summary."""
    tabs = [
        el(
            "a",
            "in memory" if d == MEMORY else f"{d}/",
            href=url("/gui/admin/queue", dir=d, q=which.text, domain=which.domain),
            class_="tab active" if d == current else "tab",
        )
        for d in VIEW_DIRS
    ]
    tabs.append(
        el(
            "a",
            "summary by domain",
            href="/gui/admin/queue/summary",
            class_="tab active" if current == "summary" else "tab",
        )
    )
    return el("div", tabs, class_="tabs")


def search_form(which: QueueFilter, older: str) -> Html:
    def field(label: str, name: str, value: str, size: int, hint: str) -> Html:
        return el(
            "label",
            label,
            " ",
            el("input", name=name, value=value, size=str(size), placeholder=hint),
        )

    return el(
        "form",
        el("input", type="hidden", name="dir", value=",".join(which.dirs)),
        field("Search", "q", which.text, 28, "id, sender or recipient"),
        field("Domain", "domain", which.domain, 20, "example.com"),
        field("Older than", "older_than", older, 6, "2h"),
        el("button", "Search", type="submit"),
        el("a", "clear", href=url("/gui/admin/queue", dir=",".join(which.dirs))),
        method="get",
        class_="search",
    )


def bulk_form(which: QueueFilter, csrf: str) -> Html:
    """All mail to one domain in this directory: the actions it offers (confirmed next)."""
    d = which.dirs[0]
    buttons = [
        el(
            "button",
            LABELS[a],
            type="submit",
            name="action",
            value=a,
            class_="danger" if a == "delete" else None,
        )
        for a in dir_actions(d)
    ]
    if not buttons:
        return Html("")
    return el(
        "form",
        csrf_field(csrf),
        el("input", type="hidden", name="dir", value=d),
        el("span", "All mail in memory to " if d == MEMORY else f"All mail in {d}/ to domain "),
        el(
            "input",
            name="domain",
            value=which.domain,
            size="22",
            placeholder="example.com",
            required=True,
        ),
        buttons,
        method="post",
        action="/gui/admin/queue/action",
        class_="bulk",
    )


def pager(which: QueueFilter, older: str, page: int, total: int) -> Html:
    first, last = page * PAGE_SIZE, min(total, (page + 1) * PAGE_SIZE)

    def link(p: int, label: str) -> Html:
        href = url(
            "/gui/admin/queue",
            dir=",".join(which.dirs),
            q=which.text,
            domain=which.domain,
            older_than=older,
            page=p,
        )
        return el("a", label, href=href, class_="button")

    shown = f"{count(first + 1 if total else 0)}-{count(last)} of {count(total)} messages"
    return el(
        "div",
        link(page - 1, "← previous") if page > 0 else None,
        el("span", shown, class_="muted"),
        link(page + 1, "next →") if last < total else None,
        class_="pager",
    )


def facts(detail: MessageDetail, now: float) -> list[tuple[str, str]]:
    entry, env = detail.entry, detail.entry.envelope
    where = "in memory" if entry.dirname == MEMORY else f"{entry.dirname}/"
    if env is None:
        return [("Directory", where), ("Problem", entry.error)]
    created = local_time(env.time_created, "%Y/%m/%d %H:%M:%S")
    return [
        ("Directory", where),
        ("From", env.mail_from or "<>"),
        ("To send", "\n".join(env.rcpt_to_send) or NONE),
        ("Sent", "\n".join(env.rcpt_sent) or NONE),
        ("Failed (hard)", "\n".join(env.rcpt_failed) or NONE),
        ("Soft failures", "\n".join(env.rcpt_transient) or NONE),
        (
            "Last reply",
            "\n".join(f"{a}: {r}" for a, r in last_replies(env).items()) or NONE,
        ),
        ("Created", f"{created} ({age(now - env.time_created)} ago)"),
        ("Priority", str(env.priority)),
        ("Send tries", str(env.send_tries)),
        ("Next attempt", next_attempt(entry, now) or NONE),
        ("Size", kilobytes(entry.size)),
    ]


def detail_body(detail: MessageDetail, now: float, csrf: str) -> Html:
    entry, env = detail.entry, detail.entry.envelope
    table = el(
        "table",
        [
            el("tr", el("th", k), el("td", el("pre", v, class_="plain")))
            for k, v in facts(detail, now)
        ],
        class_="facts",
    )
    buttons = [
        post_button(
            "/gui/admin/queue/action",
            LABELS[a],
            csrf,
            cls="danger" if a == "delete" else "",
            id=entry.message_id,
            action=a,
        )
        for a in actions_for(entry)
    ]
    if entry.is_waiting_to_send:
        why = WAITING_TO_SEND[:1].upper() + WAITING_TO_SEND[1:] + "."
    elif entry.is_being_sent or entry.dirname == "working":
        why = BEING_SENT[:1].upper() + BEING_SENT[1:] + "."
    else:
        why = f"No actions while a message is in {entry.dirname}/."
    none = el("span", why, class_="muted")
    attempts = "\n".join(env.log) if env is not None and env.log else "(no attempts yet)"

    def card(title: str, text: str) -> Html:
        return el("section", el("h2", title), el("pre", text, class_="log"), class_="card")

    return el(
        "div",
        el("h1", "Message ", el("span", entry.message_id, class_="mono")),
        el("div", buttons or none, class_="actions"),
        el("section", table, class_="card"),
        card("Attempt log", attempts),
        card("Headers", detail.headers or "(none)"),
        card(f"{entry.message_id}.inf", detail.inf_text),
    )


def add_routes(app: Routes, admin: WebAdmin) -> None:
    @app.route("/gui/admin/queue", methods=["GET"])
    async def listing(request: Any) -> bytes:
        try:
            which = parse_filter(lambda n: arg(request, n))
        except ValueError as exc:
            return error_page(admin, request, str(exc))
        try:
            page = max(0, int(arg(request, "page", "0")))
        except ValueError:
            page = 0
        entries, total = await admin.queue.page(which, page * PAGE_SIZE, PAGE_SIZE)
        now, older = admin.now(), arg(request, "older_than")
        columns = [
            "Message id",
            "#age",
            "From",
            "Recipients",
            "#tries",
            "Next attempt",
            "#size",
            "Last reply",
            "Last log entry",
        ]
        table = grid(columns, [entry_row(e, now) for e in entries], "No messages here match.")
        body = el(
            "div",
            el("h1", "Queue"),
            dir_tabs(which.dirs[0], which),
            el(
                "section",
                search_form(which, older),
                bulk_form(which, identity_of(request).csrf),
                class_="card",
            ),
            el("section", pager(which, older, page, total), table, class_="card"),
        )
        return admin.page(request, "Queue", body, active="queue")

    @app.route("/gui/admin/queue/summary", methods=["GET"])
    async def summary(request: Any) -> bytes:
        try:
            which = parse_filter(lambda n: arg(request, n), SUMMARY_DIRS)
        except ValueError as exc:
            return error_page(admin, request, str(exc))
        dirs = which.dirs
        shapes = await admin.queue.summary(dirs)
        rows = [
            tr(
                el("a", s.domain, href=url("/gui/admin/queue", dir="retry", domain=s.domain)),
                num(count(s.recipients), big=True),
                num(count(s.messages)),
                num(age(s.oldest_seconds)),
                *(num(count(b) if b else "·") for b in s.buckets),
            )
            for s in shapes[:500]
        ]
        columns = [
            "Domain",
            "#recipients",
            "#messages",
            "#oldest",
            *("#" + label for label in bucket_labels()),
        ]
        where = ", ".join("memory" if d == MEMORY else d + "/" for d in dirs)
        body = el(
            "div",
            el("h1", "Queue summary by destination"),
            dir_tabs("summary", which),
            el(
                "p",
                f"Recipients still to send in {where}: "
                f"{count(sum(s.recipients for s in shapes))} in {count(len(shapes))} "
                "domains, by the age of their message (like Postfix's qshape).",
                class_="muted",
            ),
            el("section", grid(columns, rows, "Nothing queued."), class_="card"),
        )
        return admin.page(request, "Queue summary", body, active="queue")

    @app.route("/gui/admin/queue/message/<message_id>", methods=["GET"])
    async def message(request: Any, message_id: str) -> bytes:
        try:
            detail = await admin.queue.show(message_id)
        except BadMessageId:
            return error_page(admin, request, "That is not a message id.")
        if detail is None:
            return error_page(
                admin, request, f"{message_id} is not in the queue (sent, or removed).", 404
            )
        body = detail_body(detail, admin.now(), identity_of(request).csrf)
        return admin.page(request, message_id, body, active="queue")
