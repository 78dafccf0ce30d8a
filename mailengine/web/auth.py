"""Who may use the web admin: client addresses, users and passwords, sessions, CSRF, API token.

The decisions (sessions, the failed-login delay) are plain objects with ``now``
passed in; the ``Gate`` resource applies them to every request before any page
or API route runs.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Callable
from typing import Any

import attrs
from twisted.logger import Logger
from twisted.web.resource import Resource

from mailengine.config.model import Config
from mailengine.config.passwords import PasswordFile, load_password_file

log = Logger(namespace="mailengine.web")

SESSION_COOKIE = b"mailengine_session"
LOGIN_COOKIE = b"mailengine_login"  # double-submit token of the login form
SESSION_IDLE_SECONDS = 3600.0
SESSION_MAX_SECONDS = 12 * 3600.0
SAFE_METHODS = (b"GET", b"HEAD")
# Reachable without logging in (still only from allowed_ips).
PUBLIC_EXACT = (b"/metrics", b"/gui/admin/login", b"/favicon.ico")
PUBLIC_PREFIX = (b"/static/",)


# -- sessions --------------------------------------------------------------------


@attrs.define
class WebSession:
    token: str
    user: str
    csrf: str
    created: float
    last_seen: float
    flash: str = ""  # one message shown on the next page (e.g. "saved")

    def take_flash(self) -> str:
        message, self.flash = self.flash, ""
        return message


class Sessions:
    """Logged-in sessions by cookie token; idle ones expire."""

    def __init__(
        self, idle_seconds: float = SESSION_IDLE_SECONDS, max_seconds: float = SESSION_MAX_SECONDS
    ) -> None:
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self._by_token: dict[str, WebSession] = {}

    def __len__(self) -> int:
        return len(self._by_token)

    def start(self, user: str, now: float) -> WebSession:
        self._expire(now)
        session = WebSession(
            token=secrets.token_urlsafe(32),
            user=user,
            csrf=secrets.token_urlsafe(32),
            created=now,
            last_seen=now,
        )
        self._by_token[session.token] = session
        return session

    def get(self, token: str, now: float) -> WebSession | None:
        session = self._by_token.get(token)
        if session is None:
            return None
        if self._expired(session, now):
            del self._by_token[token]
            return None
        session.last_seen = now
        return session

    def end(self, token: str) -> None:
        self._by_token.pop(token, None)

    def _expired(self, session: WebSession, now: float) -> bool:
        return (
            now - session.last_seen > self.idle_seconds or now - session.created > self.max_seconds
        )

    def _expire(self, now: float) -> None:
        for token in [t for t, s in self._by_token.items() if self._expired(s, now)]:
            del self._by_token[token]


# -- failed logins -----------------------------------------------------------------


@attrs.define
class _Failures:
    count: int
    last: float


class LoginThrottle:
    """A growing delay after failed logins, per client address: 1 s, 2 s, 4 s ... 60 s.

    The failed answer itself waits that long (without blocking anything), and
    an attempt from the same address before the delay is over is refused
    unchecked. An address is forgiven after ``forget_seconds`` without failures.
    """

    def __init__(self, max_delay: float = 60.0, forget_seconds: float = 900.0) -> None:
        self.max_delay = max_delay
        self.forget_seconds = forget_seconds
        self._by_address: dict[str, _Failures] = {}

    def delay_after(self, failures: int) -> float:
        return 0.0 if failures <= 0 else min(2.0 ** (failures - 1), self.max_delay)

    def _current(self, address: str, now: float) -> _Failures | None:
        f = self._by_address.get(address)
        if f is not None and now - f.last > self.forget_seconds:
            del self._by_address[address]
            return None
        return f

    def wait_seconds(self, address: str, now: float) -> float:
        """Seconds before ``address`` may try again (0: now)."""
        f = self._current(address, now)
        if f is None:
            return 0.0
        return max(0.0, f.last + self.delay_after(f.count) - now)

    def failed(self, address: str, now: float) -> float:
        """Record a failure; returns the delay to apply before answering."""
        f = self._current(address, now)
        if f is None:
            f = self._by_address[address] = _Failures(0, now)
        f.count += 1
        f.last = now
        if len(self._by_address) > 10000:  # many addresses: drop the forgiven ones
            for a in [a for a, v in self._by_address.items() if now - v.last > self.forget_seconds]:
                del self._by_address[a]
        return self.delay_after(f.count)

    def succeeded(self, address: str) -> None:
        self._by_address.pop(address, None)


# -- users -----------------------------------------------------------------------


class PasswordSource:
    """config/password.txt, re-read when it changes (``mailengine passwd`` needs no restart)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._file = PasswordFile(path)

    def current(self) -> PasswordFile:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            self._stamp, self._file = None, PasswordFile(self.path)
            return self._file
        if stamp != self._stamp:
            self._file = load_password_file(self.path)
            for warning in self._file.warnings:  # e.g. a plain password just hashed
                log.warn("{warning}", warning=warning)
            self._stamp = stamp
        return self._file

    def has_users(self) -> bool:
        return bool(self.current().users)


