"""The Destinations view: each destination's queue, state and reason, with suspend, resume
and retry-now actions (page and JSON API). The states come from traffic shaping."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

import attrs
from twisted.logger import Logger

from mailengine.config.kinds import normalise_domain
from mailengine.delivery.status import DomainStatus
from mailengine.queue.destination_states import state_words
from mailengine.queue.shape import format_age as age
from mailengine.web.admin import Routes, WebAdmin
from mailengine.web.auth import identity_of
from mailengine.web.login import arg
from mailengine.web.render import NONE, count, el, grid, local_time, num, post_button, tr, url

log = Logger(namespace="mailengine.web")

SUSPEND_MINUTES = 30.0  # the page's suspend button
ACTIONS = ("suspend", "resume", "retry")


class DestinationActions(Protocol):
    """What the delivery engine offers the operator (``DeliveryEngine``)."""

    def suspend_destination(self, domain: str, minutes: float) -> Awaitable[object] | None:
        """Applied on return, or once the awaitable fires (a supervisor: every worker)."""

    def resume_destination(self, domain: str) -> Awaitable[object] | None: ...

    def retry_destination_now(self, domain: str) -> int | Awaitable[int]:
        """How many messages are due now (a supervisor of workers asks them: awaitable)."""


def state_text(d: DomainStatus) -> str:
    return state_words(d.state, d.state_text, d.until, local_time)


def destination_json(d: DomainStatus) -> dict[str, Any]:
    data = attrs.asdict(d)
    data["state_text"] = state_text(d)
    return data


def destination_cells(d: DomainStatus) -> list[Any]:
    """Domain (a link to its queue), queued, oldest, state (the reason on hover), error."""
    return [
        el("a", d.domain, href=url("/gui/admin/queue", dir="retry", domain=d.domain)),
        num(count(d.queued_recipients), big=True),
        num(age(d.oldest_seconds)),
        el("td", state_text(d), title=d.reason or None, class_=f"state-{d.state}"),
        el("td", d.last_error or NONE, class_="error-text" if d.last_error else "muted"),
    ]


def destination_rows(destinations: tuple[DomainStatus, ...], csrf: str) -> list[Any]:
    rows = []
    for d in destinations:
        buttons = [
            post_button(f"/gui/admin/destinations/{action}", label, csrf, domain=d.domain)
            for action, label in (
                ("suspend", "Suspend"),
                ("resume", "Resume"),
                ("retry", "Retry now"),
            )
        ]
        rows.append(tr(*destination_cells(d), el("td", buttons)))
    return rows


def audit(request: Any, action: str, domain: str) -> None:
    log.info(
        "web admin {user}: destination {domain}: {action}",
        user=identity_of(request).user,
        domain=domain,
        action=action,
    )


def add_routes(app: Routes, admin: WebAdmin) -> None:
    def actions() -> DestinationActions | None:
        delivery = admin.running.delivery
        return delivery if hasattr(delivery, "suspend_destination") else None

    async def act(action: str, domain: str) -> str:
        """Run ``action`` on ``domain``; the words for the operator (or why not)."""
        delivery = actions()
        domain = normalise_domain(domain)
        if delivery is None:
            return "The delivery engine is not running."
        if not domain:
            return "No destination given."
        if action == "suspend":
            applied = delivery.suspend_destination(domain, SUSPEND_MINUTES)
            if applied is not None:
                await applied  # every worker has it before the operator is told
            return f"{domain}: suspended for {SUSPEND_MINUTES:g} minutes."
        if action == "resume":
            applied = delivery.resume_destination(domain)
            if applied is not None:
                await applied
            return f"{domain}: resumed."
        n = delivery.retry_destination_now(domain)
        if not isinstance(n, int):
            n = await n
        return f"{domain}: {n} waiting messages are due now."

    @app.route("/gui/admin/destinations", methods=["GET"])
    async def page(request: Any) -> bytes:
        destinations = await admin.destinations()
        csrf = identity_of(request).csrf
        table = grid(
            ["Destination", "#queued recipients", "#oldest", "State", "Last error", "Actions"],
            destination_rows(destinations, csrf),
            "Nothing queued and no destination suspended, throttled or failing.",
        )
        body = el(
            "div",
            el("h1", "Destinations"),
            el(
                "p",
                "Each recipient domain waits in its own line: a suspended, throttled or "
                "slow one holds only its own mail. Suspend stops new connections for "
                f"{SUSPEND_MINUTES:g} minutes; resume lifts a suspension or throttle; retry "
                "now makes its waiting mail due at once.",
                class_="muted",
            ),
            el("section", table, class_="card", id="destinations"),
        )
        return admin.page(request, "Destinations", body, active="destinations")

    @app.route("/gui/admin/destinations/<action>", methods=["POST"])
    async def form_action(request: Any, action: str) -> bytes:
        if action not in ACTIONS:
            request.setResponseCode(404)
            return b"no such action\n"
        message = await act(action, arg(request, "domain"))
        audit(request, action, arg(request, "domain"))
        admin.flash(request, message)
        return admin.back(request, "/gui/admin/destinations")

    @app.route("/api/destinations", methods=["GET"])
    async def api_list(request: Any) -> bytes:
        destinations = await admin.destinations()
        return admin.json(request, {"destinations": [destination_json(d) for d in destinations]})

    @app.route("/api/destinations/<domain>/<action>", methods=["POST"])
    async def api_action(request: Any, domain: str, action: str) -> bytes:
        if action not in ACTIONS:
            return admin.json(request, {"error": f"actions: {', '.join(ACTIONS)}"}, 404)
        if actions() is None:
            return admin.json(request, {"error": "the delivery engine is not running"}, 409)
        message = await act(action, domain)
        audit(request, action, domain)
        return admin.json(request, {"ok": True, "message": message})
