"""One picture of the running engine for the dashboard, ``/api/status`` and ``/metrics``.

Counters and the queue index come from memory; directory counts come from
the file system (counted in a worker thread by the caller); open connections
and per-destination errors from the delivery engine when it runs, otherwise
destinations are computed from the queue index.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from mailengine import __version__
from mailengine.delivery.status import DeliveryStatus, DomainStatus, HostStatus
from mailengine.observe.books import Books
from mailengine.observe.counters import HISTORY_SECONDS, Interval
from mailengine.observe.recent import FinalFailure
from mailengine.observe.statslines import per_hour
from mailengine.queue.envelope import Envelope
from mailengine.queue.live import LiveQueue
from mailengine.queue.shape import DomainShape, queue_shape
from mailengine.queue.store import DIRS, QueueStore
from mailengine.scheduler.grants import ClusterView
from mailengine.web.inmemory import RunBlocking
from mailengine.web.running import Running, SnapshotParts

log = Logger(namespace="mailengine.web")
TOP_DESTINATIONS = 20


@attrs.frozen
class Totals:
    received: int
    sent: int
    failed_hard: int
    failed_soft: int
    deferred: int
    rejected: int
    dkim_signed: int = 0
    dkim_unsignable: int = 0
    dkim_signed_in_engine: int = 0
    bounces: dict[str, int] = attrs.field(factory=dict)  # by bounce category


@attrs.frozen
class QueueDepth:
    """Messages per mailq/ directory (files) and held in memory."""

    dirs: dict[str, int]
    memory_messages: int
    memory_bytes: int
    indexed: int  # messages the engine knows (memory, working/, retry/ index)


@attrs.frozen
class Snapshot:
    now: float
    started: float
    hostname: str
    version: str
    test_mode: bool
    paused: bool
    held_by_rate_cap: bool
    rate_cap: int  # [smtp_out] max_messages_per_hour (0: none)
    delivery_running: bool
    stats_interval_seconds: int
    intervals: tuple[Interval, ...]  # the last hour, oldest first
    last_hour: Interval  # the last hour summed (elapsed: how much of it the engine ran)
    totals: Totals
    queue: QueueDepth
    open_connections: int
    hosts: tuple[HostStatus, ...]
    destinations: tuple[DomainStatus, ...]
    oldest_seconds: float
    failures: tuple[FinalFailure, ...]
    # The recipient books and the queue they should match, taken together a moment ago.
    books: Books = attrs.field(factory=Books)
    books_queued: int = 0
    own_mail: dict[str, int] = attrs.field(factory=dict)  # the engine's DSNs and reports
    protocol_errors: int = 0  # outbound sessions ended by a server out of step
    destination_states: tuple[tuple[str, int], ...] = ()  # traffic shaping: (state, count)
    rule_events: tuple[tuple[str, str, int], ...] = ()  # (rule, event, count) since start
    cluster: ClusterView | None = None  # caps shared through [cluster] redis_url

    @property
    def uptime_seconds(self) -> float:
        return max(0.0, self.now - self.started)

    @property
    def received_last_hour(self) -> int:
        return self.last_hour.recv_inbound + self.last_hour.recv_relay

    def per_hour(self, n: int) -> int:
        """A last-hour count as the stats line's hourly average."""
        return per_hour(n, self.last_hour.elapsed)


def count_dirs(store: QueueStore) -> dict[str, int]:
    """``.inf`` files per directory, by name only (no stat per file: cheap on big queues)."""
    counts: dict[str, int] = {}
    for name in DIRS:
        n = 0
        try:
            with os.scandir(store.dir(name)) as entries:
                for entry in entries:
                    if entry.name.endswith(".inf") and not entry.name.startswith("."):
                        n += 1
        except FileNotFoundError:
            pass
        counts[name] = n
    return counts


@attrs.frozen
class QueueShape:
    """Per-domain shapes worked out at ``at``; ages are brought up to date when read."""

    domains: list[DomainShape]
    oldest_created: float | None  # of the oldest message (None: no message)
    at: float
    queued_recipients: int = 0  # every message's rcpttosend, summed
    books: Books | None = None  # the recipient books at the same moment

    def oldest_seconds(self, now: float) -> float:
        return 0.0 if self.oldest_created is None else max(0.0, now - self.oldest_created)

    def domains_at(self, now: float) -> list[DomainShape]:
        later = max(0.0, now - self.at)
        if not later:
            return self.domains
        return [attrs.evolve(d, oldest_seconds=d.oldest_seconds + later) for d in self.domains]


