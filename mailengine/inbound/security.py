"""STARTTLS and SMTP AUTH for the inbound session (RFC 3207, RFC 4954).

A mixin of ``InboundESMTP``: twisted.mail runs the exchanges; this adds the
engine's rules (no plaintext pipelined past STARTTLS, PLAIN/LOGIN only inside
TLS unless allowed, malformed blobs answered, repeated failures closed).
"""

from __future__ import annotations

from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.mail._except import IllegalClientResponse
from twisted.python.failure import Failure

from mailengine.inbound.auth import PLAIN_TEXT_MECHANISMS

log = Logger(namespace="mailengine.inbound")
MAX_AUTH_FAILURES = 5  # smtplib alone tries three mechanisms per login


class StartTLSAndAuth(smtp.ESMTP):
    """Overrides of ESMTP's STARTTLS and AUTH; the session supplies the attributes below."""

    transport: Any
    server: Any
    peer_ip: str
    auth_user: str
    _input: bytes
    _txn: Any
    _esmtp: bool
    _auth_failures: int
    _settings: Any
    engine: Any
    _auth_mechanism = ""
    _replies: Any  # sending.ReplyWriter, made at connectionMade

    def ext_STARTTLS(self, rest: bytes) -> None:
        if self.startedTLS:
            self.sendCode(503, b"5.5.1 TLS already active")
            return
        if not (self.ctx and self.canStartTLS):
            self.sendCode(454, b"4.7.0 TLS not available")
            return
        # RFC 3207 §4.2 (CVE-2011-0411): plaintext sent behind STARTTLS is dropped,
        # and nothing learnt before TLS is kept.
        self._input = b""
        self.sendCode(220, b"2.0.0 Ready to start TLS")
        self._replies.before_tls()
        self.transport.startTLS(self.ctx)
        self.startedTLS = True
        self._helo = (None, self.peer_ip)
        self._from = None
        self._to = []
        self._txn = None
        self._esmtp = False
        self.authenticated = False
        self.auth_user = ""

    def _offered_mechanisms(self) -> list[bytes]:
        mechanisms = list(self.challengers)
        if not mechanisms or not self.server.has_auth_users():
            return []
        if self.startedTLS or self._settings.allow_plain_auth_without_tls:
            return mechanisms
        return [m for m in mechanisms if m not in PLAIN_TEXT_MECHANISMS]

    def ext_AUTH(self, rest: bytes) -> None:
        if self.authenticated:
            self.sendCode(503, b"5.5.1 Error: already authenticated")
            return
        if self._txn is not None:
            self.sendCode(503, b"5.5.1 Error: MAIL transaction in progress")
            return
        mechanism = rest.split(None, 1)[0].upper() if rest.strip() else b""
        locked = self.server.auth_guard.locked_for(self.peer_ip, self.engine.reactor.seconds())
        if locked:
            # No password is checked while the address is locked out (issue 9: guessing).
            self.sendCode(
                454,
                b"4.7.0 Too many failed authentications from your address, try again in %d s"
                % max(1, int(locked)),
            )
            return
        if mechanism not in self._offered_mechanisms():
            if mechanism in PLAIN_TEXT_MECHANISMS and mechanism in self.challengers:
                self.sendCode(
                    538, b"5.7.11 Encryption required for requested authentication mechanism"
                )
            else:
                self.sendCode(504, b"5.5.4 Unrecognized authentication type")
            return
        self._auth_mechanism = mechanism.decode("ascii", "replace")
        super().ext_AUTH(rest)

    def state_AUTH(self, response: bytes | None) -> None:
        try:
            super().state_AUTH(response)
        except (IllegalClientResponse, ValueError, TypeError):
            # A malformed blob is the peer's mistake: a reply, not a dropped session.
            self.mode = smtp.COMMAND
            self.challenger = None
            self.sendCode(501, b"5.5.2 Malformed authentication response")

    def _cbAuthenticated(self, login: Any) -> None:
        _, avatar, logout = login
        self.authenticated = True
        self.auth_user = str(avatar)
        self._onLogout = logout
        self.challenger = None

    def _ebAuthenticated(self, reason: Failure) -> None:
        user = getattr(self.challenger, "username", None) or b""
        if isinstance(user, str):
            user = user.encode("utf-8", "backslashreplace")
        self.challenger = None
        self._auth_failures += 1
        if not reason.check(UnauthorizedLogin):
            log.failure("smtp in {peer}: authentication error", reason, peer=self.peer_ip)
            self.sendCode(454, b"4.7.0 Temporary authentication failure")
            return
        self._count_auth_failure(user)
        self.sendCode(535, b"5.7.8 Authentication credentials invalid")
        if self._auth_failures >= MAX_AUTH_FAILURES:
            self._input = b""
            self.sendCode(421, b"4.7.0 " + self.host + b" Too many authentication failures")
            self.transport.loseConnection()

    def _count_auth_failure(self, user: bytes) -> None:
        """Per client address, not per connection: log it, and lock the address out
        once it failed ``auth_max_failures`` times within ``auth_lockout_seconds``."""
        settings = self._settings
        window = settings.auth_lockout_seconds
        verdict = self.server.auth_guard.failed(
            self.peer_ip,
            self.engine.reactor.seconds(),
            max_failures=settings.auth_max_failures,
            window_seconds=window,
        )
        log.warn(
            "smtp in {peer}: AUTH {mechanism} failed for user {user!r} "
            "({n} failures from this address in {window} s)",
            peer=self.peer_ip,
            mechanism=self._auth_mechanism,
            user=user.decode("utf-8", "backslashreplace")[:100],
            n=verdict.failures,
            window=window,
        )
        if verdict.locked_for_seconds:
            log.warn(
                "smtp in {peer}: locked out of AUTH for {s} s after {n} failures",
                peer=self.peer_ip,
                s=int(verdict.locked_for_seconds),
                n=verdict.failures,
            )
