"""The outbound SMTP session as one explicit state machine: reply lines in, commands
out, a named state at every moment (pure; h11's shape, STYLE.md).

greeting → EHLO (HELO when EHLO gets 5xx) → [STARTTLS → EHLO] → transactions
([RSET after a failed one] MAIL, RCPT..., DATA, body, ".") → QUIT. Under
PIPELINING (RFC 2920) a transaction's commands go out at once and replies are
paired with them in order. A reply that cannot answer its command is a
protocol error (``VIOLATION``): the session ends and the open transaction's
recipients are deferred (``Transaction.out_of_step``).
"""

from __future__ import annotations

from collections import deque

from mailengine.delivery.transaction import (
    DATA,
    DOT,
    DOT_COMMAND,
    EHLO,
    GREETING,
    HELO,
    MAIL,
    QUIT,
    RCPT,
    RSET,
    STARTTLS,
    TEST_RSET,
    Command,
    Transaction,
)

# RFC 5321 §4.3.2 (and RFC 3207 §4 for STARTTLS): the replies each command may get.
REPLIES: dict[str, frozenset[int]] = {
    GREETING: frozenset({220, 554}),
    EHLO: frozenset({250, 502, 504, 550}),
    HELO: frozenset({250, 502, 504, 550}),
    STARTTLS: frozenset({220, 454, 501}),
    RSET: frozenset({250}),
    MAIL: frozenset({250, 451, 452, 455, 503, 550, 552, 553, 555}),
    RCPT: frozenset({250, 251, 450, 451, 452, 455, 503, 550, 551, 552, 553, 555}),
    DATA: frozenset({354, 450, 451, 452, 503, 550, 554}),
    DOT: frozenset({250, 450, 451, 452, 550, 552, 554}),
    TEST_RSET: frozenset({250}),
    QUIT: frozenset({221}),
}
# Any command may get these: syntax errors and "not implemented" (§4.2.4), and 421,
# the server closing (§3.8).
ANY_COMMAND = frozenset({421, 500, 501, 502, 504})
# What is checked. A positive reply (2xx, 3xx) outside its row is a desynchronisation:
# it is how a reply that belongs to another command shows (a 250 to DATA, a 354 to
# RCPT). A negative reply outside its row is tolerated and decides by its first digit:
# real servers use others (Postfix rejects RCPT with 554, some MAIL with 421/530).
NEGATIVE = frozenset(range(400, 600))
ALLOWED: dict[str, frozenset[int]] = {
    kind: row | ANY_COMMAND | NEGATIVE for kind, row in REPLIES.items()
}
ALLOWED[QUIT] = frozenset(range(200, 600))  # after QUIT nothing matters

REPLY_LINE_LIMIT = 1000  # octets of a reply line kept; the rest is cut, the session goes on
MAX_REPLY_LINES = 200  # lines of one multiline reply; more is a protocol error

# States.
AWAIT_GREETING = "awaiting greeting"
EHLO_SENT = "EHLO sent"
HELO_SENT = "HELO sent"
STARTTLS_SENT = "STARTTLS sent"
TLS_HANDSHAKE = "TLS handshake"
READY = "ready"  # between transactions
IN_TRANSACTION = "in transaction"
SENDING_BODY = "sending body"  # DATA got 354; the body and "." are not all written yet
QUIT_SENT = "QUIT sent"
CLOSED = "closed"

# What the connection must do after a reply line.
WAIT = "wait"  # nothing yet
WRITE = "write"  # write ``out``
START_TLS = "start-tls"  # start TLS, then write ``tls_started()``
SESSION_READY = "session-ready"  # ready for the first transaction (``start``)
BODY = "body"  # write the body and the final "."; then call ``body_written``
DONE = "done"  # the transaction is finished (its replies are in the Transaction)
END = "end"  # the session is over: ``ending`` says how, ``error`` why

