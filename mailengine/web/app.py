"""The web admin's Klein application and its Site, served inside the engine's twistd service.

``make_site`` is what service.py listens with; ``make_resource`` is the same
application for tests (StubTreq), with the clock and the thread runner passed in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet import defer, threads
from twisted.web import server
from twisted.web.resource import IResource

from mailengine.web import (
    api,
    controls,
    dashboard,
    destinations,
    dkimkeys,
    login,
    logs,
    metrics,
    queueforms,
    queuepages,
    settingspage,
    suppressionpages,
)
from mailengine.web.admin import Routes, WebAdmin
from mailengine.web.auth import Access, Gate, PasswordSource
from mailengine.web.running import Running, WebParts

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_TYPES = {"css": b"text/css; charset=utf-8", "js": b"text/javascript; charset=utf-8"}


def load_static() -> dict[str, bytes]:
    """The stylesheet and script shipped in the package, read once (no other file is served)."""
    files = {}
    for name in sorted(os.listdir(STATIC_DIR)):
        if name.rpartition(".")[2] in STATIC_TYPES:
            with open(os.path.join(STATIC_DIR, name), "rb") as fh:
                files[name] = fh.read()
    return files


STATIC = load_static()


def build_admin(
    engine: WebParts,
    *,
    clock: Any = None,
    run_blocking: Callable[[Callable[[], Any]], defer.Deferred] | None = None,
    running: Running | None = None,
) -> WebAdmin:
    clock = clock if clock is not None else engine.reactor
    if run_blocking is None:
        reactor = engine.reactor

        def run_blocking(fn: Callable[[], Any]) -> defer.Deferred:
            return threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn)

    passwords = PasswordSource(os.path.join(engine.config_dir, "password.txt"))
    access = Access(engine.config, passwords, lambda: float(clock.seconds()))
    return WebAdmin(engine, clock, run_blocking, access, running or Running())


def make_app(admin: WebAdmin) -> Klein:
    app = Klein()

    @app.route("/static/<name>", endpoint="static")
    def static(request: Any, name: str) -> bytes:
        body = STATIC.get(name)
        if body is None:
            request.setResponseCode(404)
            return b"no such file\n"
        request.setHeader(b"content-type", STATIC_TYPES[name.rpartition(".")[2]])
        request.setHeader(b"cache-control", b"max-age=300")
        return body

    @app.route("/favicon.ico", endpoint="favicon")
    def favicon(request: Any) -> bytes:
        request.setResponseCode(204)  # none: browsers stop asking, no login redirect
        return b""

    for module in (
        login,
        dashboard,
        settingspage,
        queuepages,
        queueforms,
        suppressionpages,
        controls,
        destinations,
        logs,
        api,
        dkimkeys,
        metrics,
    ):
        module.add_routes(Routes(app, module.__name__.rpartition(".")[2]), admin)
    return app


def make_resource(engine: WebParts, **kwargs: Any) -> IResource:
    """The whole web admin behind its gate (address, password, login, CSRF)."""
    admin = build_admin(engine, **kwargs)
    return Gate(make_app(admin).resource(), admin.access, admin.refuse)


class QuietSite(server.Site):
    """A Site without twisted.web's access log line per request.

    A dashboard refreshing every few seconds would fill the console and the
    daily log; what operators need (logins, changes, queue actions) is logged
    by the web admin itself.
    """

    def log(self, request: Any) -> None:
        pass


def make_site(engine: WebParts, running: Running) -> server.Site:
    site = QuietSite(make_resource(engine, running=running))
    site.noisy = False
    site.displayTracebacks = False
    return site
