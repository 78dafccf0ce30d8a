"""The box's dashboard, API and /metrics picture: the workers' snapshots added to the
supervisor's (which counts the shared queue directories)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from mailengine.delivery.status import DomainStatus, HostStatus
from mailengine.observe.books import ENTRIES, Books
from mailengine.observe.counters import Interval
from mailengine.observe.recent import FinalFailure
from mailengine.scheduler.grants import ClusterView, NodeView, SharedReaction
from mailengine.web.snapshot import TOP_DESTINATIONS, QueueDepth, Snapshot, Totals

INTERVAL_FIELDS = ("recv_inbound", "recv_relay", "sent", "failed_hard", "failed_soft", "deferred")
TOTAL_FIELDS = (
    "received",
    "sent",
    "failed_hard",
    "failed_soft",
    "deferred",
    "rejected",
    "dkim_signed",
    "dkim_unsignable",
    "dkim_signed_in_engine",
)


def snapshot_data(snapshot: Snapshot) -> dict[str, Any]:
    """A worker's snapshot as JSON-ready data (over AMP)."""
    return attrs.asdict(snapshot, recurse=True)


def snapshot_from_data(data: dict[str, Any]) -> Snapshot:
    """The worker's snapshot back from ``snapshot_data``."""
    d = dict(data)
    d["intervals"] = tuple(Interval(**iv) for iv in d["intervals"])
    d["last_hour"] = Interval(**d["last_hour"])
    d["totals"] = Totals(**d["totals"])
    d["queue"] = QueueDepth(**d["queue"])
    d["hosts"] = tuple(HostStatus(**h) for h in d["hosts"])
    d["destinations"] = tuple(DomainStatus(**x) for x in d["destinations"])
    d["failures"] = tuple(FinalFailure(**f) for f in d["failures"])
    d["books"] = Books(**d["books"])
    d["destination_states"] = tuple(tuple(x) for x in d["destination_states"])
    d["rule_events"] = tuple(tuple(x) for x in d["rule_events"])
    if d.get("cluster") is not None:
        c = dict(d["cluster"])
        c["nodes"] = tuple(NodeView(**n) for n in c["nodes"])
        c["reactions"] = tuple(SharedReaction(**r) for r in c["reactions"])
        d["cluster"] = ClusterView(**c)
    return Snapshot(**d)


def _cluster(views: Sequence[ClusterView]) -> ClusterView | None:
    """The box in a Redis cluster ([cluster] redis_url: each worker a node of its own): the
    cluster as its workers see it, falling back when one does; their leases added up."""
    if not views:
        return None
    shown = next((v for v in views if not v.is_shared), views[0])
    return attrs.evolve(
        shown,
        node=", ".join(sorted(v.node for v in views)),
        leases=sum(v.leases for v in views),
    )


def _sum_intervals(a: Interval, b: Interval) -> Interval:
    fields = {f: getattr(a, f) + getattr(b, f) for f in INTERVAL_FIELDS}
    return Interval(end=max(a.end, b.end), elapsed=max(a.elapsed, b.elapsed), **fields)


def _sum_histories(histories: Iterable[Sequence[Interval]]) -> tuple[Interval, ...]:
    """The workers' stats intervals added up newest to newest (they close on the same
    cadence; a worker restarted later has fewer)."""
    out: list[Interval] = []
    for history in histories:
        for back, interval in enumerate(reversed(history)):
            if back < len(out):
                out[back] = _sum_intervals(out[back], interval)
            else:
                out.append(interval)
    return tuple(reversed(out))


def _hosts(snapshots: Sequence[Snapshot]) -> tuple[HostStatus, ...]:
    merged: dict[str, HostStatus] = {}
    for host in (h for s in snapshots for h in s.hosts):
        was = merged.get(host.host)
        if was is not None:
            host = attrs.evolve(
                host,
                open_connections=was.open_connections + host.open_connections,
                sent=was.sent + host.sent,
                failed=was.failed + host.failed,
                protocol_errors=was.protocol_errors + host.protocol_errors,
                last_error=host.last_error or was.last_error,
            )
        merged[host.host] = host
    return tuple(sorted(merged.values(), key=lambda h: -h.open_connections))


def _destinations(snapshots: Sequence[Snapshot]) -> tuple[DomainStatus, ...]:
    merged: dict[str, DomainStatus] = {}
    for dest in (d for s in snapshots for d in s.destinations):
        was = merged.get(dest.domain)
        if was is not None:
            unusual = was if was.state != "sending" else dest
            dest = attrs.evolve(
                unusual,
                queued_recipients=was.queued_recipients + dest.queued_recipients,
                oldest_seconds=max(was.oldest_seconds, dest.oldest_seconds),
                last_error=dest.last_error or was.last_error,
            )
        merged[dest.domain] = dest
    ranked = sorted(merged.values(), key=lambda d: -d.queued_recipients)
    return tuple(ranked[:TOP_DESTINATIONS])


def _counted(pairs: Iterable[tuple[Any, ...]]) -> tuple[tuple[Any, ...], ...]:
    """(key..., count) rows added up by key."""
    counts: Counter[tuple[Any, ...]] = Counter()
    for row in pairs:
        counts[tuple(row[:-1])] += int(row[-1])
    return tuple((*key, n) for key, n in sorted(counts.items()))


def _summed(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d)
    return dict(total)


def combine(own: Snapshot, workers: Sequence[Snapshot]) -> Snapshot:
    """The box: the supervisor's settings and directory counts, the workers' traffic,
    memory and connections added up. A message in retry/ is known to every worker, so
    ``indexed`` is the largest worker's, not the sum."""
    if not workers:
        return attrs.evolve(own, delivery_running=False)
    dirs = dict(own.queue.dirs)
    dirs["working"] = dirs.get("working", 0) + sum(s.queue.dirs.get("working", 0) for s in workers)
    totals = Totals(
        **{f: sum(getattr(s.totals, f) for s in workers) for f in TOTAL_FIELDS},
        bounces=_summed(s.totals.bounces for s in workers),
    )
    last_hour = workers[0].last_hour
    for s in workers[1:]:
        last_hour = _sum_intervals(last_hour, s.last_hour)
    books = Books(**{e: sum(getattr(s.books, e) for s in workers) for e in ENTRIES})
    failures = sorted((f for s in workers for f in s.failures), key=lambda f: -f.time)
    views = [s.cluster for s in workers if s.cluster is not None]
    return attrs.evolve(
        own,
        held_by_rate_cap=any(s.held_by_rate_cap for s in workers),
        delivery_running=any(s.delivery_running for s in workers),
        intervals=_sum_histories(s.intervals for s in workers),
        last_hour=last_hour,
        totals=totals,
        queue=QueueDepth(
            dirs=dirs,
            memory_messages=sum(s.queue.memory_messages for s in workers),
            memory_bytes=sum(s.queue.memory_bytes for s in workers),
            indexed=max(s.queue.indexed for s in workers),
        ),
        open_connections=sum(s.open_connections for s in workers),
        hosts=_hosts(workers),
        destinations=_destinations(workers),
        oldest_seconds=max(s.oldest_seconds for s in workers),
        failures=tuple(failures[:20]),
        books=books,
        books_queued=sum(s.books_queued for s in workers),
        own_mail=_summed(s.own_mail for s in workers),
        protocol_errors=sum(s.protocol_errors for s in workers),
        destination_states=_counted(r for s in workers for r in s.destination_states),
        rule_events=_counted(r for s in workers for r in s.rule_events),
        cluster=own.cluster if own.cluster is not None else _cluster(views),
    )
