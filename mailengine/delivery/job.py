"""A job: one message's recipients at one domain, on its way through the targets.

It carries what the connection needs (sender as sent, recipients, the body as
sent) and the transcript lines the manual's DSN shows, and reports its
recipients' outcomes once, to the attempt that made it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from mailengine.delivery.outcome import SENT, RecipientResult
from mailengine.delivery.plan import Hop
from mailengine.delivery.transaction import Transaction, render_dialogue


class Connection(Protocol):
    """What a job reads of the connection it starts on (``client.OutboundClient``)."""

    owner: Any
    opening_lines: tuple[str, ...]
    facts: tuple[str, str]  # (our address, TLS version or ""), read once per session


Finished = Callable[["Job", list[RecipientResult]], None]


class Job:
    __slots__ = (
        "body",
        "domain",
        "done",
        "egress_ip",
        "hop_index",
        "hops",
        "lines",
        "message_id",
        "mx_ip",
        "on_finished",
        "opening",
        "pool",
        "recipients",
        "remote_mta",
        "resends",
        "sender",
        "size",
        "started",
        "tls",
    )

    def __init__(
        self,
        message_id: str,
        domain: str,
        recipients: list[str],
        sender: str,
        body: bytes,
        on_finished: Finished,
    ) -> None:
        self.message_id = message_id
        self.domain = domain
        self.recipients = recipients
        self.sender = sender  # as sent in MAIL FROM (VERP applied)
        self.body = body  # dot-stuffed, CRLF, ending in CRLF; shared by the message's jobs
        self.size = len(body)
        self.on_finished = on_finished
        self.hops: Sequence[Hop] = ()
        self.hop_index = 0
        self.lines: list[str] = []
        self.opening: tuple[str, ...] = ()
        self.started = False  # a transaction began on a connection
        self.pool: Any = None  # the HostPool whose connection took it
        self.remote_mta = ""  # the host of the last session it started on
        self.mx_ip = ""  # ... its address, the engine's address, and TLS (event log)
        self.egress_ip = ""
        self.tls = ""
        self.done = False
        self.resends = 0  # sent again after a reused connection closed unanswered

    @property
    def hop(self) -> Hop:
        return self.hops[self.hop_index]

    def note(self, line: str) -> None:
        self.lines.append(line)

    def on_connection(self, client: Connection) -> None:
        """The job starts on ``client``: its greeting and EHLO belong to the transcript."""
        self.started = True
        self.pool = client.owner
        hop = self.hop
        self.remote_mta = hop.host
        self.mx_ip = hop.address
        self.egress_ip, self.tls = client.facts
        self.lines.append("<-- Connected to: " + hop.describe())
        self.opening = client.opening_lines

    def finish(self, txn: Transaction, failure: str = "") -> None:
        """Outcomes from the transaction's replies (``failure``: why it stopped short)."""
        results = txn.results(self.lines, failure, self.remote_mta)
        if any(r.kind != SENT for r in results):
            self.lines[len(self.lines) :] = [
                *self.opening,
                *render_dialogue(txn.dialogue),
                *([f"<-- {failure}"] if failure else []),
            ]
        self.finish_with(results)

    def finish_all(self, kind: str, reply: str, code: int = 0, status: str = "") -> None:
        """Every recipient gets the same outcome (DNS failure, no usable server, ...)."""
        if reply:
            self.lines.append("<-- " + reply)
        remote = self.remote_mta
        self.finish_with(
            [
                RecipientResult(a, kind, code, reply, self.lines, remote, status)
                for a in self.recipients
            ]
        )

    def finish_with(self, results: list[RecipientResult]) -> None:
        if self.done:
            return
        self.done = True
        self.on_finished(self, results)
