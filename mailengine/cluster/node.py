"""This node's link to the caps it shares with others: implements ``scheduler.grants.Grants``.

A thin Twisted shell around ``book.ClusterBook``: it sends the book's asks to the shared
store through a ``StoreLink`` (Redis across machines, ``redislink.py``; the supervisor of
worker processes on one box, ``workers/boxcaps.py``), feeds the answers back, beats once a
second (renewing leases, reading the nodes and reactions, reconnecting) and falls back to
the book's local shares the moment the store does not answer within the link's timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailengine.cluster.book import (
    FALLBACK,
    HEARTBEAT_SECONDS,
    LEASE_LINGER_SECONDS,
    ClusterBook,
)
from mailengine.cluster.store import Heard
from mailengine.scheduler.grants import (
    WHEN_TOLD,
    Cap,
    ClusterView,
    GrantsListener,
    Lease,
    SharedReaction,
)

log = Logger(namespace="mailengine.cluster")

HOURLY_WAKEUP = ""  # the wake-up timer of the hourly cap (no domain is "")


class StoreLink(Protocol):
    """How a node reaches the shared store: each call one round trip (times in seconds)."""

    name: str  # in log lines and on the dashboard: "Redis at redis://host:6379/0"
    url: str  # where the store is (without a password)
    timeout_seconds: float  # no answer by then: the store counts as unreachable

    def connect(self) -> defer.Deferred[None]:
        """Open the link (fails when the store cannot be reached)."""

    def disconnect(self) -> None:
        """Drop the link (after a failed call: the next heartbeat connects again)."""

    def heartbeat(
        self, node: str, info: dict[str, object], leases: Sequence[Lease]
    ) -> defer.Deferred[Heard]:
        """Say ``node`` is alive, renew (or put back) its ``leases``; the nodes alive,
        the reactions in force, the contended caps."""

    def leave(self, node: str) -> defer.Deferred[Any]:
        """``node`` stops: off the node list at once."""

    def acquire(self, lease: Lease) -> defer.Deferred[bool]:
        """One connection under every cap of the lease; False when one is full."""

    def release(self, lease: Lease) -> defer.Deferred[Any]:
        """The lease's connection closed."""

    def rate(
        self, domain: str, interval: float, tolerance: float, want: int
    ) -> defer.Deferred[tuple[int, float]]:
        """GCRA: (tokens granted, seconds until one conforms when none is)."""

    def hourly_take(self, cap: int, want: int) -> defer.Deferred[tuple[int, int, float]]:
        """(room granted, minute taken from, seconds until more when none is)."""

    def hourly_give_back(self, bucket: int, count: int) -> defer.Deferred[Any]:
        """Room taken and not used goes back to the minute it came from."""

    def publish(self, reaction: SharedReaction) -> defer.Deferred[Any]:
        """Every node should apply ``reaction``."""


