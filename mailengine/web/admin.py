"""The web admin's shared state: the engine, the clock, access control, queue control, pages.

Every route module gets one ``WebAdmin``; the reactor (clock) and the way to
run blocking file work are passed in, so route tests run in memory.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.logger import Logger

from mailengine.config.persist import change_setting
from mailengine.delivery.status import DomainStatus
from mailengine.web.auth import Access, Identity, identity_of, is_api
from mailengine.web.queuecontrol import QueueControl, RunBlocking
from mailengine.web.render import Html, el, flash_box, layout, url
from mailengine.web.running import Running, WebParts
from mailengine.web.snapshot import (
    TOP_DESTINATIONS,
    DeliveryView,
    LiveShape,
    Snapshot,
    count_dirs,
    take_snapshot,
    to_domain_status,
)

log = Logger(namespace="mailengine.web")
# Only our own script and stylesheet; no frames (defence in depth behind the escaping).
CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"
)
PASSWD_ARGS = "passwd admin"  # noqa: S105 - a command, not a password


def mailengine_command(executable: str = sys.executable) -> str:
    """How to run ``mailengine`` on this machine, as an operator can paste it.

    pip puts the script beside the engine's Python (``.venv/bin/mailengine``), which
    is often not on PATH: the bare name only when PATH finds that very script.
    """
    script = os.path.join(os.path.dirname(executable), "mailengine")
    if not os.access(script, os.X_OK):
        return f"{executable} -m mailengine.cli"
    found = shutil.which("mailengine")
    if found and os.path.realpath(found) == os.path.realpath(script):
        return "mailengine"
    return script


# Settings whose value is a secret: never shown, returned by the API or logged.
SECRET_SETTINGS = frozenset({("web", "api_token")})
MASK = "********"


def is_secret(section: str, key: str) -> bool:
    return (section, key) in SECRET_SETTINGS


def shown_value(section: str, key: str, raw: Any) -> Any:
    """A setting's value as pages, the API and the log may show it (secrets masked)."""
    if is_secret(section, key):
        return MASK if raw else ""
    return raw