EMPTY_SHAPE = QueueShape([], None, 0.0)


def shape_of(envelopes: list[Envelope], now: float, books: Books | None = None) -> QueueShape:
    shapes = queue_shape(envelopes, now)
    oldest = min((e.time_created for e in envelopes), default=None)
    queued = sum(len(e.rcpt_to_send) for e in envelopes)
    return QueueShape(shapes, oldest, now, queued, books)


class LiveShape:
    """The queue index's shape per domain, worked out in a worker thread and kept a while.

    Walking every known message costs about a second per million recipients
    (bench/web_dashboard.py); a dashboard refreshing every few seconds and a
    Prometheus scrape must not stall the reactor for it. The reactor thread
    only copies the list of envelopes; a stale answer is served while a fresh
    one is worked out, and the answer is kept longer the longer it took.
    """

    def __init__(self, queue: LiveQueue, run_blocking: RunBlocking, max_age: float = 5.0) -> None:
        self.queue = queue
        self.run_blocking = run_blocking
        self.max_age = max_age
        self._result: QueueShape | None = None
        self._at = 0.0
        self._cost = 0.0
        self._running = False
        self._waiters: list[defer.Deferred] = []

    def _fresh(self, now: float) -> bool:
        return 0 <= now - self._at < max(self.max_age, 20 * self._cost)

    async def get(self, now: float) -> QueueShape:
        if self._result is not None and self._fresh(now):
            return self._result
        if not self._running:
            self._start(now)
        if self._result is not None:
            return self._result  # a little stale; the fresh one is on its way
        waiter: defer.Deferred = defer.Deferred()
        self._waiters.append(waiter)
        result: QueueShape = await waiter
        return result

    def _start(self, now: float) -> None:
        envelopes = [m.envelope for m in list(self.queue.messages.values())]
        books = self.queue.counters.books.copy()  # taken with the envelopes: they agree
        self._running = True

        def work() -> tuple[QueueShape, float]:
            started = time.perf_counter()
            return shape_of(envelopes, now, books), time.perf_counter() - started

        d = self.run_blocking(work)
        d.addCallbacks(self._done, self._failed, callbackArgs=(now,))

    def _done(self, outcome: tuple[QueueShape, float], now: float) -> None:
        self._result, self._cost = outcome
        self._at = now
        self._running = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(self._result)

    def _failed(self, failure: Any) -> None:
        self._running = False
        log.failure("working out the queue's shape failed", failure)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(EMPTY_SHAPE)


def last_hour(engine: SnapshotParts, now: float) -> tuple[tuple[Interval, ...], Interval]:
    """Closed intervals of the last hour, and their sum plus the open interval's counts
    (so the numbers move even with the stats lines off)."""
    c = engine.counters
    intervals = tuple(iv for iv in c.history if iv.end > now - HISTORY_SECONDS)
    span = sum(iv.elapsed for iv in intervals) + max(0.0, now - c.interval_start)
    total = Interval(
        end=now,
        elapsed=min(span, HISTORY_SECONDS),
        recv_inbound=sum(iv.recv_inbound for iv in intervals) + c.recv_inbound,
        recv_relay=sum(iv.recv_relay for iv in intervals) + c.recv_relay,
        sent=sum(iv.sent for iv in intervals) + c.sent,
        failed_hard=sum(iv.failed_hard for iv in intervals) + c.failed_hard,
        failed_soft=sum(iv.failed_soft for iv in intervals) + c.failed_soft,
        deferred=sum(iv.deferred for iv in intervals) + c.deferred,
    )
    return intervals, total


def delivery_status(running: Running, now: float, top: int) -> DeliveryStatus | None:
    delivery = running.delivery
    if delivery is None or not hasattr(delivery, "status"):
        return None
    try:
        status = delivery.status(now, top)
    except Exception:
        log.failure("the delivery engine's status() failed; showing the queue index instead")
        return None
    return status if isinstance(status, DeliveryStatus) else None


