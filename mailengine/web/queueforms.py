"""Queue actions from the pages: confirm first, then act (one message or all mail to a domain)."""

from __future__ import annotations

from typing import Any

from mailengine.queue.actions import ActionResult, QueueFilter, plural
from mailengine.queue.store import BadMessageId
from mailengine.web.admin import Routes, WebAdmin
from mailengine.web.auth import identity_of
from mailengine.web.inmemory import MEMORY
from mailengine.web.login import arg
from mailengine.web.queuepages import LABELS, error_page, message_link, parse_filter
from mailengine.web.render import Html, count, el, grid, id_path, post_button, tr, url

DONE = {"delete": "deleted", "retry-now": "made due", "hold": "held", "release": "released"}


def confirm_body(
    action: str, csrf: str, question: str, detail: str, fields: dict[str, str], back: str
) -> Html:
    return el(
        "section",
        el("h1", question),
        el("p", detail),
        post_button(
            "/gui/admin/queue/action",
            f"Yes, {LABELS[action].lower()}",
            csrf,
            cls="danger" if action == "delete" else "primary",
            action=action,
            confirm="yes",
            **fields,
        ),
        " ",
        el("a", "Cancel", href=back, class_="button"),
        class_="card narrow",
    )


def results_body(action: str, results: list[ActionResult], which: QueueFilter) -> Html:
    ok = sum(r.ok for r in results)
    rows = [
        tr(
            message_link(r.message_id),
            el("td", "✓" if r.ok else "✗", class_="ok-mark" if r.ok else "bad-mark"),
            r.text,
        )
        for r in results[:500]
    ]
    where = "in memory" if which.dirs == (MEMORY,) else f"in {', '.join(which.dirs)}/"
    back = url("/gui/admin/queue", dir=which.dirs[0], domain=which.domain)
    return el(
        "div",
        el(
            "h1",
            f"{LABELS[action]}: {count(ok)} of {plural(len(results), 'message')} "
            f"to {which.domain} {where}",
        ),
        el("p", el("a", "Back to the queue", href=back, class_="button")),
        el("section", grid(["Message", "", "Result"], rows, "No message matched."), class_="card"),
    )


async def one_message(admin: WebAdmin, request: Any, action: str, message_id: str) -> bytes:
    back = f"/gui/admin/queue/message/{id_path(message_id)}"
    if arg(request, "confirm") != "yes":
        detail = await admin.queue.show(message_id)
        if detail is None:
            return error_page(admin, request, f"{message_id} is not in the queue.", 404)
        entry = detail.entry
        where = "memory" if entry.dirname == MEMORY else f"{entry.dirname}/"
        body = confirm_body(
            action,
            identity_of(request).csrf,
            f"{LABELS[action]} message {message_id}?",
            f"It is in {where} with {plural(len(entry.recipients), 'recipient')}.",
            {"id": message_id},
            back,
        )
        return admin.page(request, "Confirm", body, active="queue")
    result = await admin.queue.act(action, message_id, identity_of(request).user)
    admin.flash(
        request,
        f"{message_id}: {result.text}"
        if result.ok
        else f"{message_id}: not {DONE[action]}: {result.text}",
    )
    if result.ok and action == "delete" and not result.dest:
        return admin.redirect(request, url("/gui/admin/queue", dir=result.source))
    return admin.redirect(request, back)


async def all_to_domain(admin: WebAdmin, request: Any, action: str) -> bytes:
    try:
        which = parse_filter(lambda n: arg(request, n))
    except ValueError as exc:
        return error_page(admin, request, str(exc))
    if not which.domain:
        return error_page(admin, request, "Name a domain.")
    if arg(request, "confirm") != "yes":
        messages, recipients = await admin.queue.count(which)
        where = "memory" if which.dirs == (MEMORY,) else f"{which.dirs[0]}/"
        note = (
            " Messages that also go to other domains keep those recipients."
            if action == "delete"
            else ""
        )
        body = confirm_body(
            action,
            identity_of(request).csrf,
            f"{LABELS[action]} all mail to {which.domain} in {where}?",
            f"{plural(messages, 'message')} with {plural(recipients, 'recipient')} match.{note}",
            {"dir": which.dirs[0], "domain": which.domain},
            url("/gui/admin/queue", dir=which.dirs[0], domain=which.domain),
        )
        return admin.page(request, "Confirm", body, active="queue")
    results = await admin.queue.act_on_matching(action, which, identity_of(request).user)
    return admin.page(request, "Done", results_body(action, results, which), active="queue")


def add_routes(app: Routes, admin: WebAdmin) -> None:
    @app.route("/gui/admin/queue/action", methods=["POST"])
    async def action(request: Any) -> bytes:
        what = arg(request, "action")
        if what not in LABELS:
            return error_page(admin, request, "No such action.")
        message_id = arg(request, "id")
        try:
            if message_id:
                return await one_message(admin, request, what, message_id)
            return await all_to_domain(admin, request, what)
        except BadMessageId:
            return error_page(admin, request, "That is not a message id.")
