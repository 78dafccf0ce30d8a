"""The Klein application (the web admin issue fills in the pages)."""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.resource import IResource

from mailengine.engine import Engine


def make_resource(engine: Engine) -> IResource:
    app = Klein()

    @app.route("/")
    def root(request: Any) -> Any:
        request.redirect(b"/gui/admin")
        return b""

    @app.route("/gui/admin")
    def admin(request: Any) -> str:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return "<!doctype html><title>MailEngine</title><h1>MailEngine</h1>"

    return app.resource()