# How a session ended.
REFUSED = "refused"  # a negative reply to the greeting, EHLO/HELO or RSET
CLOSING = "closing"  # the server said 421 (RFC 5321 §3.8)
VIOLATION = "protocol error"  # a reply out of step, malformed or unbounded
TLS_FAILED = "tls"  # STARTTLS refused, or required and not offered
LOST = "lost"  # the connection closed (or timed out) under us

_RSET_COMMAND: Command = (RSET, b"RSET")
_GREETING_COMMAND: Command = (GREETING, b"")


class Session:
    """One connection's conversation, from the greeting to QUIT."""

    __slots__ = (
        "_code",
        "_lines",
        "_next",
        "_unripe",
        "ending",
        "error",
        "has_size",
        "identity",
        "is_eight_bit",
        "needs_rset",
        "offers_starttls",
        "out",
        "pending",
        "pipelining",
        "require_tls",
        "should_offer_tls",
        "size_limit",
        "state",
        "tls_active",
        "transactions",
        "txn",
    )

    def __init__(
        self,
        identity: bytes,
        *,
        should_offer_tls: bool = False,
        require_tls: bool = False,
    ) -> None:
        self.identity = identity
        self.should_offer_tls = should_offer_tls  # STARTTLS when the server offers it
        self.require_tls = require_tls  # no transaction in plain text
        self.state = AWAIT_GREETING
        self.out = b""
        # Commands written and not answered yet, oldest first (the greeting answers the connect).
        self.pending: deque[Command] = deque([_GREETING_COMMAND])
        self._unripe = 0  # of ``pending``, the newest this many were written during this read
        self._next = 0  # next command of ``txn`` to write (without pipelining)
        self._code = b""  # of the multiline reply being read
        self._lines: list[bytes] | None = None
        self.pipelining = False
        self.size_limit = 0
        self.has_size = False
        self.is_eight_bit = False
        self.offers_starttls = False
        self.tls_active = False
        self.txn: Transaction | None = None
        self.needs_rset = False
        self.transactions = 0  # finished on this connection
        self.ending = ""
        self.error = ""

    @property
    def is_tls_pending(self) -> bool:
        """STARTTLS was accepted and the session over TLS has not been established."""
        return self.state == TLS_HANDSHAKE or (self.tls_active and self.state == EHLO_SENT)

    def mail_params(self, size: int) -> bytes:
        """MAIL FROM parameters for a message of ``size`` bytes (RFC 1870, RFC 6152)."""
        params = b" SIZE=%d" % size if self.has_size else b""
        return params + b" BODY=8BITMIME" if self.is_eight_bit else params

    # -- in --------------------------------------------------------------

    def new_read(self) -> None:
        """Bytes arrived: every command written before now may be answered by them."""
        self._unripe = 0

    def receive_line(self, line: bytes) -> str:
        """One reply line, without its line end; returns what to do."""
        if self.state == CLOSED or self.state == QUIT_SENT:
            return WAIT
        if len(line) > REPLY_LINE_LIMIT:
            line = line[:REPLY_LINE_LIMIT]
        code, sep = line[:3], line[3:4]
        if len(code) != 3 or not code.isdigit() or sep not in (b" ", b"-", b""):
            return self._end(VIOLATION, "malformed reply " + _show(line))
        if sep == b"-":
            if self._lines is None:
                self._code, self._lines = code, [line[4:]]
            elif code != self._code or len(self._lines) >= MAX_REPLY_LINES:
                return self._end(VIOLATION, "broken multiline reply " + _show(line))
            else:
                self._lines.append(line[4:])
            return WAIT
        lines = self._lines
        if lines is None:
            text = line[4:]
        else:
            self._lines = None
            if code != self._code:
                return self._end(VIOLATION, "broken multiline reply " + _show(line))
            lines.append(line[4:])
            text = b"\n".join(lines)
        return self.receive_reply(int(code), text)

    def receive_reply(self, code: int, text: bytes) -> str:
        """One complete reply; returns what to do."""
        state = self.state
        if state in (CLOSED, QUIT_SENT):
            return WAIT
        if code == 421:
            # RFC 5321 §3.8: the server is closing, at any point (even unasked).
            self._end(CLOSING, _reply(code, text))
            if self.txn is not None:
                self.txn.failure_code = code
            return END
        if state == SENDING_BODY:
            return self._end(VIOLATION, f"reply {_reply(code, text)} before the data was all sent")
        pending = self.pending
        if not pending:
            return self._end(VIOLATION, f"reply {_reply(code, text)} to no command")
        if len(pending) <= self._unripe:
            name = pending[0][0]
            return self._end(VIOLATION, f"reply {_reply(code, text)} before {name} was sent")
        kind, line = pending.popleft()
        if code not in ALLOWED[kind]:
            return self._end(VIOLATION, f"{_reply(code, text)} is no reply to {kind}")
        txn = self.txn
        if txn is not None:
            txn.record(kind, line, code, text)
            return self._transaction_reply(txn, kind, code, text)
        return self._opening_reply(kind, code, text)

    # -- opening: greeting, EHLO/HELO, STARTTLS ----------------------------

    def _opening_reply(self, kind: str, code: int, text: bytes) -> str:
        ok = 200 <= code < 300
        if kind == GREETING:
            if code == 220:
                return self._write((EHLO, b"EHLO " + self.identity), EHLO_SENT)
            return self._end(REFUSED, "greeting " + _reply(code, text))
        if kind == EHLO:
            if ok:
                self._read_extensions(text)
                return self._after_hello()
            if code >= 500:  # RFC 5321 §3.2: an old server; try HELO
                return self._write((HELO, b"HELO " + self.identity), HELO_SENT)
            return self._end(REFUSED, "EHLO " + _reply(code, text))
        if kind == HELO:
            if ok:
                self._read_extensions(b"")
                return self._after_hello()
            return self._end(REFUSED, "HELO " + _reply(code, text))
        if kind == STARTTLS:
            if code == 220:
                self.state = TLS_HANDSHAKE
                return START_TLS
            return self._end(TLS_FAILED, "STARTTLS " + _reply(code, text))
        return self._end(VIOLATION, f"{_reply(code, text)} to {kind} outside a transaction")

    def _read_extensions(self, text: bytes) -> None:
        ext: dict[bytes, bytes] = {}
        for line in text.split(b"\n")[1:]:
            key, _, value = line.strip().partition(b" ")
            ext[key.upper()] = value.strip()
        self.pipelining = b"PIPELINING" in ext
        size = ext.get(b"SIZE", b"")
        self.size_limit = int(size) if size.isdigit() and len(size) < 20 else 0
        self.has_size = b"SIZE" in ext
        self.is_eight_bit = b"8BITMIME" in ext
        self.offers_starttls = b"STARTTLS" in ext

    def _after_hello(self) -> str:
        if not self.tls_active:
            if self.should_offer_tls and self.offers_starttls:
                return self._write((STARTTLS, b"STARTTLS"), STARTTLS_SENT)
            if self.require_tls:
                return self._end(TLS_FAILED, "the server does not offer STARTTLS")
        self.state = READY
        return SESSION_READY

    def tls_started(self) -> bytes:
        """The connection now speaks TLS: EHLO again (RFC 3207 §4.2)."""
        self.tls_active = True
        self._write((EHLO, b"EHLO " + self.identity), EHLO_SENT)
        return self.out

    # -- transactions ----------------------------------------------------

    def start(self, txn: Transaction) -> bytes:
        """Begin ``txn`` (state READY); returns what to write."""
        if self.state != READY:
            raise RuntimeError(f"a transaction cannot start in state {self.state!r}")
        self.txn = txn
        self.state = IN_TRANSACTION
        commands = txn.commands
        if self.needs_rset:
            commands.insert(0, _RSET_COMMAND)
        if not self.pipelining:
            self._next = 1
            self._write(commands[0], IN_TRANSACTION)
            return self.out
        self._next = len(commands)
        self.pending.extend(commands)
        self._unripe += len(commands)
        return b"\r\n".join([line for _, line in commands]) + b"\r\n"

    def _transaction_reply(self, txn: Transaction, kind: str, code: int, text: bytes) -> str:
        ok = 200 <= code < 300
        pipelined = self.pipelining
        if kind in (RCPT, MAIL):
            if pipelined:
                return WAIT
            if not ok and kind == MAIL:
                return self._done(txn)  # no RCPT after a refused MAIL
            if self._next < len(txn.commands) - 1 or txn.accepted:
                return self._write(txn.commands[self._next], IN_TRANSACTION, advance=True)
            return self._done(txn)  # nobody accepted: no DATA
        if kind == DATA:
            if code != 354:
                return self._done(txn)
            if txn.accepted and txn.mail_reply is not None and txn.mail_reply[0] < 300:
                self.state = SENDING_BODY
                return BODY
            # RFC 2920 §3.1: 354 although nobody was accepted: end the data at once.
            return self._write(DOT_COMMAND, IN_TRANSACTION)
        if kind in (DOT, TEST_RSET):
            return self._done(txn)
        # the RSET before the transaction
        if not ok:
            return self._end(REFUSED, "RSET " + _reply(code, text))
        if pipelined:
            return WAIT
        return self._write(txn.commands[self._next], IN_TRANSACTION, advance=True)

    def body_written(self) -> None:
        """Every byte of the body and the final "." went out (BODY): the next reply is its."""
        if self.state == SENDING_BODY and self.txn is not None:
            self.txn.body_written = True
            self.pending.append(DOT_COMMAND)
            self._unripe += 1
            self.state = IN_TRANSACTION

    def _done(self, txn: Transaction) -> str:
        if self.pending:
            return self._end(VIOLATION, "the transaction ended with commands unanswered")
        txn.finished = True
        self.txn = None
        self.needs_rset = not txn.is_clean
        self.transactions += 1
        self.state = READY
        return DONE

    # -- out and endings ---------------------------------------------------

    def _write(self, command: Command, state: str, *, advance: bool = False) -> str:
        if advance:
            self._next += 1
        self.pending.append(command)
        self._unripe += 1
        self.state = state
        self.out = command[1] + b"\r\n"
        return WRITE

    def quit(self) -> bytes:
        """Close politely; returns what to write (nothing once the session is over)."""
        if self.state == QUIT_SENT or self.ending == VIOLATION:
            return b""
        self.state = QUIT_SENT
        self.pending.clear()
        return b"QUIT\r\n"

    def _end(self, ending: str, reason: str) -> str:
        self.state = CLOSED
        self.ending = ending
        self.error = reason
        self.pending.clear()
        txn = self.txn
        if txn is not None:
            txn.failure = reason if ending != VIOLATION else "protocol error: " + reason
            txn.out_of_step = ending == VIOLATION
        return END

    def protocol_error(self, reason: str) -> str:
        """The connection found the peer at fault (an endless line): END, unless over."""
        if self.state == CLOSED or self.state == QUIT_SENT:
            return WAIT
        return self._end(VIOLATION, reason)

    def connection_lost(self, reason: str) -> None:
        """The connection closed or timed out: the session is over (if it was not already)."""
        if self.state == CLOSED:
            return
        txn, pending = self.txn, self.pending
        unsure = bool(pending) and pending[0][0] != DOT  # a 354 in step proves the rest
        self._end(LOST, reason)
        if txn is not None and self.pipelining and unsure:
            # Pipelined commands left unanswered: a reply may have been missing earlier
            # and every later one shifted onto the wrong command, so none decides.
            txn.out_of_step = True


def _reply(code: int, text: bytes) -> str:
    first = text.split(b"\n", 1)[0]
    return f"{code} {first.decode('utf-8', 'replace')}".rstrip()


def _show(line: bytes) -> str:
    return repr(line[:80])[1:]
