"""The cluster's store in Redis ([cluster] redis_url): each ``StoreLink`` call one Lua
script (``scripts.py``) over txredisapi; times in Redis are milliseconds."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
import txredisapi
from twisted.internet import defer

from mailengine.cluster import scripts
from mailengine.cluster.book import CONTENDED_SECONDS, LEASE_TTL_SECONDS, NODE_TTL_SECONDS
from mailengine.cluster.store import Heard, reaction_from_data
from mailengine.config.kinds import parse_redis_url
from mailengine.scheduler.grants import Lease, NodeView, SharedReaction

CALL_TIMEOUT_SECONDS = 0.5  # no answer by then: Redis counts as unreachable
NO_CAP = 1 << 30  # a cap of 0 ("none") as a limit Redis compares with


def shown_url(url: str) -> str:
    """The URL without its password (logs, the web admin)."""
    scheme, _, rest = url.partition("://")
    _, at, after = rest.rpartition("@")
    return f"{scheme}://{after}" if at else url


def reaction_from_json(text: str) -> SharedReaction | None:
    try:
        return reaction_from_data(json.loads(text))
    except ValueError:
        return None


def reaction_json(reaction: SharedReaction) -> str:
    return json.dumps(attrs.asdict(reaction))


def nodes_from(flat: Sequence[Any]) -> dict[str, NodeView]:
    """HEARTBEAT's node list (name, score ms, info JSON, ...) as views."""
    nodes = {}
    for i in range(0, len(flat) - 2, 3):
        name = str(flat[i])
        try:
            info = json.loads(flat[i + 2])
        except (ValueError, TypeError):
            info = {}
        nodes[name] = NodeView(
            name, float(flat[i + 1]) / 1000.0, int(info.get("leases", 0)), str(info.get("mode", ""))
        )
    return nodes


def _heard(answer: Any) -> Heard:
    _, nodes, reactions, contended = answer
    return Heard(
        nodes_from(nodes),
        [r for r in map(reaction_from_json, reactions) if r is not None],
        frozenset(str(key).removeprefix(scripts.LEASES) for key in contended),
    )


class RedisLink:
    """``node.StoreLink`` to one Redis server."""

    timeout_seconds = CALL_TIMEOUT_SECONDS

    def __init__(self, url: str) -> None:
        parsed = parse_redis_url(url)
        if parsed is None:  # the config kind refused it already
            raise ValueError(f"not a Redis URL: {url!r}")
        self.host, self.port, self.db, self.password = parsed
        self.url = shown_url(url)
        self.name = f"Redis at {self.url}"
        self.redis: Any = None

    def connect(self) -> defer.Deferred[None]:
        d = txredisapi.Connection(
            self.host,
            self.port,
            dbid=self.db,
            reconnect=False,
            password=self.password or None,
            connectTimeout=CALL_TIMEOUT_SECONDS,
            replyTimeout=CALL_TIMEOUT_SECONDS,
        )

        def connected(redis: Any) -> None:
            self.redis = redis

        return d.addCallback(connected)

    def disconnect(self) -> None:
        redis, self.redis = self.redis, None
        if redis is not None:
            defer.maybeDeferred(redis.disconnect).addErrback(lambda f: None)

    def _eval(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        if self.redis is None:
            return defer.fail(ConnectionError("not connected"))
        return defer.maybeDeferred(self.redis.eval, script, keys, args)

    def heartbeat(
        self, node: str, info: dict[str, object], leases: Sequence[Lease]
    ) -> defer.Deferred[Heard]:
        keys = [scripts.NODES, scripts.NODE_INFO, scripts.REACTIONS, scripts.CONTENDED]
        args: list[Any] = [
            node,
            json.dumps(info),
            int(NODE_TTL_SECONDS * 1000),
            int(LEASE_TTL_SECONDS * 1000),
        ]
        for lease in leases:
            for cap in lease.caps:
                keys.append(scripts.lease_key(cap.key))
                args.append(lease.lease_id)
        return self._eval(scripts.HEARTBEAT, keys, args).addCallback(_heard)

    def leave(self, node: str) -> defer.Deferred[Any]:
        return self._eval(scripts.LEAVE, [scripts.NODES, scripts.NODE_INFO], [node])

    def acquire(self, lease: Lease) -> defer.Deferred[bool]:
        keys = [scripts.lease_key(cap.key) for cap in lease.caps]
        keys += [scripts.CONTENDED, scripts.NODES]
        args: list[Any] = [
            lease.lease_id,
            int(LEASE_TTL_SECONDS * 1000),
            int(CONTENDED_SECONDS * 1000),
            int(NODE_TTL_SECONDS * 1000),
        ]
        args += [cap.limit or NO_CAP for cap in lease.caps]
        return self._eval(scripts.ACQUIRE, keys, args).addCallback(bool)

    def release(self, lease: Lease) -> defer.Deferred[Any]:
        keys = [scripts.lease_key(cap.key) for cap in lease.caps]
        return self._eval(scripts.RELEASE, keys, [lease.lease_id])

    def rate(
        self, domain: str, interval: float, tolerance: float, want: int
    ) -> defer.Deferred[tuple[int, float]]:
        args = [interval * 1000.0, tolerance * 1000.0, want]
        d = self._eval(scripts.RATE, [scripts.rate_key(domain)], args)
        return d.addCallback(lambda a: (int(a[0]), float(a[1]) / 1000.0))

    def hourly_take(self, cap: int, want: int) -> defer.Deferred[tuple[int, int, float]]:
        d = self._eval(scripts.HOURLY_TAKE, [], [scripts.HOURLY, cap, want])
        return d.addCallback(lambda a: (int(a[0]), int(a[1]), float(a[2]) / 1000.0))

    def hourly_give_back(self, bucket: int, count: int) -> defer.Deferred[Any]:
        return self._eval(scripts.HOURLY_GIVE_BACK, [], [scripts.HOURLY, bucket, count])

    def publish(self, reaction: SharedReaction) -> defer.Deferred[Any]:
        if self.redis is None:
            return defer.fail(ConnectionError("not connected"))
        return defer.maybeDeferred(
            self.redis.hset, scripts.REACTIONS, reaction.domain, reaction_json(reaction)
        )
