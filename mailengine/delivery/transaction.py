"""One SMTP mail transaction as a record: its commands, the replies they got, and
what each recipient's outcome is (pure).

The conversation itself (which reply answers which command, what to write
next) is ``session.Session``; this object only remembers. A recipient is
counted sent only with the proof of issue 9 item 2, checked in ``is_proven``:
its RCPT got 2xx, DATA got 354, the whole body and the final dot were written,
and the reply to the dot was 2xx. Everything else is deferred or failed with
the reply that caused it.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailengine.delivery.outcome import SENT, SOFT, RecipientResult, kind_of_code

# Command kinds; also the rows of session.REPLIES.
GREETING = "greeting"
EHLO = "EHLO"
HELO = "HELO"
STARTTLS = "STARTTLS"
RSET = "RSET"
MAIL = "MAIL"
RCPT = "RCPT"
DATA = "DATA"
DOT = "."  # the end of the data (RFC 5321 §4.1.1.4)
TEST_RSET = "RSET (test mode)"  # test mode's RSET in place of DATA
QUIT = "QUIT"

Command = tuple[str, bytes]  # (kind, line as written)
DOT_COMMAND: Command = (DOT, b".")


def _is_ok(reply: tuple[int, bytes] | None) -> bool:
    return reply is not None and 200 <= reply[0] < 300


class Transaction:
    """The commands of one transaction and the replies they got."""

    __slots__ = (
        "accepted",
        "body_written",
        "commands",
        "data_reply",
        "dialogue",
        "failure",
        "failure_code",
        "final_reply",
        "finished",
        "mail_reply",
        "out_of_step",
        "rcpt_replies",
        "recipients",
        "test_mode",
    )

    def __init__(
        self,
        sender: str,
        recipients: Sequence[str],
        *,
        test_mode: bool = False,
        mail_params: bytes = b"",
    ) -> None:
        self.recipients = recipients
        self.test_mode = test_mode
        commands: list[Command] = [(MAIL, b"MAIL FROM:<" + sender.encode() + b">" + mail_params)]
        for address in recipients:
            commands.append((RCPT, b"RCPT TO:<" + address.encode() + b">"))
        commands.append((TEST_RSET, b"RSET") if test_mode else (DATA, b"DATA"))
        self.commands = commands
        self.mail_reply: tuple[int, bytes] | None = None
        self.rcpt_replies: list[tuple[int, bytes]] = []
        self.data_reply: tuple[int, bytes] | None = None
        self.body_written = False  # every byte of the body and the final dot went out
        self.final_reply: tuple[int, bytes] | None = None
        self.finished = False  # the last reply the transaction expects came, in step
        self.accepted = 0  # RCPTs answered 2xx
        self.failure = ""  # why it stopped short (connection lost, 421, protocol error)
        self.failure_code = 0  # the reply code that stopped it (421), if one did
        self.out_of_step = False  # a protocol error: no reply of it decides anything
        # (command, code, reply) in order, for the transcript (rendered only when needed)
        self.dialogue: list[tuple[bytes, int, bytes]] = []

    @property
    def answered(self) -> bool:
        """The server has replied to at least one command of this transaction."""
        return bool(self.dialogue)

    @property
    def is_clean(self) -> bool:
        """The server's transaction state is reset: no RSET needed before the next."""
        return _is_ok(self.final_reply)  # the final dot's, or test mode's RSET's

    def record(self, kind: str, line: bytes, code: int, text: bytes) -> None:
        """An in-step reply to one of this transaction's commands."""
        self.dialogue.append((line, code, text))
        if kind == RCPT:
            self.rcpt_replies.append((code, text))
            if 200 <= code < 300:
                self.accepted += 1
        elif kind == MAIL:
            self.mail_reply = (code, text)
        elif kind == DATA:
            self.data_reply = (code, text)
        elif kind in (DOT, TEST_RSET):
            self.final_reply = (code, text)

    # -- results -------------------------------------------------------------

    def is_proven(self, index: int) -> bool:
        """Issue 9 item 2: recipient ``index`` was delivered, and every fact says so."""
        if self.out_of_step or not self.finished or not _is_ok(self.mail_reply):
            return False
        if index >= len(self.rcpt_replies) or not 200 <= self.rcpt_replies[index][0] < 300:
            return False
        if self.test_mode:
            return True  # test mode: an accepted RCPT is the delivery (manual §3)
        data = self.data_reply
        return (
            data is not None and data[0] == 354 and self.body_written and _is_ok(self.final_reply)
        )

    def results(
        self, transcript: Sequence[str] = (), failure: str = "", remote_mta: str = ""
    ) -> list[RecipientResult]:
        """Each recipient's outcome (once finished, or after the session ended).

        A protocol error defers every recipient (no reply that was out of step
        decides anything); otherwise a recipient without a deciding reply is
        deferred with ``failure``. Failures name ``remote_mta``.
        """
        failure = failure or self.failure
        out = []
        for i, address in enumerate(self.recipients):
            if self.is_proven(i):
                code, text = self._proving_reply(i)
                # The server's words of acceptance (queue id): the event log records them.
                reply = _reply_text(code, text) if code else ""
                out.append(RecipientResult(address, SENT, code, reply))
                continue
            code, text = (0, b"") if self.out_of_step else self._deciding_reply(i)
            kind = kind_of_code(code) if code else SOFT
            if kind == SENT:  # a 2xx that is not the proof: deferred, never sent
                kind, code, text = SOFT, 0, b""
            reply = _reply_text(code, text) if code else failure
            if not code and self.failure_code and not self.out_of_step:
                code = self.failure_code  # deferred by the server's 421
            out.append(RecipientResult(address, kind, code, reply, transcript, remote_mta))
        return out

    def _proving_reply(self, index: int) -> tuple[int, bytes]:
        """The reply that made recipient ``index`` sent: the dot's (test mode: its RCPT's)."""
        if self.test_mode:
            return self.rcpt_replies[index]
        return self.final_reply if self.final_reply is not None else (0, b"")

    def _deciding_reply(self, i: int) -> tuple[int, bytes]:
        """The in-step negative reply that decides recipient ``i``; (0, b"") when none."""
        mail = self.mail_reply
        if mail is None:
            return 0, b""
        if not 200 <= mail[0] < 300:
            return mail
        if i >= len(self.rcpt_replies):
            return 0, b""
        rcpt = self.rcpt_replies[i]
        if not 200 <= rcpt[0] < 300:
            return rcpt
        if self.test_mode:
            return 0, b""
        data = self.data_reply
        if data is not None and data[0] != 354:
            return data
        final = self.final_reply
        if final is not None and not 200 <= final[0] < 300 and self.body_written:
            return final
        return 0, b""


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