def same_secret(expected: str, given: str) -> bool:
    return bool(expected) and hmac.compare_digest(expected.encode(), given.encode())


# -- the gate ----------------------------------------------------------------------


@attrs.frozen
class Identity:
    """Who made a request: a session user, or the API token."""

    user: str
    session: WebSession | None = None

    @property
    def csrf(self) -> str:
        return self.session.csrf if self.session is not None else ""


def client_address(request: Any) -> str:
    peer = request.getClientAddress()
    return str(getattr(peer, "host", ""))


def is_allowed(config: Config, address: str) -> bool:
    """``[web] allowed_ips``: empty = everyone; ``0`` in the list = the web admin is off."""
    allowed = config.web.allowed_ips
    if allowed.has_zero:
        return False
    return not allowed.entries or address in allowed


def is_public(path: bytes) -> bool:
    return path in PUBLIC_EXACT or path.startswith(PUBLIC_PREFIX)


def is_api(path: bytes) -> bool:
    return path == b"/api" or path.startswith(b"/api/")


def bearer_token(request: Any) -> str:
    header = request.getHeader(b"authorization") or b""
    scheme, _, value = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return ""
    return value.strip().decode("latin-1")


def request_csrf(request: Any) -> str:
    header = request.getHeader(b"x-csrf-token")
    if header:
        return str(header.decode("latin-1"))
    values = request.args.get(b"csrf") or [b""]
    return str(values[0].decode("latin-1"))


def set_cookie(request: Any, name: bytes, value: str, *, max_age: int | None = None) -> None:
    request.addCookie(
        name,
        value.encode(),
        path=b"/",
        httpOnly=True,
        sameSite="strict",
        secure=request.isSecure(),
        max_age=str(max_age) if max_age is not None else None,
    )


class Access:
    """The checks every request passes: address, password set, login or token, CSRF."""

    def __init__(self, config: Config, passwords: PasswordSource, now: Callable[[], float]) -> None:
        self.config = config
        self.passwords = passwords
        self.sessions = Sessions()
        self.throttle = LoginThrottle()
        self.now = now

    def identify(self, request: Any) -> Identity | None:
        token = bearer_token(request)
        if token and is_api(request.path):
            if same_secret(self.config.web.api_token, token):
                return Identity("api-token")
            return None
        cookie = request.getCookie(SESSION_COOKIE)
        if not cookie:
            return None
        session = self.sessions.get(cookie.decode("latin-1"), self.now())
        return Identity(session.user, session) if session is not None else None


def identity_of(request: Any) -> Identity:
    """The identity the gate attached to an authenticated request."""
    identity = getattr(request, "mailengine_identity", None)
    if not isinstance(identity, Identity):
        raise RuntimeError("route reached without passing the gate")
    return identity


Refusal = Callable[[Any, int, str], bytes]


class Gate(Resource):
    """Wraps the Klein resource: refuses before any route runs.

    403 for addresses outside ``allowed_ips``; with no password set only the
    "set a password" page and the API for ``[web] api_token`` (a credential the
    operator configured: automation needs no human password); otherwise a
    login (or the API token) and, for a session's state-changing requests, its
    CSRF token.
    """

    isLeaf = True

    def __init__(self, inner: Any, access: Access, refuse: Refusal) -> None:
        super().__init__()
        self.inner = inner
        self.access = access
        self.refuse = refuse  # (request, code, reason) -> body, page or JSON by path

    def render(self, request: Any) -> Any:
        address = client_address(request)
        if not is_allowed(self.access.config, address):
            return self.refuse(request, 403, f"your address {address} is not in [web] allowed_ips")
        if any(segment in (b".", b"..") for segment in request.postpath):
            return self.refuse(request, 404, "no such page")
        path = request.path
        if is_public(path):
            return self.inner.render(request)
        identity = self.access.identify(request)
        # No password set: only the API token (configured by the operator) gets in.
        if not self.access.passwords.has_users() and (identity is None or identity.session):
            return self.refuse(request, 403, "no password is set")
        if identity is None:
            return self.refuse(request, 401, "log in first")
        session = identity.session
        needs_csrf = session is not None and request.method not in SAFE_METHODS
        if needs_csrf and not same_secret(session.csrf if session else "", request_csrf(request)):
            return self.refuse(request, 403, "missing or wrong CSRF token; reload the page")
        request.mailengine_identity = identity
        return self.inner.render(request)
