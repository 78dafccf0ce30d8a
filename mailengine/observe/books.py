"""The recipient books: every recipient the queue took in, and where each one went (pure).

Issue 9's promise made checkable: at any quiet moment

    received + generated + found = sent + failed_hard + failed_soft + local + removed + queued

``found`` is what appeared in ``retry/`` without passing through this run's
intake: at start-up everything left by the last run (the opening balance, so
the books balance after a restart or a crash without a counter file to lose),
later what other programs drop in or an operator releases from ``hold/``.
``removed`` is what an operator or another program took out of the queue
(deleted, held, or its file gone). The books count one run of the engine;
each run writes them to ``mailq/books.txt`` for ``mailengine queue audit``.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

BOOKS_FILE = "books.txt"  # in mailq/
IN = ("received", "generated", "found")
OUT = ("sent", "failed_hard", "failed_soft", "local", "removed")
ENTRIES = IN + OUT

MEANING = {
    "received": "recipients acknowledged over SMTP (250 after DATA)",
    "generated": "recipients of the engine's own DSNs, delivery reports and notices",
    "found": "recipients found in retry/ (left by an earlier run, or put there by others)",
    "sent": "accepted by the receiving server",
    "failed_hard": "failed for good with a 5xx (or a domain that does not exist)",
    "failed_soft": "failed soft for good: retries ran out",
    "local": "for local domains: kept in incoming/ (save_incoming) or dropped",
    "removed": "taken out of the queue by an operator or another program",
}


@attrs.define
class Books:
    """Running totals of recipients in and out of the queue since the start."""

    received: int = 0
    generated: int = 0
    found: int = 0
    sent: int = 0
    failed_hard: int = 0
    failed_soft: int = 0
    local: int = 0
    removed: int = 0

    @property
    def taken_in(self) -> int:
        return self.received + self.generated + self.found

    @property
    def given_out(self) -> int:
        return self.sent + self.failed_hard + self.failed_soft + self.local + self.removed

    @property
    def should_be_queued(self) -> int:
        """What the queue must still hold if no recipient was lost or counted twice."""
        return self.taken_in - self.given_out

    def unaccounted(self, queued: int) -> int:
        """0 when the books balance; above 0: recipients gone without an outcome."""
        return self.should_be_queued - queued

    def copy(self) -> Books:
        return attrs.evolve(self)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in ENTRIES}


def balance_line(books: Books, queued: int) -> str:
    """One line for the log: the equation with its numbers, and whether it holds."""
    left = " + ".join(f"{getattr(books, n)} {n}" for n in IN)
    right = " + ".join(f"{getattr(books, n)} {n}" for n in OUT)
    off = books.unaccounted(queued)
    verdict = "balanced" if off == 0 else f"NOT balanced: {off:+d} recipients unaccounted for"
    return f"books: {left} = {right} + {queued} queued: {verdict}"


def books_text(books: Books, *, queued: int, written_at: str, state: str) -> str:
    """``mailq/books.txt``: ``key=value`` lines (``state`` is running or stopped)."""
    lines = [f"state={state}", f"written={written_at}", f"queued={queued}"]
    lines += [f"{name}={value}" for name, value in books.as_dict().items()]
    return "\n".join(lines) + "\n"


def parse_books_text(text: str) -> tuple[Books, dict[str, str]]:
    """The books and the other fields (state, written, queued); ValueError if damaged."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    books = Books(**{name: _count(fields, name) for name in ENTRIES})
    return books, {k: v for k, v in fields.items() if k not in ENTRIES}


def _count(fields: Mapping[str, str], name: str) -> int:
    value = fields.get(name, "0")
    if not value.isdigit():
        raise ValueError(f"{name}={value!r} is not a count")
    return int(value)
