"""Counters owned by one object; the rest of the engine reports to it (pure)."""

from __future__ import annotations

from collections import deque

import attrs

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
    that will be retried.
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
    interval_start: float = 0.0
    history: deque[Interval] = attrs.field(factory=lambda: deque(maxlen=4096))

    def __attrs_post_init__(self) -> None:
        self.interval_start = self.started

    def received(self, kind: str, n: int = 1) -> None:
        """``kind`` is "inbound" (a local domain) or "relay"."""
        if kind == "inbound":
            self.recv_inbound += n
        else:
            self.recv_relay += n
        self.total_recv += n

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
