"""One inbound SMTP session: twisted.mail's ESMTP with the engine's rules (manual §2).

Twisted parses the commands (``state_COMMAND``, ``mail_re``, ``Address``,
EHLO, STARTTLS, the AUTH exchange). This subclass owns the input loop, which
fixes the traps listed in shared/TWISTED.md §0-1:

- commands run strictly one at a time; input that arrives while a reply is
  pending waits (safe PIPELINING, replies always in order);
- plaintext pipelined behind STARTTLS is discarded (no command injection);
- DATA is scanned in chunks (``inbound.data``), never split into lines, so no
  line length can drop the session out of DATA and a bare-LF "." never ends it;
- every reply carries an RFC 3463 enhanced status code;
- a storage failure answers 452 4.3.1, never a 5xx.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.python.failure import Failure

from mailengine.inbound.data import DataReader
from mailengine.inbound.intake import Intake, IntakeParts, SessionFacts, Transaction
from mailengine.inbound.paths import simple_path
from mailengine.inbound.received import clean_helo, with_protocol
from mailengine.inbound.replies import (
    check_mail_parameters,
    format_reply,
    suppressed_reply,
    with_enhanced_code,
)
from mailengine.inbound.security import StartTLSAndAuth
from mailengine.inbound.sending import ReplyWriter
from mailengine.policy.relay import (
    RelayRules,
    Route,
    is_rejected_sender,
    is_storable_address,
    route_recipient,
)
from mailengine.queue.suppression import Entry


class InboundParts(IntakeParts, Protocol):
    """What the SMTP server needs of the engine (``Engine``): intake's parts and names."""

    @property
    def hostname(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def config_dir(self) -> str: ...


class SessionServer(Protocol):
    """What a session needs from the factory that made it (``server.InboundFactory``)."""

    engine: InboundParts
    intake: Intake
    draining: bool

    def has_auth_users(self) -> bool: ...

    def session_ended(self, session: InboundESMTP) -> None: ...


log = Logger(namespace="mailengine.inbound")

MAX_COMMAND_LINE = 16384  # RFC 4954 needs 12288 for AUTH lines
MAX_RECIPIENTS = 1000
MAX_PENDING_INPUT = 1 << 20  # pipelined input held while a reply is pending


class InboundESMTP(StartTLSAndAuth, smtp.ESMTP):
    """The engine's SMTP server protocol; one per connection, made by ``InboundFactory``."""

    noisy = False
    transport: Any  # a TCP (and TLS-capable) transport once connected
    portal: Any

    def __init__(self, server: SessionServer, peer_ip: str, chal: Any, tls: Any) -> None:
        super().__init__(chal=chal, contextFactory=tls)
        self.server = server
        self.engine = server.engine
        # The live sections (edits apply in place): read at use time, looked up once.
        self._logs = server.engine.config.logs
        self._settings = server.engine.config.smtp_in
        self._server_settings = server.engine.config.server
        self.peer_ip = peer_ip
        self.local_ip = ""
        self.began = 0.0  # on the suppression list's clock: its answers are at least this new
        self.auth_user = ""
        self._input = b""
        self._awaiting = False
        self._processing = False
        self._discarding = False
        self._plain_reply = False
        self._paused = False
        self._esmtp = False
        self._auth_failures = 0
        self._txn: Transaction | None = None
        self._reader: DataReader | None = None
        self._seconds = server.engine.reactor.seconds
        self._line_since = 0.0  # when the command line still incomplete began (0: none)

    # -- connection ----------------------------------------------------------

    def connectionMade(self) -> None:
        self._replies: ReplyWriter = ReplyWriter(self.transport)  # before the greeting
        self.local_ip = getattr(self.transport.getHost(), "host", "")
        self.began = self.engine.suppression.clock() if self.engine.suppression else 0.0
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._reader = None
        self._txn = None
        super().connectionLost(reason)
        self.server.session_ended(self)

    def greeting(self) -> bytes:
        return self.host + b" ESMTP MailEngine"

    def timeoutConnection(self) -> None:
        if self._awaiting:  # the silence is ours (a slow disk): the client waits for a reply
            self.setTimeout(self.timeOut)  # the timer fired, so arm a new one
            return
        self._input = b""
        self.sendCode(421, b"4.4.2 " + self.host + b" Error: timeout exceeded")
        self.transport.loseConnection()

    def stop_when_idle(self) -> None:
        """Graceful stop: close now when idle, else after the transaction in progress."""
        if self._txn is None and self._reader is None and not self._awaiting:
            self._shut_down()

    def _shut_down(self) -> None:
        self._input = b""
        self.sendCode(421, b"4.3.2 " + self.host + b" Service shutting down, try again later")
        self.transport.loseConnection()

    # -- the input loop --------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        if (self._reader is not None or self._line_since) and self._is_overdue():
            return
        self._input = self._input + data if self._input else data
        if not self._processing:
            self._process()
        if self._input and self._reader is None and not self._awaiting and not self._line_since:
            self._line_since = self._seconds()  # a command line begun: its deadline runs
        if self._awaiting and len(self._input) > MAX_PENDING_INPUT and not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def _is_overdue(self) -> bool:
        """A client dripping bytes resets the idle timeout for ever: a command line must
        be whole within timeout_seconds of its first byte, and DATA within
        data_timeout_seconds of the 354 (issue 9); 421 and close when not."""
        reader = self._reader
        if reader is not None:
            since, limit, what = reader.started, self._settings.data_timeout_seconds, b"DATA"
        else:
            since, limit, what = self._line_since, self._settings.timeout_seconds, b"command"
        if self._seconds() - since <= limit:
            return False
        self._reader = None
        self._txn = None
        self._input = b""
        log.info("smtp in {peer}: {what} too slow, closed", peer=self.peer_ip, what=what.decode())
        self.sendCode(421, b"4.4.2 " + self.host + b" Error: " + what + b" took too long")
        self.transport.loseConnection()
        return True

    def _process(self) -> None:
        self._processing = True
        try:
            while self._input and not self._awaiting and not self.transport.disconnecting:
                if self._reader is not None:
                    self._feed_data()
                elif not self._next_line():
                    break
        finally:
            self._processing = False
        if self._paused and not self._awaiting:
            self._paused = False
            self.transport.resumeProducing()

    def _next_line(self) -> bool:
        """Run the next complete command line; False when more input is needed."""
        buf = self._input
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) > MAX_COMMAND_LINE:
                self._input = b""
                if not self._discarding:
                    self._discarding = True
                    self.sendCode(500, b"5.5.2 Error: line too long")
            return False
        line = buf[:end]
        self._input = buf[end + 2 :]
        self._line_since = 0.0
        if self._discarding:  # the end of an overlong line already answered
            self._discarding = False
            return True
        if len(line) > MAX_COMMAND_LINE:
            self.sendCode(500, b"5.5.2 Error: line too long")
            return True
        self._dispatch(line)
        return True

    def _dispatch(self, line: bytes) -> None:
        if self._logs.debug_smtp_in:
            shown = _without_secrets(line, self.mode)
            log.info("smtp in {peer} < {line}", peer=self.peer_ip, line=_printable(shown))
        self._awaiting = True  # exactly one reply follows each command line
        try:
            getattr(self, "state_" + self.mode)(line)
        except Exception:
            log.failure("smtp in {peer}: error handling {line!r}", peer=self.peer_ip, line=line)
            self.mode = smtp.COMMAND
            if self._awaiting:
                self.sendCode(451, b"4.3.0 Internal error, try again later")

    def sendCode(self, code: int, message: bytes = b"") -> None:
        if not self._plain_reply:
            message = with_enhanced_code(code, message)
        reply = format_reply(code, message)
        if self._logs.debug_smtp_in:
            for line in reply.splitlines():  # as on the wire: "250-..." then "250 ..."
                log.info("smtp in {peer} > {line}", peer=self.peer_ip, line=_printable(line))
        self._write(reply)
        self._awaiting = False
        if not self._processing and self._input:
            self._process()

    def _write(self, data: bytes) -> None:
        self._replies.write(data)

    def lookupMethod(self, command: bytes) -> Any:
        if not command.isascii() or not command.isalpha():
            return None
        return super().lookupMethod(command)

    # -- DATA ------------------------------------------------------------------

    def _feed_data(self) -> None:
        reader = self._reader
        assert reader is not None
        used = reader.feed(self._input)
        if used < 0:
            self._input = b""
            return
        self._input = self._input[used:]
        txn = self._txn
        self._reader = None
        self._txn = None
        self._awaiting = True
        if self._logs.debug_smtp_in:
            log.info("smtp in {peer} < ({n} bytes of DATA) .", peer=self.peer_ip, n=reader.size)
        assert txn is not None
        self._end_of_data(reader, txn)

    def _end_of_data(self, reader: DataReader, txn: Transaction) -> None:
        if reader.is_oversized:
            self.engine.counters.refused()
            self.sendCode(552, b"5.3.4 Message size exceeds fixed maximum message size")
            self._after_transaction()
            return
        try:
            d = self.server.intake.accept(txn, reader.content(), self._facts())
        except Exception:  # e.g. the receipt journal cannot be opened: still a reply
            d = defer.fail()
        d.addCallbacks(self._queued, self._not_queued)
        d.addErrback(self._bug)

    def _queued(self, message_id: str) -> None:
        self.sendCode(250, b"2.0.0 Ok: queued as " + message_id.encode("ascii", "replace"))
        self._after_transaction()

    def _not_queued(self, failure: Failure) -> None:
        # Disk full, permissions...: temporary, so the client keeps its copy.
        if failure.check(OSError):  # one clear line, not a traceback per message
            log.warn(
                "smtp in {peer}: message not stored, answered 452: {why}",
                peer=self.peer_ip,
                why=failure.value,
            )
        else:
            log.failure("smtp in {peer}: message not stored", failure, peer=self.peer_ip)
        self.sendCode(452, b"4.3.1 Insufficient system storage, try again later")
        self._after_transaction()

    def _bug(self, failure: Failure) -> None:
        log.failure("smtp in {peer}: error after DATA", failure, peer=self.peer_ip)

    def _after_transaction(self) -> None:
        if self.server.draining and not self.transport.disconnecting:
            self._shut_down()

    def _facts(self) -> SessionFacts:
        helo = self._helo[0] if self._helo and self._helo[0] else b""
        return SessionFacts(
            helo=clean_helo(helo) if helo else "",
            peer_ip=self.peer_ip,
            local_ip=self.local_ip,
            local_hostname=self.engine.name,
            protocol=with_protocol(
                esmtp=self._esmtp, tls=self.startedTLS, authenticated=self.authenticated
            ),
        )

    # -- commands ----------------------------------------------------------------

    def do_HELO(self, rest: bytes) -> None:
        if not rest.strip():
            self.sendCode(501, b"5.5.4 Syntax: HELO hostname")
            return
        self._txn = None
        self._esmtp = False
        self._plain_reply = True
        try:
            super().do_HELO(rest)
        finally:
            self._plain_reply = False

    def do_EHLO(self, rest: bytes) -> None:
        if not rest.strip():
            self.sendCode(501, b"5.5.4 Syntax: EHLO hostname")
            return
        self._txn = None
        self._esmtp = True
        self._plain_reply = True
        try:
            super().do_EHLO(rest)
        finally:
            self._plain_reply = False

    def extensions(self) -> dict[bytes, Any]:
        size = self._settings.max_message_size_bytes
        ext: dict[bytes, Any] = {
            b"SIZE": [str(size).encode()] if size else None,
            b"8BITMIME": None,
            b"PIPELINING": None,
            b"ENHANCEDSTATUSCODES": None,
        }
        if self.canStartTLS and not self.startedTLS:
            ext[b"STARTTLS"] = None
        mechanisms = self._offered_mechanisms()
        if mechanisms and not self.authenticated:
            ext[b"AUTH"] = mechanisms
        return ext

    def do_NOOP(self, rest: bytes) -> None:
        self.sendCode(250, b"2.0.0 Ok")

    def do_HELP(self, rest: bytes) -> None:
        self.sendCode(
            214, b"2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH"
        )

    def do_VRFY(self, rest: bytes) -> None:
        # RFC 5321 §3.5.3: no mailbox lookups here, but mail will be tried.
        if not rest.strip():
            self.sendCode(501, b"5.5.4 Syntax: VRFY address")
            return
        self.sendCode(252, b"2.5.0 Cannot VRFY user, but will accept message and attempt delivery")

    def do_EXPN(self, rest: bytes) -> None:
        self.sendCode(502, b"5.5.1 EXPN not supported")

    def do_RSET(self, rest: bytes) -> None:
        self._txn = None
        self._from = None
        self._to = []
        self.sendCode(250, b"2.0.0 Ok")

    def do_QUIT(self, rest: bytes) -> None:
        self._input = b""
        self.sendCode(221, b"2.0.0 Bye")
        self.transport.loseConnection()

    def do_UNKNOWN(self, rest: bytes) -> None:
        self.sendCode(500, b"5.5.2 Error: command not recognized")

    def sendSyntaxError(self) -> None:
        self.sendCode(500, b"5.5.2 Error: bad syntax")

    def do_MAIL(self, rest: bytes) -> None:
        if self.server.draining:
            self._shut_down()
            return
        if self._txn is not None:
            self.sendCode(503, b"5.5.1 Error: nested MAIL command")
            return
        m = self.mail_re.match(rest)
        if not m:
            self.sendCode(501, b"5.5.4 Syntax: MAIL FROM:<address>")
            return
        refusal = check_mail_parameters(m.group("opts"), self._settings.max_message_size_bytes)
        if refusal is not None:
            if refusal[0] == 552:
                self.engine.counters.refused()
            self.sendCode(*refusal)
            return
        simple = simple_path(m.group("path"))
        if simple is not None:
            sender = f"{simple[0]}@{simple[1]}"
        else:
            try:
                sender = str(smtp.Address(m.group("path"), self.host))
            except (smtp.AddressError, UnicodeError):
                sender = "\0"
            if not is_storable_address(sender):
                self.sendCode(553, b"5.1.7 Bad sender address syntax")
                return
        if is_rejected_sender(sender, self._settings.reject_mail_from):
            self.engine.counters.refused()
            self.sendCode(550, b"5.7.1 Sender address rejected")
            return
        self._txn = Transaction(sender)
        self.sendCode(250, b"2.1.0 Ok")

    def do_RCPT(self, rest: bytes) -> None:
        txn = self._txn
        if txn is None:
            self.sendCode(503, b"5.5.1 Error: need MAIL command")
            return
        if txn.recipient_count >= MAX_RECIPIENTS:
            self.sendCode(452, b"4.5.3 Error: too many recipients")
            return
        m = self.rcpt_re.match(rest)
        if not m:
            self.sendCode(501, b"5.5.4 Syntax: RCPT TO:<address>")
            return
        simple = simple_path(m.group("path"))
        if simple is not None:
            local, domain = simple
        else:
            try:
                address = smtp.Address(m.group("path"), b"")
                local = address.local.decode("ascii")
                domain = address.domain.decode("ascii")
            except (smtp.AddressError, UnicodeError):
                local = domain = "\0"
            if not is_storable_address(local) or not is_storable_address(domain):
                self.sendCode(553, b"5.1.3 Bad recipient address syntax")
                return
        smtp_in = self._settings
        rules = RelayRules(
            local_domains=self._server_settings.local_domains,
            relay_domains=smtp_in.relay_domains,
            relay_ips=smtp_in.relay_ips,
        )
        verdict = route_recipient(
            local, domain, rules, peer_ip=self.peer_ip, authenticated=self.authenticated
        )
        recipient = f"{local}@{domain or self.engine.hostname}"
        route = verdict.route
        if route is Route.INCOMING:
            txn.incoming.append(recipient)
        elif route is Route.RELAY:
            entry = self._suppressed(recipient)
            if entry is not None:
                if self.engine.config.suppression.action == "drop":
                    txn.suppressed.append((recipient, entry.reason))
                    self.sendCode(250, b"2.1.5 Ok")
                    return
                self.engine.counters.refused()
                self.sendCode(550, suppressed_reply(recipient, entry.reason, entry.created))
                return
            txn.relay.append(recipient)
        elif route is Route.BOUNCE:
            txn.bounces.append(verdict.bounce_for)
            txn.bounce_rcpts.append(recipient)
        elif route is Route.DENIED:
            self.engine.counters.refused()
            self.sendCode(554, b"5.7.1 <" + recipient.encode() + b">: relay not approved")
            return
        else:
            self.sendCode(550, b"5.1.3 Bad recipient address syntax")
            return
        self.sendCode(250, b"2.1.5 Ok")

    def _suppressed(self, recipient: str) -> Entry | None:
        suppression = self.engine.suppression
        if suppression is None or not self.engine.config.suppression.enabled:
            return None
        return suppression.lookup(recipient, self.began)

    def do_DATA(self, rest: bytes) -> None:
        txn = self._txn
        if txn is None:
            self.sendCode(503, b"5.5.1 Error: need MAIL command")
            return
        if not txn.recipient_count:
            self.sendCode(554, b"5.5.1 Error: no valid recipients")
            return
        self._reader = DataReader(self._settings.max_message_size_bytes)
        self._reader.started = self._seconds()
        self.sendCode(354, b"End data with <CR><LF>.<CR><LF>")


def _without_secrets(line: bytes, mode: str) -> bytes:
    """A command line as debug_smtp_in logs it: AUTH responses, initial ones included, masked."""
    if mode == smtp.AUTH:
        return b"(authentication data)"
    words = line.split(None, 2)
    if len(words) == 3 and words[0].upper() == b"AUTH":
        return b"%s %s (authentication data)" % (words[0], words[1])
    return line


def _printable(line: bytes) -> str:
    return line.decode("utf-8", "backslashreplace")