class Routes:
    """Klein's ``route`` with endpoints named ``module.function``.

    Klein names an endpoint after its function, and a second ``summary`` in
    another module would silently replace the first route.
    """

    def __init__(self, app: Klein, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    def route(self, url: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
        def register(fn: Callable[..., Any]) -> Any:
            kwargs.setdefault("endpoint", f"{self.prefix}.{fn.__name__}")
            return self.app.route(url, **kwargs)(fn)

        return register

    def handle_errors(self, *errors: type[Exception]) -> Callable[[Callable[..., Any]], Any]:
        return self.app.handle_errors(*errors)


class WebAdmin:
    def __init__(
        self,
        engine: WebParts,
        clock: Any,
        run_blocking: RunBlocking,
        access: Access,
        running: Running,
    ) -> None:
        self.engine = engine
        self.running = running
        self.clock = clock
        self.run_blocking = run_blocking
        self.access = access
        self.queue = QueueControl(engine, run_blocking, self.now, running)
        self.shape = LiveShape(engine.queue, run_blocking)
        self.delivery = DeliveryView(engine, running)

    def now(self) -> float:
        return float(self.clock.seconds())

    async def snapshot(self) -> Snapshot:
        store = self.engine.store
        counts: dict[str, int] = await self.run_blocking(lambda: count_dirs(store))
        now = self.now()
        # The delivery engine keeps its destinations as messages come and go; the
        # queue's shape (a walk, in a worker thread) is worked out only without it.
        shape = await self.shape.get(now) if self.running.delivery is None else None
        snapshot = take_snapshot(self.engine, now, counts, shape, delivery=self.delivery)
        if self.running.box is not None:  # a supervisor: its workers' counters and queues
            snapshot = await self.running.box.combine(snapshot)
        return snapshot

    async def destinations(self) -> tuple[DomainStatus, ...]:
        """The busiest and the unusual destinations: the delivery engine's status, kept
        as messages come and go (no walk of the queue, no directory count); when it
        does not run, the queue's shape; a supervisor asks its workers (the box's)."""
        if self.running.box is not None:
            return (await self.snapshot()).destinations
        now = self.now()
        status = self.delivery.get(now, TOP_DESTINATIONS)
        if status is not None:
            return status.domains
        shape = await self.shape.get(now)
        return tuple(to_domain_status(s) for s in shape.domains_at(now)[:TOP_DESTINATIONS])

    # -- answers ---------------------------------------------------------------------

    def page(
        self, request: Any, title: str, body: Any, *, active: str = "", code: int = 200
    ) -> bytes:
        identity = getattr(request, "mailengine_identity", None)
        if isinstance(identity, Identity) and identity.session is not None:
            body = [flash_box(identity.session.take_flash()), body]
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"content-security-policy", CSP)
        request.setHeader(b"x-content-type-options", b"nosniff")
        return layout(
            title,
            body,
            active=active,
            hostname=self.engine.name,
            user=identity.user if isinstance(identity, Identity) else "",
            csrf=identity.csrf if isinstance(identity, Identity) else "",
        )

    def fragment(self, request: Any, body: Html) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return body.encode("utf-8")

    def json(self, request: Any, data: Any, code: int = 200) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return (json.dumps(data, indent=1, default=str) + "\n").encode()

    def redirect(self, request: Any, location: str, code: int = 303) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"location", location.encode())
        return b""

    def refuse(self, request: Any, code: int, reason: str) -> bytes:
        """The gate's answer: JSON for /api/, a redirect to the login page, or a short page."""
        path = request.path
        if is_api(path):
            if reason == "no password is set":
                reason = f"no web admin password is set; run: {self.passwd_command()}"
            return self.json(request, {"error": reason}, code)
        if path == b"/metrics":
            request.setResponseCode(code)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return f"{reason}\n".encode()
        if code == 401:
            wanted = path.decode("latin-1")
            return self.redirect(request, url("/gui/admin/login", next=wanted), 302)
        if reason == "no password is set":
            return self.no_password_page(request)
        return self.page(
            request,
            "Refused",
            el(
                "section",
                el("h1", "Refused"),
                el("p", reason[:1].upper() + reason[1:] + "."),
                class_="card narrow",
            ),
            code=code,
        )

    def passwd_command(self) -> str:
        """``mailengine passwd admin`` for this engine's files, wherever they are."""
        engine = self.engine
        if engine.config_dir == os.path.join(engine.root, "config"):
            where = "" if os.getcwd() == engine.root else f" --root {engine.root}"
        else:
            where = f" --config {engine.config.path}"
        return f"{mailengine_command()} {PASSWD_ARGS}{where}"

    def no_password_page(self, request: Any) -> bytes:
        path = self.access.passwords.path
        body = el(
            "section",
            el("h1", "Set a password first"),
            el(
                "p",
                "No web admin password is set, so nothing here can be used yet. "
                "On the MailEngine machine, run:",
            ),
            el("pre", self.passwd_command(), class_="command"),
            el(
                "p",
                "It asks for the password and stores a hash in ",
                el("code", path),
                ". Then reload this page and log in as ",
                el("b", "admin"),
                ".",
            ),
            class_="card narrow",
        )
        return self.page(request, "Set a password", body, code=403)

    def flash(self, request: Any, message: str) -> None:
        """Show ``message`` on the next page this session sees."""
        session = identity_of(request).session
        if session is not None:
            session.flash = message

    def back(self, request: Any, default: str = "/gui/admin") -> bytes:
        """Redirect to the admin page the request came from (its Referer), else ``default``."""
        referer = (request.getHeader(b"referer") or b"").decode("latin-1")
        path = "/" + referer.split("://", 1)[-1].partition("/")[2] if "://" in referer else ""
        target = path if path.startswith("/gui/admin") and "//" not in path else default
        return self.redirect(request, target)

    # -- actions with an audit line -----------------------------------------------------

    def change(self, request: Any, section: str, key: str, raw: Any) -> Any:
        """``change_setting`` (validate, apply now, write the file) with an audit log line."""
        value = change_setting(self.engine.config, section, key, raw)
        log.info(
            "web admin {user}: set [{section}] {key} = {raw!r}",
            user=identity_of(request).user,
            section=section,
            key=key,
            raw=shown_value(section, key, raw),
        )
        return value

    def set_paused(self, request: Any, paused: bool) -> None:
        self.change(request, "smtp_out", "paused", paused)

    def shutdown(self, request: Any) -> bool:
        """Ask the service for a graceful stop; False when it is not reachable."""
        service = self.running.service
        if service is None:
            return False
        stop = service.request_stop
        log.info("web admin {user}: shutdown requested", user=identity_of(request).user)
        self.clock.callLater(0.2, stop)  # let this answer reach the browser first
        return True
