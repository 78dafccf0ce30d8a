"""This node's link to the cluster's Redis: implements ``scheduler.grants.Grants``.

A thin Twisted shell around ``book.ClusterBook``: it sends the book's asks as Lua
scripts (``scripts.py``), feeds the answers back, beats once a second (renewing
leases, reading the nodes and reactions, reconnecting) and falls back to the book's
local shares the moment Redis does not answer within CALL_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import txredisapi
from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailengine.cluster import scripts
from mailengine.cluster.book import (
    FALLBACK,
    HEARTBEAT_SECONDS,
    LEASE_LINGER_SECONDS,
    LEASE_TTL_SECONDS,
    NODE_TTL_SECONDS,
    ClusterBook,
)
from mailengine.config.kinds import parse_redis_url
from mailengine.scheduler.grants import (
    Cap,
    ClusterView,
    GrantsListener,
    Lease,
    NodeView,
    SharedReaction,
)

log = Logger(namespace="mailengine.cluster")

CALL_TIMEOUT_SECONDS = 0.5  # no answer by then: Redis counts as unreachable
HOURLY_WAKEUP = ""  # the wake-up timer of the hourly cap (no domain is "")
NO_CAP = 1 << 30  # a cap of 0 ("none") as a limit Redis compares with
REACTION_FIELDS = {f.name for f in attrs.fields(SharedReaction)}


def shown_url(url: str) -> str:
    """The URL without its password (logs, the web admin)."""
    scheme, _, rest = url.partition("://")
    _, at, after = rest.rpartition("@")
    return f"{scheme}://{after}" if at else url


def reaction_from_json(text: str) -> SharedReaction | None:
    try:
        raw = json.loads(text)
        return SharedReaction(**{k: v for k, v in raw.items() if k in REACTION_FIELDS})
    except (ValueError, TypeError):
        return None


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


class ClusterNode(service.Service):
    """Caps shared with the other nodes through Redis ([cluster] redis_url)."""

    def __init__(self, url: str, node: str, reactor: Any) -> None:
        parsed = parse_redis_url(url)
        if parsed is None:  # the config kind refused it already
            raise ValueError(f"not a Redis URL: {url!r}")
        self.host, self.port, self.db, self.password = parsed
        self.url = shown_url(url)
        self.reactor = reactor
        self.book = ClusterBook(node, reactor.seconds(), mode=FALLBACK)
        self.book.problem = "not connected yet"
        self.listener: GrantsListener | None = None
        self.redis: Any = None
        self._connecting = False
        self._told_start = False  # a failure to reach Redis at start is logged too
        self._beat: task.LoopingCall | None = None
        self._wakeups: dict[str, Any] = {}  # domain -> timer to offer it again
        self.is_leaving = False

    @property
    def node(self) -> str:
        return self.book.node

    def attach(self, listener: GrantsListener) -> None:
        self.listener = listener

    # -- start, stop, heartbeat -------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.reactor.addSystemEventTrigger("before", "shutdown", self._leaving)
        self._beat = task.LoopingCall(self.beat)
        self._beat.clock = self.reactor
        self._beat.start(HEARTBEAT_SECONDS, now=True)

    def _leaving(self) -> None:
        """The engine stops (before its connections are cut): it takes no new connection,
        so it leaves the node list now; leases of connections still finishing expire."""
        self.is_leaving = True  # connections close now: no "unreachable" to tell
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        gone = self._call(
            lambda r: r.eval(scripts.LEAVE, [scripts.NODES, scripts.NODE_INFO], [self.node])
        )
        gone.addErrback(lambda f: None)  # not heard: the node entry expires by itself

    def stopService(self) -> None:
        super().stopService()
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        for call in self._wakeups.values():
            if call.active():
                call.cancel()
        self._wakeups.clear()
        redis, self.redis = self.redis, None
        if redis is not None:
            defer.maybeDeferred(redis.disconnect).addErrback(lambda f: None)

    def beat(self) -> None:
        now = self.reactor.seconds()
        book = self.book
        book.forget_rates(now)
        book.forget_reactions(now)
        if self.redis is None:
            self._connect()
            return
        count, bucket = book.hourly_to_give_back(now)
        if count:
            self._call(
                lambda r: r.eval(scripts.HOURLY_GIVE_BACK, [], [scripts.HOURLY, bucket, count])
            ).addErrback(self._unreachable)
        keys = [scripts.NODES, scripts.NODE_INFO, scripts.REACTIONS, scripts.CONTENDED]
        args: list[Any] = [
            self.node,
            json.dumps(book.info()),
            int(NODE_TTL_SECONDS * 1000),
            int(LEASE_TTL_SECONDS * 1000),
        ]
        for lease in list(book.leases.values()):
            for cap in lease.caps:
                keys.append(scripts.lease_key(cap.key))
                args.append(lease.lease_id)
        d = self._call(lambda r: r.eval(scripts.HEARTBEAT, keys, args))
        d.addCallbacks(self._heard, self._unreachable)
        d.addErrback(lambda f: log.failure("cluster: heartbeat answer not understood", f))

    def _connect(self) -> None:
        if self._connecting or not self.running:
            return
        self._connecting = True
        d = txredisapi.Connection(
            self.host,
            self.port,
            dbid=self.db,
            reconnect=False,
            password=self.password or None,
            connectTimeout=CALL_TIMEOUT_SECONDS,
            replyTimeout=CALL_TIMEOUT_SECONDS,
        )
        d.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, redis: Any) -> None:
        self._connecting = False
        if not self.running:
            redis.disconnect()
            return
        self.redis = redis
        self._told_start = True
        self.beat()  # shared again once the heartbeat is answered

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = False
        self._unreachable(failure)

    def _call(self, command: Callable[[Any], Any]) -> defer.Deferred[Any]:
        redis = self.redis
        if redis is None:
            return defer.fail(ConnectionError("not connected"))
        d = defer.maybeDeferred(command, redis)
        return d.addTimeout(CALL_TIMEOUT_SECONDS, self.reactor)

    def _heard(self, answer: Any) -> None:
        _, nodes, reactions, contended = answer
        now = self.reactor.seconds()
        book = self.book
        book.heard(nodes_from(nodes))
        book.contended = {str(key).removeprefix(scripts.LEASES) for key in contended}
        if book.reachable(now):
            log.info(
                "cluster: caps are shared through Redis at {url} ({n} nodes seen: {names})",
                url=self.url,
                n=len(book.nodes),
                names=", ".join(sorted(book.nodes)),
            )
            self._publish_own(now)
            if self.listener is not None:
                self.listener.mode_changed()
        parsed = [r for r in map(reaction_from_json, reactions) if r is not None]
        for reaction in book.news([r for r in parsed if r.node != self.node]):
            if self.listener is not None:
                self.listener.reaction_heard(reaction)

    def _unreachable(self, failure: Failure) -> None:
        now = self.reactor.seconds()
        why = failure.getErrorMessage() or repr(failure.value)
        redis, self.redis = self.redis, None
        if redis is not None:
            defer.maybeDeferred(redis.disconnect).addErrback(lambda f: None)
        book = self.book
        if (book.unreachable(why, now) or not self._told_start) and not self.is_leaving:
            log.warn(
                "cluster: Redis at {url} cannot be reached ({why}); falling back to this "
                "node's share of each cap (1/{n} of it, {n} nodes last seen) until it can",
                url=self.url,
                why=why,
                n=book.node_count(),
            )
            self._told_start = True
            if self.listener is not None:
                self.listener.mode_changed()

    # -- connection leases --------------------------------------------------

    def lease(self, caps: Sequence[Cap], answer: Callable[[Lease | None], None]) -> None:
        book = self.book
        lease = book.new_lease(tuple(caps))
        if not book.is_shared or self.redis is None:
            self._answer_locally(lease, answer)
            return
        if not book.may_ask(lease.caps):
            answer(None)  # another node waits for this cap: the next free slot is its
            return
        keys = [scripts.lease_key(cap.key) for cap in lease.caps] + [scripts.CONTENDED]
        args = [lease.lease_id, int(LEASE_TTL_SECONDS * 1000), scripts.CONTENDED_MS]
        args += [cap.limit or NO_CAP for cap in lease.caps]

        def granted(ok: Any) -> None:
            if ok:
                book.hold(lease)
                answer(lease)
            else:
                answer(None)

        def failed(failure: Failure) -> None:
            self._unreachable(failure)
            self._answer_locally(lease, answer)

        d = self._call(lambda r: r.eval(scripts.ACQUIRE, keys, args))
        d.addCallbacks(granted, failed)
        d.addErrback(lambda f: log.failure("cluster: a lease's answer failed", f))

    def _answer_locally(self, lease: Lease, answer: Callable[[Lease | None], None]) -> None:
        if self.book.fallback_allows(lease.caps):
            self.book.hold(lease)
            answer(lease)
        else:
            answer(None)

    def is_over_share(self, lease: Lease) -> bool:
        return self.book.is_over_share(lease)

    def is_wanted(self, lease: Lease) -> bool:
        return self.book.is_wanted(lease)

    def release(self, lease: Lease) -> None:
        if not self.book.drop(lease) or self.redis is None or not self.book.is_shared:
            return  # not held in Redis, or Redis lets it expire
        self.reactor.callLater(LEASE_LINGER_SECONDS, self._give_back, lease)

    def _give_back(self, lease: Lease) -> None:
        if self.redis is None or not self.book.is_shared:
            return  # Redis lets it expire (it is no longer renewed)
        keys = [scripts.lease_key(cap.key) for cap in lease.caps]
        d = self._call(lambda r: r.eval(scripts.RELEASE, keys, [lease.lease_id]))
        d.addErrback(self._unreachable)

    # -- message rates -------------------------------------------------------

    def rate_wait(self, domain: str, per_minute: float, now: float) -> float | None:
        until = self.book.rate_wait(domain, per_minute, now)
        want = self.book.rate_to_ask(domain, per_minute, now)
        if want:
            self._ask_rate(domain, per_minute, want)
        return until

    def rate_took(self, domain: str, per_minute: float, now: float) -> None:
        self.book.rate_took(domain, per_minute, now)
        want = self.book.rate_to_ask(domain, per_minute, now)  # the next batch, ahead
        if want:
            self._ask_rate(domain, per_minute, want)

    def _ask_rate(self, domain: str, per_minute: float, want: int) -> None:
        interval_ms = 60000.0 / per_minute
        tolerance_ms = (want - 1) * interval_ms  # a whole batch may go at once

        def granted(answer: Any) -> None:
            count, wait_ms = int(answer[0]), float(answer[1])
            now = self.reactor.seconds()
            self.book.rate_granted(domain, count, wait_ms / 1000.0, now)
            if count:
                self._wake(domain)
            else:
                self._wake_at(domain, self.book.rates[domain].retry_at - now)

        def failed(failure: Failure) -> None:
            self.book.rate_granted(domain, 0, 0.0, self.reactor.seconds())
            self._unreachable(failure)
            self._wake(domain)

        d = self._call(
            lambda r: r.eval(
                scripts.RATE, [scripts.rate_key(domain)], [interval_ms, tolerance_ms, want]
            )
        )
        d.addCallbacks(granted, failed)
        d.addErrback(lambda f: log.failure("cluster: a rate answer failed", f))

    def _wake(self, domain: str) -> None:
        if domain == HOURLY_WAKEUP:
            self._hourly_granted()
        elif self.listener is not None:
            self.listener.rate_granted(domain)

    def _hourly_granted(self) -> None:
        if self.listener is not None:
            self.listener.hourly_granted()

    def _wake_at(self, domain: str, delay: float) -> None:
        call = self._wakeups.get(domain)
        if call is not None and call.active():
            return
        self._wakeups[domain] = self.reactor.callLater(max(0.0, delay), self._woken, domain)

    def _woken(self, domain: str) -> None:
        self._wakeups.pop(domain, None)
        self._wake(domain)

    # -- the hourly cap --------------------------------------------------------

    def hourly_room(self, cap: int, now: float) -> int:
        self._ask_hourly(cap, now)
        return self.book.hourly_room(cap, now)

    def hourly_wait(self, cap: int, now: float) -> float | None:
        self._ask_hourly(cap, now)
        return self.book.hourly_wait(cap, now)

    def hourly_took(self, count: int, cap: int, now: float) -> None:
        self.book.hourly_took(count, cap, now)
        self._ask_hourly(cap, now)

    def _ask_hourly(self, cap: int, now: float) -> None:
        want = self.book.hourly_to_ask(cap, now) if self.redis is not None else 0
        if not want:
            return

        def granted(answer: Any) -> None:
            count, minute, wait_ms = int(answer[0]), int(answer[1]), float(answer[2])
            now = self.reactor.seconds()
            self.book.hourly_granted(count, minute, wait_ms / 1000.0, now)
            if count:
                self._hourly_granted()
            else:  # the send loop waits for a wake-up: at the time to ask again
                self._wake_at(HOURLY_WAKEUP, self.book.hourly.retry_at - now)

        def failed(failure: Failure) -> None:
            self.book.hourly_granted(0, 0, 0.0, self.reactor.seconds())
            self._unreachable(failure)

        d = self._call(lambda r: r.eval(scripts.HOURLY_TAKE, [], [scripts.HOURLY, cap, want]))
        d.addCallbacks(granted, failed)
        d.addErrback(lambda f: log.failure("cluster: an hourly answer failed", f))

    # -- reactions -------------------------------------------------------------

    def reacted(self, reaction: SharedReaction) -> None:
        self.book.published(reaction)
        if self.redis is not None and self.book.is_shared:
            self._publish(reaction)

    def _publish(self, reaction: SharedReaction) -> None:
        text = json.dumps(attrs.asdict(reaction))
        d = self._call(lambda r: r.hset(scripts.REACTIONS, reaction.domain, text))
        d.addErrback(self._unreachable)

    def _publish_own(self, now: float) -> None:
        """Back from a fallback: what this node decided meanwhile reaches the others."""
        for reaction in list(self.book.reactions.values()):
            if reaction.node == self.node and reaction.expires > now:
                self._publish(reaction)

    # -- views -------------------------------------------------------------------

    def view(self, now: float) -> ClusterView:
        return self.book.view(now, self.url)
