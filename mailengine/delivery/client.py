"""The outbound SMTP connection (Twisted shell): frames reply lines with
``LineOnlyReceiver``, times out with ``TimeoutMixin``, and drives the pure
``session.Session``, which decides everything said on the wire.

Its pool hands it one job after another (TWISTED.md §2.6); every way a session
ends reaches the pool exactly once (``session_failed`` before the session was
ready, ``job.finish`` for an open transaction, ``lost`` always).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import attrs
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from mailengine.delivery.session import (
    BODY,
    CLOSED,
    CLOSING,
    DONE,
    END,
    QUIT_SENT,
    READY,
    REPLY_LINE_LIMIT,
    SESSION_READY,
    START_TLS,
    TLS_FAILED,
    VIOLATION,
    WAIT,
    WRITE,
    Session,
)
from mailengine.delivery.transaction import Transaction

if TYPE_CHECKING:
    from mailengine.delivery.job import Job

log = Logger(namespace="mailengine.smtp_out")

# A reply line with no end after this many bytes is a protocol error (a server that
# sends an endless line); lines up to it are cut at session.REPLY_LINE_LIMIT.
ENDLESS_LINE_BYTES = 65536


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
    def misbehaved(self, client: OutboundClient, reason: str) -> None: ...
    def transaction_done(self, client: OutboundClient) -> None: ...
    def idle_expired(self, client: OutboundClient) -> None: ...
    def resend(self, job: Job) -> None: ...
    def lost(self, client: OutboundClient) -> None: ...


def describe_failure(reason: Failure) -> str:
    """A short human reason for a lost or refused connection."""
    value = reason.value
    text = str(value).strip() or type(value).__name__
    return text.split("\n")[0][:200]


def connection_facts(transport: Any) -> tuple[str, str]:
    """(our address, TLS version or "") of a connected transport, for the event log."""
    try:
        egress = str(transport.getHost().host)
    except AttributeError:  # no transport or no address (tests): nothing to record
        egress = ""
    tls = ""
    handle = getattr(transport, "getHandle", None)
    if handle is not None:
        version = getattr(handle(), "get_protocol_version_name", None)
        if version is not None:  # an OpenSSL connection once STARTTLS ran
            tls = str(version())
    return egress, tls


def is_tls_failure(reason: Failure) -> bool:
    name = type(reason.value).__module__ + "." + type(reason.value).__name__
    return "OpenSSL" in name or "service_identity" in name or "VerificationError" in name


class OutboundClient(LineOnlyReceiver, TimeoutMixin):
    """One connection to one MX address; its pool hands it jobs."""

    delimiter = b"\n"  # a bare LF ends a reply line too; the CR before it is dropped
    MAX_LENGTH = ENDLESS_LINE_BYTES

    def __init__(
        self, owner: SessionOwner, context: Any, require_tls: bool, helo: str = ""
    ) -> None:
        settings = owner.settings
        self.owner = owner
        self.settings = settings
        self.tls_context = context  # offered to STARTTLS when the server has it
        identity = helo.encode("ascii") if helo else settings.identity  # helo: an egress source's
        self.session = Session(
            identity, should_offer_tls=context is not None, require_tls=require_tls
        )
        self.opening: list[str] | None = []  # greeting/EHLO lines while they happen
        self.opening_lines: tuple[str, ...] = ()  # ...kept for the transcripts of its jobs
        self.facts: tuple[str, str] = ("", "")  # (our address, TLS version): _ready
        self.is_ready = False
        self.is_finished = False  # the owner has heard how this session ended
        self.is_closed = False  # connectionLost ran (the transport may not say so)
        self.tls_started = False
        self.job: Job | None = None
        self.txn: Transaction | None = None
        self._body_held = False  # the body was written; not all of it has left yet
        self.idle_call: IDelayedCall | None = None
        self._write_call: IDelayedCall | None = None

    @property
    def size_limit(self) -> int:
        return self.session.size_limit

    @property
    def transactions(self) -> int:
        return self.session.transactions

    @property
    def is_usable(self) -> bool:
        """Open, and between transactions: a job may start on it now."""
        transport: Any = self.transport
        return (
            not self.is_closed
            and transport is not None
            and not transport.disconnecting
            and self.session.state == READY
        )

    @property
    def is_serving(self) -> bool:
        """Ready, and will take the next job when its transaction ends."""
        return (
            self.is_ready and not self.is_closed and self.session.state not in (CLOSED, QUIT_SENT)
        )

    # -- connection ----------------------------------------------------------

    def _transport(self) -> Any:
        return self.transport

    def connectionMade(self) -> None:
        transport = self._transport()
        if hasattr(transport, "setTcpNoDelay"):
            # Nagle + delayed ACK stall the final "." ~45 ms per message (TWISTED.md §2).
            transport.setTcpNoDelay(True)
        if self.settings.debug:
            self._debug("---", b"connected; waiting for the greeting")
        self.setTimeout(self.settings.read_timeout)

    def _write(self, data: bytes) -> None:
        if self.opening is not None or self.settings.debug:
            for line in data.split(b"\r\n")[:-1]:
                if self.opening is not None:
                    self.opening.append("--> " + line.decode("utf-8", "replace"))
                if self.settings.debug:
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

    def dataReceived(self, data: bytes) -> None:
        self.session.new_read()
        super().dataReceived(data)
        if self._body_held and self._write_call is None:
            # Every reply of this read was sent before the server could see our body;
            # from now on a reply may answer the final dot.
            self._body_gone()

    def lineReceived(self, line: bytes) -> None:
        if line[-1:] == b"\r":
            line = line[:-1]
        if len(line) > REPLY_LINE_LIMIT:
            line = line[:REPLY_LINE_LIMIT]  # (the transcript keeps no more than the session)
        self.resetTimeout()
        if self.opening is not None:
            self.opening.append("<-- " + line.decode("utf-8", "replace"))
        if self.settings.debug:
            self._debug("<--", line)
        action = self.session.receive_line(line)
        if action == WAIT:
            return
        if action == WRITE:
            self._write(self.session.out)
        elif action == BODY:
            self._send_body()
        elif action == DONE:
            self._transaction_done()
        elif action == SESSION_READY:
            self._ready()
        elif action == START_TLS:
            self.tls_started = True
            self._transport().startTLS(self.tls_context)
            self._write(self.session.tls_started())
        elif action == END:
            self._ended()

    def lineLengthExceeded(self, line: bytes) -> None:
        self._buffer = b""
        self._protocol_error(f"a reply line of more than {self.MAX_LENGTH} bytes")

    def _ready(self) -> None:
        self.is_ready = True
        self.opening_lines = tuple(self.opening or ())
        self.opening = None
        # Read once per session, not per job: getsockname per message cost 2 % of the relay.
        self.facts = connection_facts(self.transport)
        self._transport().registerProducer(self, True)  # pause/resume = write timeout
        self.owner.session_ready(self)

    # -- transactions --------------------------------------------------------

    def send(self, job: Job) -> None:
        """Start the job's transaction (the pool checked SIZE and the bandwidth)."""
        self._cancel_idle()
        self.job = job
        session = self.session
        txn = Transaction(
            job.sender,
            job.recipients,
            test_mode=self.settings.test_mode,
            mail_params=session.mail_params(job.size),
        )
        self.txn = txn
        self.setTimeout(self.settings.read_timeout)
        self._write(session.start(txn))

    def _send_body(self) -> None:
        job = self.job
        if job is None:  # cannot happen: BODY answers the DATA of this job's transaction
            self._protocol_error("354 with no message to send")
            return
        self.setTimeout(None)  # while the body goes out, the write timeout watches
        self._body_held = True
        self._transport().writeSequence((job.body, b".\r\n"))  # stored stuffed, ends in CRLF

    def _body_gone(self) -> None:
        # All of it left (or, held back by the transport, has drained: resumeProducing).
        # The manual's body timeout is the wait for the reply after the end of the data.
        self._body_held = False
        self.session.body_written()
        self.setTimeout(self.settings.body_timeout)

    def _transaction_done(self) -> None:
        txn, job = self.txn, self.job
        self.txn = self.job = None
        self.setTimeout(None)
        if job is not None and txn is not None:
            job.finish(txn)
        self.owner.transaction_done(self)

    # -- the session ended on the server's word (or a protocol error) ----------

    def _ended(self) -> None:
        session = self.session
        reason = session.error
        if session.ending == VIOLATION:
            log.warn("{peer}: protocol error: {why}", peer=self._peer_name(), why=reason)
            self.owner.misbehaved(self, reason)
        job, txn = self.job, self.txn
        if job is not None and txn is not None:
            if session.ending == CLOSING and self._may_resend(job, txn):
                # RFC 5321 §3.8: the server closes this reused connection (idle timeout,
                # messages-per-connection limit) before our transaction began: nothing
                # was accepted, so the job goes to a fresh connection, not to retry/.
                self._resend(job, reason)
            else:
                self.txn = self.job = None
                job.finish(txn)
        elif not self.is_ready:
            why = "protocol error: " + reason if session.ending == VIOLATION else reason
            self._session_failed(why, session.ending == TLS_FAILED)
        transport = self._transport()
        if session.ending == VIOLATION:
            transport.abortConnection()  # nothing it says can be trusted any more
        else:
            self._quit()

    def _protocol_error(self, reason: str) -> None:
        if self.session.protocol_error(reason) == END:
            self._ended()
        elif self.transport is not None:
            self._transport().abortConnection()

    def _peer_name(self) -> str:
        peer: Any = self._transport().getPeer() if self.transport else None
        return f"{peer.host}:{peer.port}" if peer else "?"

    # -- idle ----------------------------------------------------------------

    def park(self, idle_seconds: float, clock: Any) -> None:
        """No work: wait ``idle_seconds`` for more, then QUIT."""
        self.setTimeout(None)
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
        transport.write(self.session.quit())
        transport.loseConnection()

    def abort(self, reason: str) -> None:
        """Drop the connection now; an unfinished job ends soft with ``reason``."""
        self.session.connection_lost(reason)
        self._fail(reason, tls=False)
        if self.transport is not None:
            self._transport().abortConnection()

    # -- timeouts (TimeoutMixin for reads; producer pause for writes) --------

    def timeoutConnection(self) -> None:
        txn = self.txn
        if txn is not None and txn.body_written:
            # The "." went out and no reply came: the server may have taken the
            # message. Retrying risks a duplicate; not retrying risks a loss. We
            # prefer the possible duplicate (RFC 1047).
            reason = "timeout waiting for the reply to the end of the message"
        elif not self.is_ready and self.opening is not None and len(self.opening) == 0:
            reason = "timeout waiting for the greeting"
        else:
            reason = "timeout waiting for a reply"
        if self.settings.debug:
            self._debug("---", reason.encode())
        self.abort(reason)

    def pauseProducing(self) -> None:
        if self._write_call is None:
            self._write_call = self.callLater(self.settings.write_timeout, self._write_timed_out)

    def resumeProducing(self) -> None:
        if self._write_call is not None and self._write_call.active():
            self._write_call.cancel()
        self._write_call = None
        if self._body_held and self.txn is not None:
            self._body_gone()

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

    def _may_resend(self, job: Job, txn: Transaction) -> bool:
        """Only on a reused connection, before any reply to the job, and only once."""
        return self.session.transactions > 0 and not txn.answered and job.resends == 0

    def _resend(self, job: Job, why: str) -> None:
        self.txn = self.job = None
        job.resends += 1
        job.note(f"<-- {why}; sending again on a new connection")
        self.owner.resend(job)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.setTimeout(None)
        self._cancel_idle()
        if self._write_call is not None and self._write_call.active():
            self._write_call.cancel()
        self._write_call = None
        self._body_held = False
        session = self.session
        # A handshake cut after "220 Ready to start TLS" is a TLS failure whatever the
        # exception (issue 9): the policy may then allow plain text.
        tls = session.is_tls_pending or (self.tls_started and is_tls_failure(reason))
        why = "TLS failed: " + describe_failure(reason) if tls else "connection lost"
        self.is_closed = True
        session.connection_lost(why)
        job, txn = self.job, self.txn
        if job is not None and txn is None:
            # It waited for the bandwidth cap and was never started here.
            self.job = None
            self.owner.resend(job)
        elif job is not None and txn is not None and not tls and self._may_resend(job, txn):
            # The server closed a reused connection as our transaction began (its idle
            # timeout crossing our MAIL): nothing was answered, so nothing happened;
            # send it again on a fresh connection rather than count a failure.
            self._resend(job, "connection closed before any reply")
        elif job is not None:
            self._fail(why if tls else f"connection lost: {describe_failure(reason)}", tls=tls)
        elif not self.is_ready:
            self._session_failed(why if tls else "connection closed by the server", tls)
        self.opening = None
        self.owner.lost(self)
