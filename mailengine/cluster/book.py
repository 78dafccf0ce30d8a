"""What one node holds of the cluster's shared caps, and what it decides alone (pure).

Shared mode: connection leases, message-rate tokens and hourly room come from the
shared store (Redis) in small batches; this book keeps what was granted and says when
to ask for more. Fallback mode (the store unreachable): each cap is cut to this
node's share, cap ÷ the nodes last seen, and decided here. Time comes in as ``now``.
"""

from __future__ import annotations

import math

import attrs

from mailengine.scheduler.caps import hourly_message_cap
from mailengine.scheduler.grants import (
    WHEN_TOLD,
    Cap,
    ClusterView,
    Lease,
    NodeView,
    SharedReaction,
)

SHARED, FALLBACK = "shared", "fallback"
LEASE_TTL_SECONDS = 10.0  # a dead node's connection leases expire this long after its last renewal
# A closed connection's lease is given back this much later: the receiver counts the
# connection until it has read our QUIT and closed its side, and another node's new
# connection must not overlap it there.
LEASE_LINGER_SECONDS = 0.25
HEARTBEAT_SECONDS = 1.0  # renew leases, say "alive", read the nodes and reactions
CONTENDED_SECONDS = 2.0  # a refused lease marks its cap as wanted by other nodes this long
# When the nodes' fair parts of a cap add up to more than the cap (3 nodes, a cap of 2:
# a part of 1 each), a node may wait below its part while every other holds just its
# own: then each holder ends one connection this often ...
ROTATE_SECONDS = 2.0
YIELD_SECONDS = 1.0  # ... and asks for none under that cap this long (the waiter's turn)
NODE_TTL_SECONDS = 10.0  # a node not heard from this long is no longer counted
BATCH_SECONDS = 1.0  # a rate batch is about this much of the rate's time ...
MAX_RATE_BATCH = 50  # ... and never more tokens than this
STALE_SECONDS = 5.0  # unused rate tokens older than this are dropped
IDLE_ROOM_SECONDS = 1.0  # hourly room unused this long goes back (the node has nothing due)
HOURLY_BATCHES = 10  # a node asks for about 1/(10 x nodes) of the hourly cap at a time
MAX_HOURLY_BATCH = 100
RETRY_SECONDS = 0.5  # asked again after a "none left" without a better time ...
MAX_RETRY_SECONDS = 1.0  # ... and at least this often (room given back by another node)
PACE_SLACK_SECONDS = 1.0  # a locally paced (fallback) destination may catch up this much