class DeliveryView:
    """The delivery engine's status, asked for at most once per 20 times what it costs.

    ``status()`` no longer walks the queue (its counts are kept as messages come and
    go, queue/tally.py), but it still ranks every destination and connection pool:
    tens of thousands of them cost milliseconds, and a dashboard and a Prometheus
    scrape may ask often. A cheap answer is never reused; a reused one has its ages
    brought up to date.
    """

    def __init__(
        self,
        engine: SnapshotParts,
        running: Running,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.engine = engine
        self.running = running
        self.timer = timer
        self._status: DeliveryStatus | None = None
        self._at = 0.0
        self._cost = 0.0

    def get(self, now: float, top: int) -> DeliveryStatus | None:
        cached = self._status
        if cached is not None and self._cost >= 0.005 and 0 <= now - self._at < 20 * self._cost:
            later = now - self._at
            return attrs.evolve(
                cached,
                paused=bool(self.engine.config.smtp_out.paused),
                domains=tuple(
                    attrs.evolve(d, oldest_seconds=d.oldest_seconds + later) for d in cached.domains
                ),
            )
        started = self.timer()
        status = delivery_status(self.running, now, top)
        self._cost = self.timer() - started
        self._status, self._at = status, now
        return status


def to_domain_status(shape: DomainShape) -> DomainStatus:
    return DomainStatus(shape.domain, shape.recipients, shape.oldest_seconds, shape.last_note)


def take_snapshot(
    engine: SnapshotParts,
    now: float,
    dir_counts: dict[str, int],
    shape: QueueShape | None,
    delivery: DeliveryView,
    top: int = TOP_DESTINATIONS,
) -> Snapshot:
    """Everything the pages show; ``dir_counts`` and ``shape`` were worked out off the
    reactor. Without a shape (the delivery engine runs) the queue's own tallies give the
    oldest message and the queued recipients: no walk of the queue."""
    c = engine.counters
    intervals, traffic = last_hour(engine, now)
    status = delivery.get(now, top)
    queue = engine.queue
    if status is not None and status.domains:
        destinations = tuple(status.domains[:top])
    elif shape is not None:
        destinations = tuple(to_domain_status(s) for s in shape.domains_at(now)[:top])
    else:
        destinations = tuple(
            DomainStatus(d.domain, d.recipients, max(0.0, now - d.oldest_created))
            for d in queue.top_destinations(top)
        )
    if shape is None:
        oldest = queue.oldest_created()
        shape = QueueShape([], oldest, now, queue.queued_recipients(), c.books.copy())
    return Snapshot(
        now=now,
        started=c.started,
        hostname=engine.name,
        version=__version__,
        test_mode=engine.test_mode,
        paused=bool(engine.config.smtp_out.paused),
        held_by_rate_cap=bool(status is not None and status.held_by_rate_cap),
        rate_cap=int(engine.config.smtp_out.max_messages_per_hour),
        delivery_running=status is not None,
        stats_interval_seconds=int(engine.config.logs.stats_interval_seconds),
        intervals=intervals,
        last_hour=traffic,
        totals=Totals(
            received=c.total_recv,
            sent=c.total_sent,
            failed_hard=c.total_failed_hard,
            failed_soft=c.total_failed_soft,
            deferred=c.total_deferred,
            rejected=c.total_rejected,
            dkim_signed=c.dkim_signed,
            dkim_unsignable=c.dkim_unsignable,
            dkim_signed_in_engine=c.dkim_signed_in_engine,
            bounces=dict(c.bounces),
        ),
        queue=QueueDepth(
            dirs=dict(dir_counts),
            memory_messages=queue.memory_count,
            memory_bytes=queue.memory_bytes,
            indexed=queue.indexed_count,
        ),
        open_connections=status.open_connections if status is not None else 0,
        hosts=tuple(sorted(status.hosts, key=lambda h: -h.open_connections))
        if status is not None
        else (),
        destinations=destinations,
        oldest_seconds=shape.oldest_seconds(now),
        failures=tuple(engine.recent_failures.latest(20)),
        books=shape.books or c.books.copy(),
        books_queued=shape.queued_recipients if shape.books else queue.queued_recipients(),
        own_mail=dict(c.own),
        protocol_errors=status.protocol_errors if status is not None else 0,
        destination_states=status.destination_states if status is not None else (),
        rule_events=status.rule_events if status is not None else (),
        cluster=status.cluster if status is not None else None,
    )


def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot as JSON-ready data (``/api/status``)."""
    data = attrs.asdict(snapshot, recurse=True)
    data["intervals"] = [attrs.asdict(iv) for iv in snapshot.intervals]
    data["uptime_seconds"] = snapshot.uptime_seconds
    received = snapshot.received_last_hour
    data["last_hour"]["received"] = received
    data["last_hour"]["received_per_hour"] = snapshot.per_hour(received)
    data["last_hour"]["sent_per_hour"] = snapshot.per_hour(snapshot.last_hour.sent)
    return data
