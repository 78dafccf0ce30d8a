"""The shared store of caps in Python: what the Lua scripts (``scripts.py``) do in Redis,
for the supervisor of worker processes on one box (issue 13 item 2). Pure: time in seconds
comes in as ``now``; the supervisor serves it to its workers over their AMP pipes.

The same answers as the scripts: connection leases under caps, kept while renewed; a
message rate as GCRA; the hourly cap as 60 minute buckets; the nodes alive; reactions
(the newest stamp wins); caps a lease was refused under lately ("contended").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from mailengine.cluster.book import fair_part
from mailengine.scheduler.grants import ClusterView, NodeView, SharedReaction

MINUTE = 60.0
HOURLY_BUCKETS = 60  # the last 60 minutes together hold at most the cap
RATE_KEPT_SECONDS = 1.0  # a rate's arrival time is kept this long after it has passed


@attrs.frozen
class Heard:
    """The answer to a heartbeat: nodes alive, reactions in force, contended caps."""

    nodes: dict[str, NodeView]
    reactions: list[SharedReaction]
    contended: frozenset[str]


REACTION_FIELDS = frozenset(f.name for f in attrs.fields(SharedReaction))


def reaction_from_data(raw: object) -> SharedReaction | None:
    """A reaction from its fields (``attrs.asdict``); None when they do not make one."""
    if not isinstance(raw, dict):
        return None
    try:
        return SharedReaction(**{k: v for k, v in raw.items() if k in REACTION_FIELDS})
    except TypeError:
        return None


def heard_data(heard: Heard) -> dict[str, Any]:
    """A heartbeat's answer as JSON-ready data (over a worker's pipe)."""
    return {
        "nodes": [attrs.astuple(n) for n in heard.nodes.values()],
        "reactions": [attrs.asdict(r) for r in heard.reactions],
        "contended": sorted(heard.contended),
    }


def heard_from_data(data: dict[str, Any]) -> Heard:
    nodes = [NodeView(str(n[0]), float(n[1]), int(n[2]), str(n[3])) for n in data["nodes"]]
    reactions = [reaction_from_data(r) for r in data["reactions"]]
    return Heard(
        {n.name: n for n in nodes},
        [r for r in reactions if r is not None],
        frozenset(map(str, data["contended"])),
    )


def node_of(lease_id: str) -> str:
    """The node that holds a lease (``book.ClusterBook`` names ids ``node|run|n``)."""
    return lease_id.partition("|")[0]


class CapStore:
    """Leases, rates, the hourly window, nodes and reactions of every node of one box."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, float]] = {}  # cap key -> lease id -> expiry
        self.nodes: dict[str, tuple[float, dict[str, object]]] = {}  # -> (last seen, info)
        self.reactions: dict[str, SharedReaction] = {}  # domain -> the newest
        self.contended: dict[str, float] = {}  # cap key -> until when it is wanted
        self.rates: dict[str, float] = {}  # domain -> GCRA theoretical arrival time
        self.hourly: dict[int, int] = {}  # minute number -> messages taken in it

    # -- connection leases ---------------------------------------------------

    def _held(self, key: str, now: float) -> dict[str, float]:
        held = self.leases.setdefault(key, {})
        for lease_id in [i for i, expiry in held.items() if expiry <= now]:
            del held[lease_id]
        return held

    def acquire(
        self,
        lease_id: str,
        caps: Sequence[tuple[str, int]],
        ttl: float,
        contended_seconds: float,
        now: float,
    ) -> bool:
        """One lease under every ``(cap key, limit)`` (limit 0: no cap), or False when one
        is full. A cap full to a node that holds less than its fair part of it is marked
        as contended (nodes over their part give some back); one full to a node that has
        its part already is not (nobody owes it anything, and nodes giving back and taking
        in turn would leave the cap partly unused)."""
        for key, limit in caps:
            held = self._held(key, now)
            if limit and lease_id not in held and len(held) >= limit:
                node = node_of(lease_id)
                mine = sum(1 for i in held if node_of(i) == node)
                if mine < fair_part(limit, len(self.nodes)):
                    self.contended[key] = now + contended_seconds
                return False
        for key, _ in caps:
            self.leases[key][lease_id] = now + ttl
        return True

    def release(self, lease_id: str, keys: Iterable[str]) -> None:
        for key in keys:
            held = self.leases.get(key)
            if held is not None:
                held.pop(lease_id, None)
                if not held:
                    del self.leases[key]

    def forget(self, node: str) -> int:
        """``node`` is gone for sure (its process ended): its leases go now, not at their
        expiry, and it leaves the node list. Returns the leases dropped."""
        self.leave(node)
        dropped: set[str] = set()
        for key in list(self.leases):
            held = self.leases[key]
            for lease_id in [i for i in held if node_of(i) == node]:
                del held[lease_id]
                dropped.add(lease_id)
            if not held:
                del self.leases[key]
        return len(dropped)

    # -- nodes, reactions ---------------------------------------------------------

    def heartbeat(
        self,
        node: str,
        info: dict[str, object],
        leases: Sequence[tuple[str, Sequence[str]]],
        node_ttl: float,
        lease_ttl: float,
        now: float,
    ) -> Heard:
        """``node`` is alive and holds ``leases`` (id, cap keys): renewed, or put back
        after it fell back; what has expired goes."""
        self.nodes[node] = (now, dict(info))
        for name in [n for n, (seen, _) in self.nodes.items() if seen <= now - node_ttl]:
            del self.nodes[name]
        for lease_id, keys in leases:
            for key in keys:
                self.leases.setdefault(key, {})[lease_id] = now + lease_ttl
        for domain in [d for d, r in self.reactions.items() if r.expires + node_ttl < now]:
            del self.reactions[domain]
        for key in [k for k, until in self.contended.items() if until <= now]:
            del self.contended[key]
        self._expire(now)
        return Heard(self.node_views(), list(self.reactions.values()), frozenset(self.contended))

    def _expire(self, now: float) -> None:
        for key in list(self.leases):
            if not self._held(key, now):
                del self.leases[key]
        for domain in [d for d, tat in self.rates.items() if tat + RATE_KEPT_SECONDS < now]:
            del self.rates[domain]
        oldest = math.floor(now / MINUTE) - HOURLY_BUCKETS
        for minute in [m for m in self.hourly if m <= oldest]:
            del self.hourly[minute]

    def node_views(self) -> dict[str, NodeView]:
        return {
            name: NodeView(
                name,
                seen,
                int(str(info.get("leases", 0))),
                str(info.get("mode", "")),
            )
            for name, (seen, info) in self.nodes.items()
        }

    def leave(self, node: str) -> None:
        """A stopping node leaves the list at once."""
        self.nodes.pop(node, None)

    def publish(self, reaction: SharedReaction) -> None:
        known = self.reactions.get(reaction.domain)
        if known is None or reaction.stamp >= known.stamp:
            self.reactions[reaction.domain] = reaction

    # -- message rates ------------------------------------------------------------

    def rate(
        self, domain: str, interval: float, tolerance: float, want: int, now: float
    ) -> tuple[int, float]:
        """GCRA: (tokens granted, seconds until one conforms when none is)."""
        tat = max(self.rates.get(domain, now), now)
        n = min(want, math.floor((now + tolerance - tat) / interval + 1e-9) + 1)
        if n < 1:
            return 0, tat - tolerance - now
        self.rates[domain] = tat + n * interval
        return n, 0.0

    # -- the hourly cap -------------------------------------------------------------

    def hourly_take(self, cap: int, want: int, now: float) -> tuple[int, int, float]:
        """(room granted, the minute it was taken in, seconds until the oldest minute
        with messages leaves the window when none is granted)."""
        minute = math.floor(now / MINUTE)
        window = range(minute - HOURLY_BUCKETS + 1, minute + 1)
        used = sum(self.hourly.get(m, 0) for m in window)
        n = min(want, cap - used)
        if n > 0:
            self.hourly[minute] = self.hourly.get(minute, 0) + n
            return n, minute, 0.0
        for m in window:
            if self.hourly.get(m, 0) > 0:
                return 0, minute, (m + HOURLY_BUCKETS) * MINUTE - now
        return 0, minute, 1.0

    def hourly_give_back(self, minute: int, count: int) -> int:
        """Room taken in ``minute`` and not used goes back."""
        held = self.hourly.get(minute, 0)
        back = min(held, count)
        if back > 0:
            self.hourly[minute] = held - back
        return back

    # -- the web admin ----------------------------------------------------------------

    def view(self, node: str, store: str, since: float, now: float) -> ClusterView:
        """The box's shared caps as the supervisor's dashboard and /metrics show them."""
        nodes = tuple(sorted(self.node_views().values(), key=lambda n: n.name))
        return ClusterView(
            node=node,
            store=store,
            is_shared=True,
            since=since,
            node_count=max(1, len(nodes)),
            nodes=nodes,
            leases=len({i for held in self.leases.values() for i in held}),
            reactions=tuple(
                r
                for _, r in sorted(self.reactions.items())
                if r.expires > now and (r.suspended_until > now or r.throttle_rate)
            ),
        )
