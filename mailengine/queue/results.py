"""What became of each recipient in one send attempt: values the delivery engine makes
and the reports render (pure; manual §3: 2xx sent, 5xx hard, the rest soft)."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

SENT = "sent"
HARD = "hard"
SOFT = "soft"
UNTRIED = "untried"  # never offered to a server (engine stopping): no attempt counted


def kind_of_code(code: int) -> str:
    """The outcome a reply code means for a recipient."""
    if 200 <= code < 300:
        return SENT
    if 500 <= code < 600:
        return HARD
    return SOFT


@attrs.define(slots=True)
class RecipientResult:
    """One recipient's outcome; ``transcript`` is the session (shared by a transaction).

    Failures also carry ``remote_mta`` (the server that answered, "" when none did)
    and ``status`` (an RFC 3463 code when the engine knows better than the reply,
    e.g. for DNS failures) for the DSN.
    """

    address: str
    kind: str
    code: int = 0
    reply: str = ""
    transcript: Sequence[str] = ()
    remote_mta: str = ""
    status: str = ""
    category: str = ""  # a bounce category (reports.categories) of a failure, set later


@attrs.define
class AttemptSummary:
    """What one attempt did, for counters, logs, DSNs and reports."""

    tries: int
    sent: list[RecipientResult] = attrs.field(factory=list)
    hard: list[RecipientResult] = attrs.field(factory=list)
    soft_retry: list[RecipientResult] = attrs.field(factory=list)
    soft_final: list[RecipientResult] = attrs.field(factory=list)
    untried: list[str] = attrs.field(factory=list)
    done: bool = False
    counted: bool = True  # False when nothing was offered to any server

    @property
    def final_failures(self) -> list[RecipientResult]:
        return self.hard + self.soft_final