class ClusterNode(service.Service):
    """Caps shared with the other nodes through ``link``."""

    def __init__(self, link: StoreLink, node: str, reactor: Any, nodes_at_start: int = 1) -> None:
        self.link = link
        self.reactor = reactor
        self.book = ClusterBook(node, reactor.seconds(), mode=FALLBACK)
        self.book.problem = "not connected yet"
        # Until the store first answers, each cap is this node's share among the nodes
        # known to start with it (the workers of one box).
        self.book.last_nodes = max(1, nodes_at_start)
        self.listener: GrantsListener | None = None
        self.is_connected = False
        self._connecting = False
        self._told_start = False  # a failure to reach the store at start is logged too
        # Until the store first answers (or fails to), no lease, no rate token and no room
        # under the hourly cap: a node joining a running box or cluster (a restarted
        # worker) would add its share on top of caps the others may use in full.
        self.is_starting = True
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
        gone = self._call(lambda: self.link.leave(self.node))
        gone.addErrback(lambda f: None)  # not heard: the node entry expires by itself

    def stopService(self) -> None:
        super().stopService()
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        for call in self._wakeups.values():
            if call.active():
                call.cancel()
        self._wakeups.clear()
        if self.is_connected:
            self.is_connected = False
            self.link.disconnect()

    def beat(self) -> None:
        now = self.reactor.seconds()
        book = self.book
        book.forget_rates(now)
        book.forget_reactions(now)
        if not self.is_connected:
            self._connect()
            return
        count, bucket = book.hourly_to_give_back(now)
        if count:
            self._call(lambda: self.link.hourly_give_back(bucket, count)).addErrback(
                self._unreachable
            )
        leases = list(book.leases.values())
        d = self._call(lambda: self.link.heartbeat(self.node, book.info(), leases))
        d.addCallbacks(self._heard, self._unreachable)
        d.addErrback(lambda f: log.failure("cluster: heartbeat answer not understood", f))

    def _connect(self) -> None:
        if self._connecting or not self.running:
            return
        self._connecting = True
        self.link.connect().addCallbacks(self._connected, self._connect_failed)

    def _connected(self, _: None) -> None:
        self._connecting = False
        if not self.running:
            self.link.disconnect()
            return
        self.is_connected = True
        self._told_start = True
        self.beat()  # shared again once the heartbeat is answered

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = False
        self._unreachable(failure)

    def _call(self, command: Callable[[], defer.Deferred[Any]]) -> defer.Deferred[Any]:
        if not self.is_connected:
            return defer.fail(ConnectionError("not connected"))
        d = defer.maybeDeferred(command)
        return d.addTimeout(self.link.timeout_seconds, self.reactor)

    def _heard(self, heard: Heard) -> None:
        self.is_starting = False
        now = self.reactor.seconds()
        book = self.book
        book.heard(heard.nodes)
        book.heard_contended(heard.contended)
        if book.reachable(now):
            log.info(
                "cluster: caps are shared through {name} ({n} nodes seen: {names})",
                name=self.link.name,
                n=len(book.nodes),
                names=", ".join(sorted(book.nodes)),
            )
            self._publish_own(now)
            if self.listener is not None:
                self.listener.mode_changed()
        # Its own reactions come back with the stamps it published them under (not news);
        # a node restarted under the same name has none of them and applies them again.
        for reaction in book.news(heard.reactions):
            if self.listener is not None:
                self.listener.reaction_heard(reaction)

    def _unreachable(self, failure: Failure) -> None:
        self.is_starting = False
        now = self.reactor.seconds()
        why = failure.getErrorMessage() or repr(failure.value)
        if self.is_connected:
            self.is_connected = False
            self.link.disconnect()
        book = self.book
        if (book.unreachable(why, now) or not self._told_start) and not self.is_leaving:
            log.warn(
                "cluster: {name} cannot be reached ({why}); falling back to this "
                "node's share of each cap (1/{n} of it, {n} nodes last seen) until it can",
                name=self.link.name,
                why=why,
                n=book.node_count(),
            )
            self._told_start = True
            if self.listener is not None:
                self.listener.mode_changed()

    # -- connection leases --------------------------------------------------

    def lease(self, caps: Sequence[Cap], answer: Callable[[Lease | None], None]) -> None:
        if self.is_starting:
            answer(None)  # asked again shortly (the pool's lease retry)
            return
        book = self.book
        lease = book.new_lease(tuple(caps))
        if not book.is_shared or not self.is_connected:
            self._answer_locally(lease, answer)
            return
        if not book.may_ask(lease.caps, self.reactor.seconds()):
            answer(None)  # another node waits for this cap: the next free slot is its
            return

        def granted(ok: bool) -> None:
            if ok:
                book.hold(lease)
                answer(lease)
            else:
                answer(None)

        def failed(failure: Failure) -> None:
            self._unreachable(failure)
            self._answer_locally(lease, answer)

        d = self._call(lambda: self.link.acquire(lease))
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

    def should_rotate(self, lease: Lease) -> bool:
        return self.book.should_rotate(lease, self.reactor.seconds())

    def release(self, lease: Lease) -> None:
        if not self.book.drop(lease) or not self.is_connected or not self.book.is_shared:
            return  # not held in the store, or the store lets it expire
        self.reactor.callLater(LEASE_LINGER_SECONDS, self._give_back, lease)

    def _give_back(self, lease: Lease) -> None:
        if not self.is_connected or not self.book.is_shared:
            return  # the store lets it expire (it is no longer renewed)
        self._call(lambda: self.link.release(lease)).addErrback(self._unreachable)

    # -- message rates -------------------------------------------------------

    def rate_wait(self, domain: str, per_minute: float, now: float) -> float | None:
        if self.is_starting:
            return WHEN_TOLD  # as for leases; the first answer offers it again (mode_changed)
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
        interval = 60.0 / per_minute
        tolerance = (want - 1) * interval  # a whole batch may go at once

        def granted(answer: tuple[int, float]) -> None:
            count, wait = answer
            now = self.reactor.seconds()
            self.book.rate_granted(domain, count, wait, now)
            if count:
                self._wake(domain)
            else:
                self._wake_at(domain, self.book.rates[domain].retry_at - now)

        def failed(failure: Failure) -> None:
            self.book.rate_granted(domain, 0, 0.0, self.reactor.seconds())
            self._unreachable(failure)
            self._wake(domain)

        d = self._call(lambda: self.link.rate(domain, interval, tolerance, want))
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
        if self.is_starting:
            return 0  # its local share would be on top of the hour the others used
        self._ask_hourly(cap, now)
        return self.book.hourly_room(cap, now)

    def hourly_wait(self, cap: int, now: float) -> float | None:
        if self.is_starting:
            return WHEN_TOLD  # the first answer (or failure) wakes the send loop
        self._ask_hourly(cap, now)
        return self.book.hourly_wait(cap, now)

    def hourly_took(self, count: int, cap: int, now: float) -> None:
        self.book.hourly_took(count, cap, now)
        self._ask_hourly(cap, now)

    def _ask_hourly(self, cap: int, now: float) -> None:
        want = self.book.hourly_to_ask(cap, now) if self.is_connected else 0
        if not want:
            return

        def granted(answer: tuple[int, int, float]) -> None:
            count, minute, wait = answer
            now = self.reactor.seconds()
            self.book.hourly_granted(count, minute, wait, now)
            if count:
                self._hourly_granted()
            else:  # the send loop waits for a wake-up: at the time to ask again
                self._wake_at(HOURLY_WAKEUP, self.book.hourly.retry_at - now)

        def failed(failure: Failure) -> None:
            self.book.hourly_granted(0, 0, 0.0, self.reactor.seconds())
            self._unreachable(failure)

        d = self._call(lambda: self.link.hourly_take(cap, want))
        d.addCallbacks(granted, failed)
        d.addErrback(lambda f: log.failure("cluster: an hourly answer failed", f))

    # -- reactions -------------------------------------------------------------

    def reacted(self, reaction: SharedReaction) -> None:
        self.book.published(reaction)
        if self.is_connected and self.book.is_shared:
            self._publish(reaction)

    def _publish(self, reaction: SharedReaction) -> None:
        self._call(lambda: self.link.publish(reaction)).addErrback(self._unreachable)

    def _publish_own(self, now: float) -> None:
        """Back from a fallback: what this node decided meanwhile reaches the others."""
        for reaction in list(self.book.reactions.values()):
            if reaction.node == self.node and reaction.expires > now:
                self._publish(reaction)

    # -- views -------------------------------------------------------------------

    def view(self, now: float) -> ClusterView:
        return self.book.view(now, self.link.url)
