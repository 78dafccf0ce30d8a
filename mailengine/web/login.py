"""Logging in and out: the form, the password check in a worker thread, the failed-login delay."""

from __future__ import annotations

import secrets
from typing import Any

from twisted.internet import task
from twisted.logger import Logger

from mailengine.web.admin import Routes, WebAdmin
from mailengine.web.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    client_address,
    identity_of,
    same_secret,
    set_cookie,
)
from mailengine.web.render import el

log = Logger(namespace="mailengine.web")


def arg(request: Any, name: str, default: str = "") -> str:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else default


def safe_next(target: str) -> str:
    """Only our own pages: never a redirect to another site."""
    if target.startswith("/gui/admin") and "//" not in target and "\\" not in target:
        return target
    return "/gui/admin"


def login_form(
    admin: WebAdmin, request: Any, *, error: str = "", user: str = "", code: int = 200
) -> bytes:
    # One token per browser: a second page load (another tab, a favicon redirect)
    # must not invalidate the form already shown.
    token = (request.getCookie(LOGIN_COOKIE) or b"").decode("latin-1")
    if len(token) < 24:
        token = secrets.token_urlsafe(24)
        set_cookie(request, LOGIN_COOKIE, token)
    form = el(
        "form",
        el("input", type="hidden", name="login_token", value=token),
        el("input", type="hidden", name="next", value=safe_next(arg(request, "next"))),
        el(
            "label",
            "User",
            el("input", name="user", value=user or "admin", autocomplete="username", required=True),
        ),
        el(
            "label",
            "Password",
            el(
                "input",
                name="password",
                type="password",
                autocomplete="current-password",
                autofocus=True,
                required=True,
            ),
        ),
        el("p", error, class_="error") if error else None,
        el("button", "Log in", type="submit", class_="primary"),
        method="post",
        action="/gui/admin/login",
        class_="login",
    )
    body = el(
        "section",
        el("h1", "MailEngine"),
        el("p", admin.engine.name, class_="muted"),
        form,
        class_="card narrow",
    )
    return admin.page(request, "Log in", body, code=code)


def add_routes(app: Routes, admin: WebAdmin) -> None:
    access = admin.access

    @app.route("/gui/admin/login", methods=["GET"])
    def show_login(request: Any) -> bytes:
        if not access.passwords.has_users():
            return admin.no_password_page(request)
        return login_form(admin, request)

    @app.route("/gui/admin/login", methods=["POST"])
    async def do_login(request: Any) -> bytes:
        if not access.passwords.has_users():
            return admin.no_password_page(request)
        address = client_address(request)
        user = arg(request, "user").strip()
        cookie = (request.getCookie(LOGIN_COOKIE) or b"").decode("latin-1")
        if not same_secret(cookie, arg(request, "login_token")):
            return login_form(
                admin,
                request,
                user=user,
                code=403,
                error="The login form expired; please try again.",
            )
        wait = access.throttle.wait_seconds(address, admin.now())
        if wait > 0:
            return login_form(
                admin,
                request,
                user=user,
                code=429,
                error=f"Too many failed logins from {address}: "
                f"wait {int(wait) + 1} s and try again.",
            )
        passwords = access.passwords.current()
        secret = arg(request, "password")
        ok = await admin.run_blocking(lambda: passwords.verify(user, secret))
        if not ok:
            delay = access.throttle.failed(address, admin.now())
            log.warn(
                "web admin: failed login for {user!r} from {address}", user=user, address=address
            )
            await task.deferLater(admin.clock, delay, lambda: None)
            return login_form(
                admin, request, user=user, code=401, error="Wrong user name or password."
            )
        access.throttle.succeeded(address)
        session = access.sessions.start(user, admin.now())
        set_cookie(request, SESSION_COOKIE, session.token)
        set_cookie(request, LOGIN_COOKIE, "", max_age=0)
        log.info("web admin: {user} logged in from {address}", user=user, address=address)
        return admin.redirect(request, safe_next(arg(request, "next")))

    @app.route("/gui/admin/logout", methods=["POST"])
    def logout(request: Any) -> bytes:
        identity = identity_of(request)
        if identity.session is not None:
            access.sessions.end(identity.session.token)
        set_cookie(request, SESSION_COOKIE, "", max_age=0)
        return admin.redirect(request, "/gui/admin/login")