def share(limit: int, nodes: int) -> int:
    """This node's share of ``limit`` among ``nodes`` (at least 1; 0 stays "no cap")."""
    if limit <= 0:
        return 0
    return max(1, limit // max(1, nodes))


def fair_part(limit: int, nodes: int) -> int:
    """A node's fair part of a shared ``limit`` among ``nodes``, rounded up so that the
    parts cover the whole cap (3 among 2: 2 and 1; the parts may add up to more)."""
    return math.ceil(limit / max(1, nodes))


def rate_batch(per_minute: float, nodes: int) -> int:
    """Tokens asked for at once: about BATCH_SECONDS of this node's part of the rate."""
    per_node_second = per_minute / 60.0 / max(1, nodes)
    return max(1, min(MAX_RATE_BATCH, math.ceil(per_node_second * BATCH_SECONDS)))


def hourly_batch(cap: int, nodes: int) -> int:
    """Hourly room asked for at once: a small part of the cap, so that nodes share it."""
    return max(1, min(MAX_HOURLY_BATCH, cap // (HOURLY_BATCHES * max(1, nodes))))


def retry_after(wait_seconds: float) -> float:
    """When to ask again after "none left": when the store says, but not later than
    MAX_RETRY_SECONDS (another node may give back what it holds unused)."""
    return min(MAX_RETRY_SECONDS, wait_seconds) if wait_seconds > 0 else RETRY_SECONDS


@attrs.define
class Stash:
    """Units granted and not yet used; whether more are asked for; when to ask again."""

    tokens: int = 0
    since: float = 0.0  # the last grant or use
    asking: bool = False
    retry_at: float = 0.0
    bucket: int = 0  # hourly: the window bucket the room came from (given back there)

    def ask(self, batch: int, now: float) -> int:
        """A batch to ask for now (marked as asking), or 0: one is out, the store said
        to wait, or more than half a batch is still held."""
        if self.asking or now < self.retry_at or self.tokens > batch // 2:
            return 0
        self.asking = True
        return batch


class ClusterBook:
    """This node's leases, batches, mode and view of the other nodes."""

    def __init__(self, node: str, now: float, mode: str = SHARED) -> None:
        self.node = node
        self.mode = mode
        self.mode_since = now
        self.problem = ""  # why the store is unreachable
        self.nodes: dict[str, NodeView] = {}
        self.last_nodes = 1  # nodes counted when the store was last reached
        self.leases: dict[str, Lease] = {}
        self.held: dict[str, int] = {}  # cap key -> leases this node holds under it
        self.contended: set[str] = set()  # cap keys another node was refused a lease under
        self.rotated: dict[str, float] = {}  # cap key -> when a connection under it last ended
        self.yielding: dict[str, float] = {}  # cap key -> no lease asked under it until then
        self._next_lease = 0
        # Lease ids name the node and this run of it: a restarted node's ids never meet
        # the leases its previous run left to expire.
        self._lease_prefix = f"{node}|{int(now * 1000) % (1 << 32):x}|"
        self.rates: dict[str, Stash] = {}
        self.hourly = Stash()
        self.paced: dict[str, float] = {}  # fallback: domain -> next message not before
        self.local_hourly = hourly_message_cap()
        self.reactions: dict[str, SharedReaction] = {}  # domain -> the newest known

    # -- nodes and mode ----------------------------------------------------

    @property
    def is_shared(self) -> bool:
        return self.mode == SHARED

    def node_count(self) -> int:
        """Nodes sharing the caps: as seen now, or as last seen while falling back."""
        if self.is_shared:
            return max(1, len(self.nodes))
        return max(1, self.last_nodes)

    def unreachable(self, problem: str, now: float) -> bool:
        """The store did not answer: fall back to local shares. True when this is news."""
        self.problem = problem
        if not self.is_shared:
            return False
        self.last_nodes = max(1, len(self.nodes))
        self.mode, self.mode_since = FALLBACK, now
        for stash in self.rates.values():
            stash.tokens, stash.asking = 0, False
        self.hourly = Stash()
        self.paced.clear()
        return True

    def reachable(self, now: float) -> bool:
        """The store answered again: caps are shared again. True when this is news."""
        if self.is_shared:
            return False
        self.mode, self.mode_since, self.problem = SHARED, now, ""
        self.rates.clear()
        self.hourly = Stash()
        return True

    def heard(self, nodes: dict[str, NodeView]) -> None:
        """The nodes alive as the store lists them (this one included)."""
        self.nodes = dict(nodes)
        self.last_nodes = max(1, len(self.nodes))

    def info(self) -> dict[str, object]:
        """What this node says of itself on every heartbeat."""
        return {"leases": len(self.leases), "mode": self.mode}

    def view(self, now: float, redis_url: str) -> ClusterView:
        return ClusterView(
            node=self.node,
            store=redis_url,
            is_shared=self.is_shared,
            since=self.mode_since,
            problem=self.problem,
            node_count=self.node_count(),
            nodes=tuple(sorted(self.nodes.values(), key=lambda n: n.name)),
            leases=len(self.leases),
            reactions=tuple(
                r
                for _, r in sorted(self.reactions.items())
                if r.expires > now and (r.suspended_until > now or r.throttle_rate)
            ),
        )

    # -- reactions -----------------------------------------------------------

    def published(self, reaction: SharedReaction) -> None:
        """This node decided ``reaction`` (it is not applied again when read back)."""
        self.reactions[reaction.domain] = reaction

    def news(self, reactions: list[SharedReaction]) -> list[SharedReaction]:
        """Of the reactions the store lists, those newer than what this node applied."""
        fresh = []
        for reaction in reactions:
            known = self.reactions.get(reaction.domain)
            if known is None or reaction.stamp > known.stamp:
                self.reactions[reaction.domain] = reaction
                fresh.append(reaction)
        return fresh

    def forget_reactions(self, now: float) -> None:
        for domain in [d for d, r in self.reactions.items() if r.expires + NODE_TTL_SECONDS < now]:
            del self.reactions[domain]

    # -- connection leases -------------------------------------------------

    def new_lease(self, caps: tuple[Cap, ...]) -> Lease:
        self._next_lease += 1
        return Lease(f"{self._lease_prefix}{self._next_lease}", caps)

    def fallback_allows(self, caps: tuple[Cap, ...]) -> bool:
        """Fallback: may one more lease be held under every cap (this node's share)?"""
        nodes = self.node_count()
        return all(
            not cap.limit or self.held.get(cap.key, 0) < share(cap.limit, nodes) for cap in caps
        )

    def is_over_share(self, lease: Lease) -> bool:
        """Does this node hold more than its share under one of the lease's caps: always
        when falling back; when shared, under a cap another node waits for (so that a
        node with steady work does not keep a full cap to itself)."""
        nodes = self.node_count()
        if not self.is_shared:
            return any(
                cap.limit and self.held.get(cap.key, 0) > share(cap.limit, nodes)
                for cap in lease.caps
            )
        # Shared, a node keeps up to its fair part, so that the parts cover the whole cap
        # and nobody gives back and takes in turn.
        return any(
            cap.limit
            and cap.key in self.contended
            and self.held.get(cap.key, 0) > fair_part(cap.limit, nodes)
            for cap in lease.caps
        )

    def is_wanted(self, lease: Lease) -> bool:
        """Shared: does another node wait for one of the lease's caps?"""
        return self.is_shared and any(cap.key in self.contended for cap in lease.caps)

    def may_ask(self, caps: tuple[Cap, ...], now: float) -> bool:
        """Shared: may this node ask for one more lease? Not under a cap another node
        waits for while it holds its fair part already (the freed slot is the other's),
        nor under one it just gave a turn of (``should_rotate``)."""
        nodes = self.node_count()
        return not any(
            cap.limit
            and cap.key in self.contended
            and (
                self.held.get(cap.key, 0) >= fair_part(cap.limit, nodes)
                or now < self.yielding.get(cap.key, -math.inf)
            )
            for cap in caps
        )

    def heard_contended(self, keys: frozenset[str]) -> None:
        """The caps wanted by other nodes now; a cap no longer wanted starts afresh."""
        self.contended = set(keys)
        for kept in (self.rotated, self.yielding):
            for key in [k for k in kept if k not in self.contended]:
                del kept[key]

    def should_rotate(self, lease: Lease, now: float) -> bool:
        """Shared: should the lease's connection end after its transaction to give
        another node a turn? Under a cap another node waits for while the fair parts add
        up to more than the cap (the waiter may be below its part with every holder at
        its own, so no holder is over), one connection every ``ROTATE_SECONDS``, counted
        from when this node first saw the cap wanted; it then asks for none under the cap
        for ``YIELD_SECONDS``."""
        if not self.is_shared:
            return False
        nodes = self.node_count()
        for cap in lease.caps:
            if (
                not cap.limit
                or cap.key not in self.contended
                or fair_part(cap.limit, nodes) * nodes == cap.limit  # over-share covers it
            ):
                continue
            last = self.rotated.setdefault(cap.key, now)
            if now - last >= ROTATE_SECONDS:
                self.rotated[cap.key] = now
                self.yielding[cap.key] = now + YIELD_SECONDS
                return True
        return False

    def hold(self, lease: Lease) -> None:
        self.leases[lease.lease_id] = lease
        for cap in lease.caps:
            self.held[cap.key] = self.held.get(cap.key, 0) + 1

    def drop(self, lease: Lease) -> bool:
        """The lease's connection closed; False when it was not held."""
        if self.leases.pop(lease.lease_id, None) is None:
            return False
        for cap in lease.caps:
            left = self.held.get(cap.key, 0) - 1
            if left > 0:
                self.held[cap.key] = left
            else:
                self.held.pop(cap.key, None)
        return True

    # -- message rates -----------------------------------------------------

    def rate_wait(self, domain: str, per_minute: float, now: float) -> float | None:
        """None: one more message for ``domain`` may start now; else until when not."""
        if not self.is_shared:
            until = self.paced.get(domain, -math.inf)
            return None if now >= until else until
        stash = self.rates.get(domain)
        if stash is None:
            return WHEN_TOLD
        if stash.tokens > 0 and now - stash.since >= STALE_SECONDS:
            stash.tokens = 0  # granted long ago: the rate's window has moved on
        if stash.tokens > 0:
            return None
        if not stash.asking and now < stash.retry_at:
            return stash.retry_at
        return WHEN_TOLD

    def rate_to_ask(self, domain: str, per_minute: float, now: float) -> int:
        """Tokens to ask the store for now (0: none; marks the stash as asking)."""
        if not self.is_shared:
            return 0
        return self.rates.setdefault(domain, Stash()).ask(
            rate_batch(per_minute, self.node_count()), now
        )

    def rate_granted(self, domain: str, granted: int, wait_seconds: float, now: float) -> None:
        stash = self.rates.setdefault(domain, Stash())
        stash.asking = False
        stash.tokens += granted
        stash.since = now
        if not granted:
            stash.retry_at = now + retry_after(wait_seconds)

    def rate_took(self, domain: str, per_minute: float, now: float) -> None:
        if not self.is_shared:
            # This node's share of the rate, evenly spaced.
            spacing = 60.0 * self.node_count() / per_minute
            start = max(self.paced.get(domain, -math.inf), now - PACE_SLACK_SECONDS)
            self.paced[domain] = start + spacing
            return
        stash = self.rates.get(domain)
        if stash is not None and stash.tokens > 0:
            stash.tokens -= 1
            stash.since = now

    def forget_rates(self, now: float) -> None:
        """Stashes unused for a while go (bounded memory for many rate-capped domains)."""
        for domain in [
            d for d, s in self.rates.items() if not s.asking and now - s.since >= STALE_SECONDS
        ]:
            del self.rates[domain]
        for domain in [d for d, until in self.paced.items() if until < now]:
            del self.paced[domain]

    # -- the hourly cap ----------------------------------------------------

    def hourly_room(self, cap: int, now: float) -> int:
        if not self.is_shared:
            return self.local_hourly.available(share(cap, self.node_count()), now)
        return self.hourly.tokens

    def hourly_wait(self, cap: int, now: float) -> float | None:
        """None: room now; else when to look again (a grant also wakes the send loop)."""
        if not self.is_shared:
            limit = share(cap, self.node_count())
            if self.local_hourly.available(limit, now) > 0:
                return None
            return now + self.local_hourly.wait_seconds(limit, now)
        if self.hourly.tokens > 0:
            return None
        if self.hourly.asking:
            return WHEN_TOLD  # the answer wakes the send loop
        return max(self.hourly.retry_at, now + RETRY_SECONDS)

    def hourly_to_ask(self, cap: int, now: float) -> int:
        if not self.is_shared:
            return 0
        return self.hourly.ask(hourly_batch(cap, self.node_count()), now)

    def hourly_granted(self, granted: int, bucket: int, wait_seconds: float, now: float) -> None:
        stash = self.hourly
        stash.asking = False
        stash.tokens += granted
        stash.since = now
        if granted:
            stash.bucket = bucket
        else:
            stash.retry_at = now + retry_after(wait_seconds)

    def hourly_took(self, count: int, cap: int, now: float) -> None:
        if not self.is_shared:
            self.local_hourly.take(share(cap, self.node_count()), count, now)
            return
        self.hourly.tokens = max(0, self.hourly.tokens - count)
        self.hourly.since = now

    def hourly_to_give_back(self, now: float) -> tuple[int, int]:
        """(count, bucket): room held unused for a while goes back for other nodes."""
        stash = self.hourly
        if not self.is_shared or stash.asking or stash.tokens <= 0:
            return 0, 0
        if now - stash.since < IDLE_ROOM_SECONDS:
            return 0, 0
        count, stash.tokens = stash.tokens, 0
        return count, stash.bucket
