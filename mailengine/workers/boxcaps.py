"""The caps the workers of one box share, the supervisor their store (issue 13 item 2).

With [server] workers above 1 and no [cluster] redis_url, each worker is a node of
``cluster.node.ClusterNode`` whose store is the supervisor: the same leases, batched
rate tokens, hourly room and reactions as through Redis, asked over the worker's AMP
pipe (``SupervisorStoreLink``) and answered from ``cluster.store.CapStore`` by the
supervisor (``CapsServer``). A worker that ends gives its leases back at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet import defer
from twisted.protocols import amp

from mailengine.cluster.book import (
    CONTENDED_SECONDS,
    LEASE_TTL_SECONDS,
    NODE_TTL_SECONDS,
)
from mailengine.cluster.store import (
    CapStore,
    Heard,
    heard_data,
    heard_from_data,
    node_of,
    reaction_from_data,
)
from mailengine.scheduler.grants import ClusterView, Lease, SharedReaction
from mailengine.workers.commands import (
    CapsAcquire,
    CapsHeartbeat,
    CapsHourlyGiveBack,
    CapsHourlyTake,
    CapsLeave,
    CapsPublish,
    CapsRate,
    CapsRelease,
)

STORE_NAME = "the supervisor"
# The supervisor is on the same box: a slow answer means a busy box, not a lost store.
CALL_TIMEOUT_SECONDS = 2.0


class BoxCaps:
    """The supervisor's store of the box's caps, on its clock."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.store = CapStore()
        self.since = reactor.seconds()

    def now(self) -> float:
        return float(self.reactor.seconds())

    def worker_ended(self, node: str) -> int:
        """A worker's process ended: the connections it held are closed, so its leases
        go back now (not at their expiry). Returns how many."""
        return self.store.forget(node) if node else 0

    def view(self) -> ClusterView:
        now = self.now()
        return self.store.view("supervisor", STORE_NAME, self.since, now)


class CapsServer(amp.CommandLocator):
    """The supervisor's end of a worker's pipe: its asks answered from ``caps``."""

    caps: BoxCaps
    caps_node = ""  # the worker's node name, from its first ask

    @CapsHeartbeat.responder
    def caps_heartbeat(self, node: str, info: Any, leases: Any) -> dict[str, Any]:
        self.caps_node = node
        caps = self.caps
        heard = caps.store.heartbeat(
            node,
            info if isinstance(info, dict) else {},
            [(str(lease_id), list(keys)) for lease_id, keys in leases],
            NODE_TTL_SECONDS,
            LEASE_TTL_SECONDS,
            caps.now(),
        )
        return {"heard": heard_data(heard)}

    @CapsLeave.responder
    def caps_leave(self, node: str) -> dict[str, Any]:
        self.caps.store.leave(node)
        return {}

    @CapsAcquire.responder
    def caps_acquire(self, lease_id: str, caps: Any) -> dict[str, Any]:
        self.caps_node = self.caps_node or node_of(lease_id)
        wanted = [(str(key), int(limit)) for key, limit in caps]
        granted = self.caps.store.acquire(
            lease_id, wanted, LEASE_TTL_SECONDS, CONTENDED_SECONDS, self.caps.now()
        )
        return {"granted": granted}

    @CapsRelease.responder
    def caps_release(self, lease_id: str, keys: Any) -> dict[str, Any]:
        self.caps.store.release(lease_id, [str(k) for k in keys])
        return {}

    @CapsRate.responder
    def caps_rate(
        self, domain: str, interval: float, tolerance: float, want: int
    ) -> dict[str, Any]:
        granted, wait = self.caps.store.rate(domain, interval, tolerance, want, self.caps.now())
        return {"granted": granted, "wait": wait}

    @CapsHourlyTake.responder
    def caps_hourly_take(self, cap: int, want: int) -> dict[str, Any]:
        granted, bucket, wait = self.caps.store.hourly_take(cap, want, self.caps.now())
        return {"granted": granted, "bucket": bucket, "wait": wait}

    @CapsHourlyGiveBack.responder
    def caps_hourly_give_back(self, bucket: int, count: int) -> dict[str, Any]:
        self.caps.store.hourly_give_back(bucket, count)
        return {}

    @CapsPublish.responder
    def caps_publish(self, reaction: Any) -> dict[str, Any]:
        parsed = reaction_from_data(reaction)
        if parsed is not None:
            self.caps.store.publish(parsed)
        return {}


class SupervisorStoreLink:
    """``cluster.node.StoreLink`` to the supervisor, over the worker's AMP pipe."""

    name = STORE_NAME
    url = "supervisor"
    timeout_seconds = CALL_TIMEOUT_SECONDS

    def __init__(self, channel: Callable[[], amp.AMP | None]) -> None:
        self.channel = channel  # the worker's link (set once its pipe is open); None: gone

    def _remote(self, command: type[amp.Command], **kwargs: Any) -> defer.Deferred[Any]:
        link = self.channel()
        if link is None or link.transport is None:
            return defer.fail(ConnectionError("the supervisor's pipe is closed"))
        return link.callRemote(command, **kwargs)

    def connect(self) -> defer.Deferred[None]:
        link = self.channel()
        if link is None or link.transport is None:
            return defer.fail(ConnectionError("the supervisor's pipe is closed"))
        return defer.succeed(None)

    def disconnect(self) -> None:
        """The pipe stays: the next heartbeat asks again."""

    def heartbeat(
        self, node: str, info: dict[str, object], leases: Sequence[Lease]
    ) -> defer.Deferred[Heard]:
        held = [[lease.lease_id, [cap.key for cap in lease.caps]] for lease in leases]
        d = self._remote(CapsHeartbeat, node=node, info=info, leases=held)
        return d.addCallback(lambda answer: heard_from_data(answer["heard"]))

    def leave(self, node: str) -> defer.Deferred[Any]:
        return self._remote(CapsLeave, node=node)

    def acquire(self, lease: Lease) -> defer.Deferred[bool]:
        caps = [[cap.key, cap.limit] for cap in lease.caps]
        d = self._remote(CapsAcquire, lease_id=lease.lease_id, caps=caps)
        return d.addCallback(lambda answer: bool(answer["granted"]))

    def release(self, lease: Lease) -> defer.Deferred[Any]:
        keys = [cap.key for cap in lease.caps]
        return self._remote(CapsRelease, lease_id=lease.lease_id, keys=keys)

    def rate(
        self, domain: str, interval: float, tolerance: float, want: int
    ) -> defer.Deferred[tuple[int, float]]:
        d = self._remote(CapsRate, domain=domain, interval=interval, tolerance=tolerance, want=want)
        return d.addCallback(lambda a: (int(a["granted"]), float(a["wait"])))

    def hourly_take(self, cap: int, want: int) -> defer.Deferred[tuple[int, int, float]]:
        d = self._remote(CapsHourlyTake, cap=cap, want=want)
        return d.addCallback(lambda a: (int(a["granted"]), int(a["bucket"]), float(a["wait"])))

    def hourly_give_back(self, bucket: int, count: int) -> defer.Deferred[Any]:
        return self._remote(CapsHourlyGiveBack, bucket=bucket, count=count)

    def publish(self, reaction: SharedReaction) -> defer.Deferred[Any]:
        return self._remote(CapsPublish, reaction=attrs.asdict(reaction))
