"""One SMTP mail transaction as a state machine: commands out, replies in (pure).

The Twisted client (``client.py``) owns the connection and the greeting/EHLO/
STARTTLS phase (twisted.mail's ESMTPClient); this object owns what follows for
one message at one domain: ``[RSET] MAIL RCPT... DATA`` written at once when
the server offers PIPELINING (RFC 2920), one at a time otherwise; the body;
and which outcome each recipient gets. Test mode sends RSET instead of DATA.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailengine.delivery.outcome import SENT, SOFT, RecipientResult, kind_of_code

# What the connection must do after a reply.
WAIT = "wait"  # nothing yet: more replies are due
WRITE = "write"  # write ``pending_lines`` (non-pipelined: the next command)
BODY = "body"  # DATA got 354: send the message body and its terminating "."
END_EMPTY = "end-empty"  # 354 although no recipient was accepted: send "." alone
DONE = "done"  # the transaction is over: read ``results()``

_RSET_FIRST, _MAIL, _RCPT, _DATA, _TEST_RSET, _FINAL = range(6)


class Transaction:
    """Commands of one transaction and the replies they got."""

    __slots__ = (
        "_next_reply",
        "_next_send",
        "accepted",
        "commands",
        "data_reply",
        "dialogue",
        "final_reply",
        "mail_reply",
        "pending_lines",
        "pipelining",
        "rcpt_replies",
        "recipients",
        "test_mode",
    )

    @property
    def answered(self) -> bool:
        """The server has replied to at least one command of this transaction."""
        return self._next_reply > 0

    def __init__(
        self,
        sender: str,
        recipients: Sequence[str],
        *,
        pipelining: bool,
        test_mode: bool = False,
        mail_params: bytes = b"",
        reset_first: bool = False,
    ) -> None:
        self.recipients = recipients
        self.pipelining = pipelining
        self.test_mode = test_mode
        commands: list[tuple[int, bytes]] = []
        if reset_first:
            commands.append((_RSET_FIRST, b"RSET"))
        commands.append((_MAIL, b"MAIL FROM:<" + sender.encode() + b">" + mail_params))
        for address in recipients:
            commands.append((_RCPT, b"RCPT TO:<" + address.encode() + b">"))
        commands.append((_TEST_RSET, b"RSET") if test_mode else (_DATA, b"DATA"))
        self.commands = commands
        self._next_send = 0
        self._next_reply = 0
        self.pending_lines: list[bytes] = []
        self.mail_reply: tuple[int, bytes] | None = None
        self.rcpt_replies: list[tuple[int, bytes]] = []
        self.data_reply: tuple[int, bytes] | None = None
        self.final_reply: tuple[int, bytes] | None = None
        self.accepted = 0
        # (command, code, reply) in order, for the transcript (rendered only when needed)
        self.dialogue: list[tuple[bytes, int, bytes]] = []

    # -- out -----------------------------------------------------------------

    def start(self) -> bytes:
        """What to write first: every command when pipelining, else the first."""
        if self.pipelining:
            self._next_send = len(self.commands)
            return b"\r\n".join(line for _, line in self.commands) + b"\r\n"
        self._next_send = 1
        return self.commands[0][1] + b"\r\n"

    def _send_next(self) -> str:
        self.pending_lines = [self.commands[self._next_send][1]]
        self._next_send += 1
        return WRITE

    @property
    def is_clean(self) -> bool:
        """True when the server's transaction state is reset (no RSET needed before the next)."""
        if self.test_mode:
            return self._next_reply >= len(self.commands)
        return self.final_reply is not None and 200 <= self.final_reply[0] < 300

    # -- in ------------------------------------------------------------------

    def reply(self, code: int, text: bytes) -> str:
        """Feed the next reply; returns WAIT, WRITE, BODY, END_EMPTY or DONE."""
        if self._next_reply >= len(self.commands):
            self.final_reply = (code, text)
            self.dialogue.append((b".", code, text))
            return DONE
        role, line = self.commands[self._next_reply]
        self._next_reply += 1
        self.dialogue.append((line, code, text))
        ok = 200 <= code < 300
        if role == _RSET_FIRST:
            return WAIT if self.pipelining else self._send_next()
        if role == _MAIL:
            self.mail_reply = (code, text)
            if ok:
                return WAIT if self.pipelining else self._send_next()
            return WAIT if self.pipelining else DONE
        if role == _RCPT:
            self.rcpt_replies.append((code, text))
            if ok:
                self.accepted += 1
            if self.pipelining:
                return WAIT
            if self._next_send < len(self.commands) - 1:
                return self._send_next()  # the next RCPT
            return self._send_next() if self.accepted else DONE  # DATA (or RSET)
        if role == _TEST_RSET:
            return DONE
        # DATA
        self.data_reply = (code, text)
        if code != 354:
            return DONE
        if self.accepted and self.mail_reply is not None and self.mail_reply[0] < 300:
            return BODY
        return END_EMPTY

    # -- results -------------------------------------------------------------

    def results(
        self, transcript: Sequence[str] = (), failure: str = "", remote_mta: str = ""
    ) -> list[RecipientResult]:
        """Each recipient's outcome (call once DONE, or after the connection failed).

        Recipients without a reply that decides them get a soft outcome with
        ``failure`` (timeout, lost connection) as the reason. Failures name
        ``remote_mta``, the server of the session.
        """
        out = []
        mail = self.mail_reply
        for i, address in enumerate(self.recipients):
            if mail is None or not 200 <= mail[0] < 300:
                code, text = mail if mail is not None else (0, b"")
            elif i >= len(self.rcpt_replies):
                code, text = 0, b""
            else:
                code, text = self.rcpt_replies[i]
                if 200 <= code < 300 and not self.test_mode:
                    if self.data_reply is not None and self.data_reply[0] != 354:
                        code, text = self.data_reply
                    elif self.final_reply is not None:
                        code, text = self.final_reply
                    else:
                        code, text = 0, b""
            if code == 0:
                out.append(RecipientResult(address, SOFT, 0, failure, transcript, remote_mta))
                continue
            kind = kind_of_code(code)
            if kind == SENT:
                out.append(RecipientResult(address, SENT, code))
            else:
                reply = _reply_text(code, text)
                out.append(RecipientResult(address, kind, code, reply, transcript, remote_mta))
        return out


def _reply_text(code: int, text: bytes) -> str:
    return f"{code} {text.decode('utf-8', 'replace')}".replace("\n", f" / {code} ")


def render_dialogue(dialogue: Sequence[tuple[bytes, int, bytes]]) -> list[str]:
    """The manual's transcript lines for a transaction: ``--> command``, ``<-- reply``."""
    lines = []
    for command, code, text in dialogue:
        lines.append("--> " + command.decode("utf-8", "replace"))
        for part in text.split(b"\n") or [b""]:
            lines.append(f"<-- {code} " + part.decode("utf-8", "replace"))
    return lines
