"""The outbound SMTP connection: twisted.mail's ESMTPClient for the greeting, EHLO/HELO
and STARTTLS, then one transaction after another for its pool (TWISTED.md §2.6).

Replaced from the stock client (TWISTED.md §0.6-0.9, §2): the transaction
states (no RSET after a completed transaction, PIPELINING, MAIL parameters,
test mode), the body encoding (sent as stored, dot-stuffed once), timeouts
(read, write, end-of-data) and failure reporting (every way a session ends
reaches the pool exactly once; TLS failures surface only in connectionLost).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import attrs
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.mail.smtp import ESMTPClient, SMTPClientError, TLSError, TLSRequiredError
from twisted.python.failure import Failure

from mailengine.delivery.transaction import BODY, DONE, END_EMPTY, WAIT, WRITE, Transaction

if TYPE_CHECKING:
    from mailengine.delivery.job import Job

log = Logger(namespace="mailengine.smtp_out")

ANY_CODE = range(0, 1000)


@attrs.define
class ClientSettings:
    """Live values connections read on every transaction (refreshed by the engine)."""

    identity: bytes = b"localhost"
    read_timeout: float = 240.0
    write_timeout: float = 240.0
    body_timeout: float = 600.0
    connect_timeout: float = 240.0
    test_mode: bool = False
    debug: bool = False


class SessionOwner(Protocol):
    """The pool a connection reports to (``pool.HostPool``)."""

    settings: ClientSettings

    def session_ready(self, client: OutboundClient) -> None: ...
    def session_failed(self, client: OutboundClient, reason: str, *, tls: bool) -> None: ...
    def transaction_done(self, client: OutboundClient) -> None: ...
    def idle_expired(self, client: OutboundClient) -> None: ...
    def resend(self, job: Job) -> None: ...
    def lost(self, client: OutboundClient) -> None: ...


def describe_failure(reason: Failure) -> str:
    """A short human reason for a lost or refused connection."""
    value = reason.value
    text = str(value).strip() or type(value).__name__
    return text.split("\n")[0][:200]


def _reply_line(code: int, resp: bytes) -> str:
    return f"{code} " + resp.decode("utf-8", "replace").split("\n")[0]


def is_tls_failure(reason: Failure) -> bool:
    name = type(reason.value).__module__ + "." + type(reason.value).__name__
    return "OpenSSL" in name or "service_identity" in name or "VerificationError" in name


class OutboundClient(ESMTPClient):
    """One connection to one MX address; its pool hands it jobs."""

    debug = False  # the stock LineLog costs on every line; we keep our own transcript
    # ESMTPClient.__setattr__ checks every assignment for a deprecated name.
    __setattr__ = object.__setattr__

    def __init__(self, owner: SessionOwner, context: Any, require_tls: bool) -> None:
        settings = owner.settings
        ESMTPClient.__init__(self, None, None, settings.identity)
        self.owner = owner
        self.settings = settings
        self.tls_context = context  # offered to STARTTLS when the server has it
        self.requireTransportSecurity = require_tls
        self.requireAuthentication = False
        self.heloFallback = True
        self.timeout = settings.read_timeout  # type: ignore[assignment]
        self.opening: list[str] | None = []  # greeting/EHLO lines while they happen
        self.opening_lines: tuple[str, ...] = ()  # ...kept for the transcripts of its jobs
        self._size_param = False
        self.is_ready = False
        self.is_finished = False  # the owner has heard how this session ended
        self.is_closed = False  # connectionLost ran (the transport may not say so)
        self.tls_started = False
        self.pipelining = False
        self.size_limit = 0
        self.mail_params = b""
        self.needs_rset = False
        self.job: Job | None = None
        self.txn: Transaction | None = None
        self.body_sent = False
        self.idle_call: IDelayedCall | None = None
        self._write_call: IDelayedCall | None = None
        self.transactions = 0

    # -- connection ----------------------------------------------------------

    def _transport(self) -> Any:
        return self.transport

    def connectionMade(self) -> None:
        transport: Any = self.transport
        if hasattr(transport, "setTcpNoDelay"):
            # Nagle + delayed ACK stall the final "." ~45 ms per message (TWISTED.md §2).
            transport.setTcpNoDelay(True)
        super().connectionMade()

    def sendLine(self, line: bytes) -> None:
        if self.opening is not None:
            self.opening.append("--> " + line.decode("utf-8", "replace"))
        if self.settings.debug:
            self._debug("-->", line)
        self._transport().write(line + b"\r\n")

    def _write(self, data: bytes) -> None:
        if self.settings.debug:
            for line in data.split(b"\r\n")[:-1]:
                self._debug("-->", line)
        self._transport().write(data)

    def _debug(self, arrow: str, line: bytes) -> None:
        peer: Any = self._transport().getPeer() if self.transport else None
        log.info(
            "{peer} {arrow} {line}",
            peer=f"{peer.host}:{peer.port}" if peer else "?",
            arrow=arrow,
            line=line.decode("utf-8", "replace"),
        )

    def lineReceived(self, line: bytes) -> Any:
        if self.opening is not None:
            self.opening.append("<-- " + line.decode("utf-8", "replace"))
        if self.settings.debug:
            self._debug("<--", line)
        return super().lineReceived(line)

    # -- opening: greeting, EHLO/HELO, STARTTLS (stock states) ------------

    def smtpConnectionFailed(self, code: int, resp: bytes) -> None:
        # 421/4xx/5xx greeting: next address or host (RFC 5321 §3.1).
        self._session_failed(f"{code} {resp.decode('utf-8', 'replace')}")
        self._quit()

    def smtpState_helo(self, code: int, resp: bytes) -> None:
        # EHLO refused: HELO; a refused HELO ends the session (the stock state loops).
        super().smtpState_helo(code, resp)
        self._failresponse = self.smtpConnectionFailed

    def esmtpState_serverConfig(self, code: int, resp: bytes) -> None:
        ext: dict[bytes, bytes] = {}
        for line in resp.split(b"\n")[1:]:
            key, _, value = line.strip().partition(b" ")
            ext[key.upper()] = value
        self.pipelining = b"PIPELINING" in ext
        size = ext.get(b"SIZE", b"").strip()
        self.size_limit = int(size) if size.isdigit() else 0
        self.mail_params = b""
        self._size_param = b"SIZE" in ext
        if b"8BITMIME" in ext:
            self.mail_params += b" BODY=8BITMIME"
        self.context = None if self._tlsMode else self.tls_context
        super().esmtpState_serverConfig(code, resp)

    def esmtpState_starttls(self, code: int, resp: bytes) -> None:
        self.tls_started = True
        super().esmtpState_starttls(code, resp)

    def smtpState_from(self, code: int, resp: bytes) -> None:
        # Reached once, when the session is ready for its first transaction.
        self.is_ready = True
        self.opening_lines = tuple(self.opening or ())
        self.opening = None
        transport: Any = self.transport
        transport.registerProducer(self, True)  # pause/resume = write timeout
        self.owner.session_ready(self)

    def sendError(self, exc: Exception) -> None:
        # TLS required but not offered, a malformed reply, STARTTLS refused.
        resp = getattr(exc, "resp", b"") or str(exc).encode()
        text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)
        tls = isinstance(exc, TLSError | TLSRequiredError)
        self._fail(text.split("\n")[0], tls=tls)
        if isinstance(exc, SMTPClientError) and not exc.isFatal:
            self._quit()
        else:
            self._transport().abortConnection()

    # -- transactions --------------------------------------------------------

    def send(self, job: Job) -> None:
        """Start the job's transaction (the pool checked SIZE and the bandwidth)."""
        self._cancel_idle()
        self.job = job
        params = self.mail_params
        if self._size_param:
            params = b" SIZE=%d" % job.size + params
        txn = Transaction(
            job.sender,
            job.recipients,
            pipelining=self.pipelining,
            test_mode=self.settings.test_mode,
            mail_params=params,
            reset_first=self.needs_rset,
        )
        self.txn = txn
        self.body_sent = False
        self._expected = ANY_CODE  # type: ignore[assignment]
        self._okresponse = self._on_reply
        self._failresponse = self._on_reply
        self.setTimeout(self.settings.read_timeout)
        self._write(txn.start())

    def _on_reply(self, code: int, resp: bytes) -> None:
        txn, job = self.txn, self.job
        if txn is None or job is None:
            # A reply while idle: the server is closing (e.g. its own 421 timeout).
            self._transport().loseConnection()
            return
        if code == 421 and self._may_resend(job, txn, tls=False):
            # RFC 5321 §3.8: the server closes this reused connection (idle timeout,
            # messages-per-connection limit) before our transaction began: nothing
            # was accepted, so the job goes to a fresh connection, not to retry/.
            self._resend(job, _reply_line(code, resp))
            self._transport().loseConnection()
            return
        action = txn.reply(code, resp)
        if action is WAIT:
            return
        if action is WRITE:
            self._write(b"\r\n".join(txn.pending_lines) + b"\r\n")
        elif action is BODY:
            self.body_sent = True
            self.setTimeout(None)  # while the body goes out, the write timeout watches
            transport: Any = self.transport
            transport.writeSequence((job.body, b".\r\n"))  # stored stuffed, ends in CRLF
            if self._write_call is None:
                # All of it is on its way: the manual's body timeout is the wait for the
                # reply after the end of the data, so it starts now (or, for a body the
                # transport had to hold back, when it has drained: resumeProducing).
                self.setTimeout(self.settings.body_timeout)
        elif action is END_EMPTY:
            self._write(b".\r\n")
        elif action is DONE:
            self.txn = self.job = None
            self.needs_rset = not txn.is_clean
            self.transactions += 1
            self.setTimeout(None)
            job.finish(txn)
            self.owner.transaction_done(self)

    # -- idle ----------------------------------------------------------------

    def park(self, idle_seconds: float, clock: Any) -> None:
        """No work: wait ``idle_seconds`` for more, then QUIT."""
        self.setTimeout(None)
        self._expected = ANY_CODE  # type: ignore[assignment]
        self._okresponse = self._failresponse = self._on_reply
        self.idle_call = clock.callLater(idle_seconds, self.owner.idle_expired, self)

    def _cancel_idle(self) -> None:
        if self.idle_call is not None and self.idle_call.active():
            self.idle_call.cancel()
        self.idle_call = None

    def quit(self) -> None:
        """Close politely (idle, or the total cap needs the slot)."""
        self._cancel_idle()
        self._quit()

    def _quit(self) -> None:
        transport: Any = self.transport
        if transport is None or transport.disconnecting:
            return
        if transport.producer is not None:
            transport.unregisterProducer()
        transport.write(b"QUIT\r\n")
        transport.loseConnection()

    def abort(self, reason: str) -> None:
        """Drop the connection now; an unfinished job ends soft with ``reason``."""
        self._fail(reason, tls=False)
        if self.transport is not None:
            self._transport().abortConnection()

    # -- timeouts (TimeoutMixin for reads; producer pause for writes) --------

    def timeoutConnection(self) -> None:
        if self.body_sent:
            # The "." went out and no reply came: the server may have taken the
            # message. Retrying risks a duplicate; not retrying risks a loss. We
            # prefer the possible duplicate (RFC 1047).
            reason = "timeout waiting for the reply to the end of the message"
        else:
            reason = "timeout waiting for a reply"
        self.abort(reason)

    def pauseProducing(self) -> None:
        if self._write_call is None:
            self._write_call = self.callLater(self.settings.write_timeout, self._write_timed_out)

    def resumeProducing(self) -> None:
        was_held = self._write_call is not None
        if self._write_call is not None and self._write_call.active():
            self._write_call.cancel()
        self._write_call = None
        if was_held and self.body_sent and self.txn is not None:
            self.setTimeout(self.settings.body_timeout)  # the body has drained

    def stopProducing(self) -> None:
        self.resumeProducing()

    def _write_timed_out(self) -> None:
        self._write_call = None
        self.abort("timeout writing to the server")

    # -- endings -------------------------------------------------------------

    def _session_failed(self, reason: str, tls: bool = False) -> None:
        if not self.is_finished:
            self.is_finished = True
            self.owner.session_failed(self, reason, tls=tls)

    def _fail(self, reason: str, *, tls: bool) -> None:
        txn, job = self.txn, self.job
        if job is not None and txn is not None:
            self.txn = self.job = None
            job.finish(txn, failure=reason)
        elif not self.is_ready:
            self._session_failed(reason, tls)

    def _may_resend(self, job: Job, txn: Transaction, tls: bool) -> bool:
        """Only on a reused connection, before any reply to the job, and only once."""
        return self.transactions > 0 and not txn.answered and not tls and job.resends == 0

    def _resend(self, job: Job, why: str) -> None:
        self.txn = self.job = None
        job.resends += 1
        job.note(f"<-- {why}; sending again on a new connection")
        self.owner.resend(job)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        super().connectionLost(reason)
        self._cancel_idle()
        self.resumeProducing()
        tls = self.tls_started and is_tls_failure(reason)
        why = "TLS failed: " + describe_failure(reason) if tls else "connection lost"
        self.is_closed = True
        job, txn = self.job, self.txn
        if job is not None and txn is None:
            # It waited for the bandwidth cap and was never started here.
            self.job = None
            self.owner.resend(job)
        elif job is not None and txn is not None and self._may_resend(job, txn, tls):
            # The server closed a reused connection as our transaction began (its idle
            # timeout crossing our MAIL): nothing was answered, so nothing happened;
            # send it again on a fresh connection rather than count a failure.
            self._resend(job, "connection closed before any reply")
        elif self.job is not None:
            self._fail(why if tls else f"connection lost: {describe_failure(reason)}", tls=tls)
        elif not self.is_ready:
            self._session_failed(why if tls else "connection closed by the server", tls)
        self.opening = None
        self.owner.lost(self)
