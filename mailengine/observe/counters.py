"""Counters owned by one object; the rest of the engine reports to it (pure)."""

from __future__ import annotations

from collections import deque

import attrs

from mailengine.observe.books import Books

HISTORY_SECONDS = 3600


@attrs.frozen
class Interval:
    """What moved during one stats interval (for the stats lines and the dashboard)."""

    end: float
    elapsed: float
    recv_inbound: int
    recv_relay: int
    sent: int
    failed_hard: int
    failed_soft: int
    deferred: int


@attrs.define
class Counters:
    """Running totals and the counts of the current stats interval.

    ``sent`` counts recipients accepted by the receiving server; ``failed_*``
    count recipients that finally failed; ``deferred`` counts soft failures
    that will be retried. Those count the clients' mail only: the engine's own
    DSNs, reports and notices are counted apart (``own``). ``books`` follows
    every recipient from intake to its outcome (``observe.books``).
    """

    started: float
    recv_inbound: int = 0
    recv_relay: int = 0
    sent: int = 0
    failed_hard: int = 0
    failed_soft: int = 0
    deferred: int = 0
    rejected: int = 0
    total_recv: int = 0
    total_sent: int = 0
    total_failed_hard: int = 0
    total_failed_soft: int = 0
    total_deferred: int = 0
    total_rejected: int = 0
    dkim_signed: int = 0  # relay messages signed (issue 11)
    dkim_unsignable: int = 0  # relay messages sent unsigned because they could not be signed
    dkim_signed_in_engine: int = 0  # signed here: the DKIM signing process was unavailable
    interval_start: float = 0.0
    # Final failures and received bounces by bounce category, since start (/metrics).
    bounces: dict[str, int] = attrs.field(factory=dict)
    history: deque[Interval] = attrs.field(factory=lambda: deque(maxlen=4096))
    books: Books = attrs.field(factory=Books)
    # The engine's own mail (DSNs, delivery reports, notices): outcome -> recipients.
    own: dict[str, int] = attrs.field(
        factory=lambda: dict.fromkeys(("sent", "failed_hard", "failed_soft", "deferred"), 0)
    )

    def __attrs_post_init__(self) -> None:
        self.interval_start = self.started

    def received(self, kind: str, n: int = 1) -> None:
        """``kind`` is "inbound" (a local domain) or "relay"."""
        if kind == "inbound":
            self.recv_inbound += n
        else:
            self.recv_relay += n
        self.total_recv += n

    def received_message(self, *, relay: int, local: int) -> None:
        """One message acknowledged over SMTP with ``relay`` and ``local`` recipients.

        It counts once, as relay when any recipient travels on, else as inbound.
        """
        self.received("relay" if relay else "inbound")
        self.books.received += relay + local
        self.books.local += local

    def attempt_outcome(
        self, *, sent: int, failed_hard: int, failed_soft: int, deferred: int, own: bool
    ) -> None:
        """What one send attempt did to its recipients (``own``: the engine's own mail)."""
        books = self.books
        books.sent += sent
        books.failed_hard += failed_hard
        books.failed_soft += failed_soft
        if own:
            tally = self.own
            tally["sent"] += sent
            tally["failed_hard"] += failed_hard
            tally["failed_soft"] += failed_soft
            tally["deferred"] += deferred
            return
        if sent:
            self.delivered(sent)
        if failed_hard:
            self.failed(True, failed_hard)
        if failed_soft:
            self.failed(False, failed_soft)
        if deferred:
            self.deferred_once(deferred)

    def delivered(self, n: int = 1) -> None:
        self.sent += n
        self.total_sent += n

    def failed(self, hard: bool, n: int = 1) -> None:
        if hard:
            self.failed_hard += n
            self.total_failed_hard += n
        else:
            self.failed_soft += n
            self.total_failed_soft += n

    def deferred_once(self, n: int = 1) -> None:
        self.deferred += n
        self.total_deferred += n

    def bounced(self, category: str, n: int = 1) -> None:
        self.bounces[category] = self.bounces.get(category, 0) + n

    def refused(self, n: int = 1) -> None:
        self.rejected += n
        self.total_rejected += n

    def signing(self, *, signed: bool) -> None:
        if signed:
            self.dkim_signed += 1
        else:
            self.dkim_unsignable += 1

    def close_interval(self, now: float) -> Interval:
        """End the current interval, remember it for an hour, start the next."""
        iv = Interval(
            end=now,
            elapsed=now - self.interval_start,
            recv_inbound=self.recv_inbound,
            recv_relay=self.recv_relay,
            sent=self.sent,
            failed_hard=self.failed_hard,
            failed_soft=self.failed_soft,
            deferred=self.deferred,
        )
        self.recv_inbound = self.recv_relay = self.sent = 0
        self.failed_hard = self.failed_soft = self.deferred = self.rejected = 0
        self.interval_start = now
        self.history.append(iv)
        while self.history and self.history[0].end < now - HISTORY_SECONDS:
            self.history.popleft()
        return iv
