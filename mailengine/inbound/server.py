"""The inbound SMTP factory: admission, TLS and AUTH set-up, sessions, graceful drain.

service.py makes this factory (``EngineService.inbound``), listens with it on
each of ``[smtp_in] listen_ips`` and calls ``drain()`` on a graceful stop.
"""

from __future__ import annotations

import os
import re
from typing import Any

from OpenSSL import SSL
from twisted.internet import defer, protocol, ssl, threads
from twisted.logger import Logger

from mailengine.inbound.auth import USERS_FILE, RunInThread, SmtpUsers, challengers, make_portal
from mailengine.inbound.intake import Intake
from mailengine.inbound.protocol import InboundESMTP, InboundParts
from mailengine.policy.admission import Admission, Limits
from mailengine.policy.authguard import AuthGuard

log = Logger(namespace="mailengine.inbound")

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


class TLSSetupError(ValueError):
    """The configured certificate or key cannot be used (a one-line reason)."""


def load_tls(certificate: str, private_key: str, base_dir: str) -> ssl.CertificateOptions | None:
    """Server TLS options from PEM files (paths relative to the config directory); None if unset.

    The certificate file may hold the chain after the server's certificate; the
    key may sit in the same file.
    """
    if not certificate:
        return None
    cert_path = os.path.join(base_dir, certificate)
    key_path = os.path.join(base_dir, private_key or certificate)
    try:
        with open(cert_path, "rb") as fh:
            cert_pem = fh.read()
        with open(key_path, "rb") as fh:
            key_pem = fh.read()
    except OSError as exc:
        raise TLSSetupError(f"cannot read {exc.filename}: {exc.strerror}") from None
    blocks = _PEM_CERT.findall(cert_pem)
    if not blocks:
        raise TLSSetupError(f"{cert_path} holds no PEM certificate")
    try:
        leaf = ssl.PrivateCertificate.loadPEM(blocks[0] + b"\n" + key_pem)
        chain = [ssl.Certificate.loadPEM(block).original for block in blocks[1:]]
        options = ssl.CertificateOptions(
            privateKey=leaf.privateKey.original,
            certificate=leaf.original,
            extraCertChain=chain,
        )
        options.getContext()  # checks that the key belongs to the certificate
    except (SSL.Error, ValueError, TypeError) as exc:
        raise TLSSetupError(
            f"{cert_path} / {key_path}: not a usable certificate and private key ({exc})"
        ) from None
    return options


class RefusedSession(protocol.Protocol):
    """A peer beyond the connection caps: 421 and close (manual §6)."""

    transport: Any

    def __init__(self, host: bytes, reason: str) -> None:
        self.text = b"421 4.7.0 " + host + b" Error: " + reason.encode() + b", try again later"

    def connectionMade(self) -> None:
        self.transport.write(self.text + b"\r\n")
        self.transport.loseConnection()


class InboundFactory(protocol.ServerFactory):
    """Builds one ``InboundESMTP`` per admitted connection; ``drain()`` for a graceful stop."""

    noisy = False

    def __init__(self, engine: InboundParts, run_in_thread: RunInThread | None = None) -> None:
        self.engine = engine
        self.admission = Admission()
        self.auth_guard = AuthGuard()  # AUTH failures per client address
        self.sessions: set[InboundESMTP] = set()
        self.draining = False
        self._drained: list[defer.Deferred] = []
        self.intake = Intake(engine)
        smtp_in = engine.config.smtp_in
        self.tls = load_tls(smtp_in.tls_certificate, smtp_in.tls_private_key, engine.config_dir)
        self.host = engine.hostname.encode("ascii", "replace")
        reactor = engine.reactor

        def in_reactor_pool(fn: Any) -> defer.Deferred:
            return threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn)

        self.users = SmtpUsers(
            os.path.join(engine.config_dir, USERS_FILE),
            run_in_thread or in_reactor_pool,
            reactor.seconds,
        )
        self.portal = make_portal(self.users)
        self.challengers = challengers(smtp_in.auth_mechanisms, self.host)
        self.users.users()
        for warning in self.users.warnings:
            log.warn("{warning}", warning=warning)

    def has_auth_users(self) -> bool:
        return bool(self.challengers) and self.users.has_users

    def _limits(self) -> Limits:
        smtp_in = self.engine.config.smtp_in
        return Limits(
            max_connections=smtp_in.max_connections,
            max_connections_per_ip=smtp_in.max_connections_per_ip,
            priority_ips=smtp_in.priority_ips,
        )

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        peer_ip = str(getattr(addr, "host", addr))
        if self.draining:
            return RefusedSession(self.host, "shutting down")
        refusal = self.admission.admit(peer_ip, self._limits())
        if refusal is not None:
            if self.engine.config.logs.debug_smtp_in:
                log.info("smtp in {peer} refused: {why}", peer=peer_ip, why=refusal.value)
            return RefusedSession(self.host, refusal.value)
        session = InboundESMTP(self, peer_ip, dict(self.challengers), self.tls)
        session.factory = self
        session.host = self.engine.name.encode("ascii", "replace")  # helo_text is live
        session.portal = self.portal
        session.timeout = self.engine.config.smtp_in.timeout_seconds
        self.sessions.add(session)
        return session

    def session_ended(self, session: InboundESMTP) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        self.admission.release(session.peer_ip)
        if self.draining and not self.sessions:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def drain(self) -> defer.Deferred:
        """Stop taking mail: idle sessions and new MAIL get 421; fires when all sessions ended.

        Call after the listeners closed. A session in the middle of a
        transaction may finish it first (service.py bounds the wait).
        """
        self.draining = True
        for session in list(self.sessions):
            session.stop_when_idle()
        if not self.sessions:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._drained.append(d)
        return d
