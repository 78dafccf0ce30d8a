"""Connections per MX address: a pool each, capped per host and in total (Twisted glue).

A pool keeps the jobs waiting for its server, its idle connections and its
counters; an open connection takes job after job and QUITs when idle. The
decisions (may a connection open, which host gets a freed slot) come from
``slots.py``; the next-target decision stays with the caller (``sender.py``),
told through ``fail_over`` when a server cannot be reached.
"""

from __future__ import annotations

import errno
import ipaddress
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import protocol, ssl
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailengine.delivery.client import ClientSettings, OutboundClient, describe_failure
from mailengine.delivery.job import Job
from mailengine.delivery.outcome import HARD, SENT, UNTRIED, RecipientResult
from mailengine.delivery.plan import Hop, HostHealth
from mailengine.delivery.slots import ConnectionSlots, shared_caps, wants_connection
from mailengine.scheduler.grants import Grants, Lease
from mailengine.scheduler.shaping import Path, Shaper

IDLE_SECONDS = 3.0  # an idle connection waits this long for more work, then QUITs
# ... and only this long under a shared cap another node waits for: long enough for the
# next message of a steady stream (closing between two messages cost a new connection
# each, and their leases lingering in the store left the cap mostly unused), short
# enough that a node out of work frees its slots for the node that has some.
WANTED_IDLE_SECONDS = 0.5
SHORTAGE_SECONDS = 1.0  # no new connection this long after running out of descriptors
KEPT_POOLS = 5000  # idle pools kept for their counters (the web admin's hosts)
LEASE_RETRY_SECONDS = 0.25  # a shared cap was full: ask again this much later

log = Logger(namespace="mailengine.smtp_out")


# (address, port, name whose certificate must verify or "", shaping path key or "")
PoolKey = tuple[str, int, str, str]


def _untried(job: Job) -> None:
    """Never offered to a server: no attempt counted, due again at once (engine stopping)."""
    job.finish_with([RecipientResult(a, UNTRIED) for a in job.recipients])


def _is_busy(pool: HostPool) -> bool:
    return bool(pool.clients or pool.pending or pool.connecting)


def is_descriptor_shortage(reason: Failure) -> bool:
    """The socket could not even be made: this process (or the system) is out of files."""
    return getattr(reason.value, "osError", None) in (errno.EMFILE, errno.ENFILE)


class _Factory(protocol.ClientFactory):
    noisy = False

    def __init__(self, pool: HostPool, helo: str = "") -> None:
        self.pool = pool
        self.helo = helo  # the egress source's own name; "": the engine's

    def buildProtocol(self, addr: Any) -> OutboundClient:
        return self.pool.build_client(self.helo)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.pool.connect_failed(reason)


class HostPool:
    """Jobs for one MX address, and the connections that serve them."""

    def __init__(self, pools: Pools, key: PoolKey, hop: Hop, path: Path | None = None) -> None:
        self.pools = pools
        self.key = key
        self.hop = hop
        self.path = path  # a shaping rule's MX site: its caps, egress pool, session length
        self.rule = path.rule if path is not None else None
        self.sessions: dict[OutboundClient, int] = {}  # messages started per connection
        self.settings = pools.settings
        self.verify_name = key[2]
        self.pending: deque[Job] = deque()
        self.idle: list[OutboundClient] = []
        self.clients: set[OutboundClient] = set()
        self.connecting = 0  # dialled or greeting, not ready yet
        self.plaintext_only = False  # opportunistic STARTTLS failed here once
        self.sent = 0
        self.failed = 0
        self.last_error = ""
        self.protocol_errors = 0  # sessions ended because the server was out of step
        self.misbehaving = ""  # the last protocol error (the web admin, /metrics)
        self.leases: list[Lease] = []  # shared caps (cluster): one per connection
        self.lease_retry: Any = None  # a shared cap was full: the timer to ask again

    @property
    def name(self) -> str:
        return f"{self.hop.host} ({self.hop.address}:{self.hop.port})"

    @property
    def open_connections(self) -> int:
        return self.pools.slots.open_count(self.key)

    # -- work in ---------------------------------------------------------

    def submit(self, job: Job) -> None:
        if self.pools.stopping:
            _untried(job)  # routed after the stop began (a late DNS answer, a fail-over)
            return
        self.pending.append(job)
        self.serve()

    def serve(self) -> None:
        """Give waiting jobs to idle connections; open more while the caps allow."""
        pending, idle = self.pending, self.idle
        while pending and idle:
            self.give(idle.pop(), pending.popleft())
        if not idle:
            self.pools.idle_pools.discard(self)
        self.open_more()

    def open_more(self) -> None:
        pools = self.pools
        if pools.short_until and pools.is_short_of_descriptors():
            return  # the jobs wait for a connection to free up, or for the pause to end
        if pools.health.is_down(self.hop, pools.reactor.seconds()):
            # It failed moments ago: no new connection until its back-off is over
            # (no reconnect storms); jobs nobody here can serve go elsewhere.
            self._release_stranded()
            return
        per_host, total = pools.caps()
        if self.rule is not None and self.rule.max_connections:
            per_host = self.rule.max_connections
        while wants_connection(len(self.pending), self.connecting, len(self.idle)):
            if pools.shaper.connection_wait(self.path) is not None:
                break  # the rule's site is at its cap: a close on the site wakes us
            if self.lease_retry is not None:
                break  # a shared cap is full: its timer asks again
            if pools.slots.may_open(self.key, per_host_max=per_host, total_max=total):
                self.dial()
            else:
                if pools.slots.blocked_by_total(self.key, per_host_max=per_host, total_max=total):
                    pools.slots.wait_for_slot(self.key)
                    pools.close_an_idle_connection(self)
                break

    def dial(self) -> None:
        pools = self.pools
        pools.slots.opened(self.key)
        pools.shaper.connection_opened(self.path)
        self.connecting += 1
        if pools.grants is not None:
            pools.grants.lease(self._shared_caps(), self._leased)  # then it connects
            return
        self._connect()

    def _shared_caps(self) -> Any:
        per_host, total = self.pools.caps()
        site_max = self.rule.max_connections if self.rule is not None else 0
        site = self.path.key if self.path is not None else ""
        return shared_caps(
            self.hop.address, self.hop.port, site_max or per_host, total, site, site_max
        )

    def _leased(self, lease: Lease | None) -> None:
        """The shared caps answered: connect, or give the slot back and ask again later."""
        pools = self.pools
        if lease is not None and self.pending and not pools.stopping:
            self.leases.append(lease)
            self._connect()
            return
        if lease is not None and pools.grants is not None:
            pools.grants.release(lease)
        self.connecting -= 1
        pools.slots.closed(self.key)
        pools.shaper.connection_closed(self.path)
        if lease is None and self.lease_retry is None and not pools.stopping:
            self.lease_retry = pools.reactor.callLater(LEASE_RETRY_SECONDS, self._lease_again)
        pools.forget_if_unused(self)

    def _lease_again(self) -> None:
        self.lease_retry = None
        if self.pending and not self.pools.stopping:
            self.open_more()

    def _connect(self) -> None:
        pools = self.pools
        hop = self.hop
        source = pools.shaper.source_for(self.path)
        bind = pools.bind_address_for(hop.address, source.ip if source else None)
        # The pool's HELO name goes with its address only when that address is bound.
        helo = source.helo if source is not None and bind is not None else ""
        pools.reactor.connectTCP(
            hop.address,
            hop.port,
            _Factory(self, helo),
            timeout=self.settings.connect_timeout,
            bindAddress=bind,
        )

    def build_client(self, helo: str = "") -> OutboundClient:
        if self.verify_name:
            context: Any = ssl.optionsForClientTLS(self.verify_name)
        elif self.plaintext_only:
            context = None
        else:
            context = self.pools.opportunistic_context
        client = OutboundClient(self, context, require_tls=bool(self.verify_name), helo=helo)
        client.callLater = self.pools.reactor.callLater  # type: ignore[method-assign]
        self.clients.add(client)
        return client

    def give(self, client: OutboundClient, job: Job) -> None:
        """Start ``job`` on ``client`` unless it is too big for the server or must wait."""
        if not client.is_usable:
            self.resend(job)  # closing already: another connection takes it
            return
        if client.size_limit and job.size > client.size_limit:
            job.on_connection(client)
            reply = (
                f"552 message of {job.size} bytes exceeds the server's limit of "
                f"{client.size_limit} bytes (SIZE); not sent"
            )
            job.finish_all(HARD, reply, 552)
            self.pools.reactor.callLater(0, self.transaction_done, client)
            return
        wait = self.pools.bandwidth_wait(job.size)
        if wait > 0:
            client.job = job  # busy while it waits
            call = self.pools.reactor.callLater(wait, self._send_later, client, job)
            self.pools.bandwidth_waits[call] = None
            return
        job.on_connection(client)
        if self.rule is not None and self.rule.max_messages_per_connection:
            self.sessions[client] = self.sessions.get(client, 0) + 1
        client.send(job)

    def _send_later(self, client: OutboundClient, job: Job) -> None:
        self.pools.forget_finished_waits()
        if client.job is not job:
            return  # its connection closed meanwhile and handed it back
        client.job = None
        if self.pools.stopping:
            _untried(job)
            client.quit()
            return
        self.give(client, job)

    # -- what connections report ---------------------------------------

    def session_ready(self, client: OutboundClient) -> None:
        self.connecting -= 1
        self.pools.health.mark_up(self.hop)
        self.transaction_done(client)

    def transaction_done(self, client: OutboundClient) -> None:
        """The connection is free: next job, or park it."""
        if self.pools.stopping:
            client.quit()
            return
        limit = self.rule.max_messages_per_connection if self.rule is not None else 0
        if limit and self.sessions.get(client, 0) >= limit:
            client.quit()  # its rule's messages per connection: the next one reconnects
            return
        grants = self.pools.grants
        if (
            grants is not None
            and self.leases
            and (grants.is_over_share(self.leases[-1]) or grants.should_rotate(self.leases[-1]))
        ):
            client.quit()  # over its share of shared caps, or another node's turn
            return
        if self.pending:
            self.give(client, self.pending.popleft())
        else:
            idle = IDLE_SECONDS
            if grants is not None and self.leases and grants.is_wanted(self.leases[-1]):
                idle = WANTED_IDLE_SECONDS  # another node waits for the cap
            client.park(idle, self.pools.reactor)
            self.idle.append(client)
            self.pools.idle_pools.add(self)
            self.pools.slot_wanted()

    def idle_expired(self, client: OutboundClient) -> None:
        """Idle too long: out of the idle list first, so no job is given to it, then QUIT."""
        if client in self.idle:
            self.idle.remove(client)
        client.quit()

    def resend(self, job: Job) -> None:
        """Back to the front of the line (its connection went away unanswered)."""
        if self.pools.stopping:
            _untried(job)
            return
        self.pending.appendleft(job)
        self.serve()

    def misbehaved(self, client: OutboundClient, reason: str) -> None:
        """The server answered out of step (issue 9): shown as misbehaving, and treated
        as down so that its waiting jobs go elsewhere and it gets no storm of retries."""
        self.protocol_errors += 1
        self.misbehaving = reason
        self.pools.protocol_errors += 1
        if client.is_ready:
            self._unreachable("protocol error: " + reason)

    def session_failed(self, client: OutboundClient, reason: str, *, tls: bool) -> None:
        self.connecting -= 1
        if tls and not self.verify_name:
            # RFC 7435: opportunistic TLS that fails is retried in plain text (connections
            # opened before the first failure may fail the same way: not a new failure).
            if not self.plaintext_only:
                self.plaintext_only = True
                self.last_error = "STARTTLS failed; using plain text: " + reason
            return
        if self.verify_name and tls:
            # The certificate fails this pool's domains only: the server is not down.
            reason = f"TLS required for this domain: certificate of {self.verify_name}: {reason}"
            self._unreachable(reason, is_down=False)
            return
        self._unreachable(reason)

    def connect_failed(self, reason: Failure) -> None:
        self.connecting -= 1
        if self.settings.debug:
            log.info(
                "{host}: connection failed: {why}", host=self.name, why=describe_failure(reason)
            )
        if is_descriptor_shortage(reason):
            # Our shortage, not the server's fault: its jobs wait here, it is not marked
            # down, nothing fails over (every other server would fail the same way).
            self.pools.short_of_descriptors(describe_failure(reason))
        else:
            self._unreachable(describe_failure(reason))
        self._closed()

    def _unreachable(self, reason: str, *, is_down: bool = True) -> None:
        self.last_error = reason
        if is_down:
            self.pools.health.mark_down(self.hop, self.pools.reactor.seconds(), reason)
        self._release_stranded(reason)

    def _release_stranded(self, reason: str = "") -> None:
        """Waiting jobs that no connection here will serve go to their next server
        (``reason``: this server just failed; else only while it is marked down)."""
        if not self.pending or self.connecting or any(c.is_serving for c in self.clients):
            return  # other connections will serve the waiting jobs
        pools = self.pools
        reason = reason or pools.health.down_reason(self.hop, pools.reactor.seconds()) or ""
        if not reason:
            return  # they wait for a slot (total cap, descriptors), not for a dead server
        jobs, self.pending = list(self.pending), deque()
        for job in jobs:
            pools.fail_over(job, reason or self.last_error or "no connection")

    def lost(self, client: OutboundClient) -> None:
        self.clients.discard(client)
        self.sessions.pop(client, None)
        if client in self.idle:
            self.idle.remove(client)
        self._closed()

    def _closed(self) -> None:
        self.pools.slots.closed(self.key)
        self.pools.shaper.connection_closed(self.path)
        if self.leases and self.pools.grants is not None:
            self.pools.grants.release(self.leases.pop())
        if self.pending and not self.pools.stopping:
            self.open_more()
            self._release_stranded()
        self.pools.slot_wanted()
        if self.path is not None and self.rule is not None and self.rule.max_connections:
            self.pools.site_slot_freed(self.path)
        self.pools.forget_if_unused(self)

    def count(self, results: list[RecipientResult]) -> None:
        for r in results:
            if r.kind == SENT:
                self.sent += 1
            elif r.kind != UNTRIED:  # untried: the engine stopped, the server did nothing
                self.failed += 1
                self.last_error = r.reply or self.last_error


class Pools:
    """Every host pool, the connection slots, host health and the bandwidth cap."""

    def __init__(
        self,
        reactor: Any,
        settings: ClientSettings,
        caps: Callable[[], tuple[int, int]],
        fail_over: Callable[[Job, str], None],
        bandwidth_limit: Callable[[], int],
        outbound_ip: Callable[[], str],
        on_descriptor_shortage: Callable[[str], None] = lambda reason: None,
        shaper: Shaper | None = None,
        grants: Grants | None = None,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.caps = caps  # () -> (max per host, max total), read at use time
        self.fail_over = fail_over
        self.bandwidth_limit = bandwidth_limit
        self.outbound_ip = outbound_ip
        self.on_descriptor_shortage = on_descriptor_shortage
        self.short_until = 0.0  # no dialling before this time (out of descriptors)
        self._shortage_over: Any = None
        self.slots = ConnectionSlots()
        self.health = HostHealth()
        self.pools: dict[PoolKey, HostPool] = {}
        self.idle_pools: set[HostPool] = set()
        self.bandwidth_waits: dict[Any, None] = {}  # sends held back by the bandwidth cap
        self.shaper = shaper or Shaper()
        self.grants = grants  # connection caps shared with other nodes (None: this one only)
        self.by_path: dict[str, set[HostPool]] = {}  # pools sharing a rule's MX site cap
        self.stopping = False
        self.protocol_errors = 0  # sessions ended by a server out of step (/metrics)
        # RFC 7435 opportunistic TLS: encrypt, check nothing.
        self.opportunistic_context = ssl.CertificateOptions(verify=False)

    def pool_for(self, hop: Hop, verify_name: str = "", path: Path | None = None) -> HostPool:
        key = (hop.address, hop.port, verify_name, path.key if path is not None else "")
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = HostPool(self, key, hop, path)
            if path is not None:
                self.by_path.setdefault(path.key, set()).add(pool)
        return pool

    def _drop(self, pool: HostPool) -> None:
        self.pools.pop(pool.key, None)
        self.idle_pools.discard(pool)
        if pool.path is not None:
            sharing = self.by_path.get(pool.path.key)
            if sharing is not None:
                sharing.discard(pool)
                if not sharing:
                    del self.by_path[pool.path.key]

    def forget_if_unused(self, pool: HostPool) -> None:
        if not _is_busy(pool) and pool.sent == 0 and pool.failed == 0 and not pool.last_error:
            self._drop(pool)

    def site_slot_freed(self, path: Path) -> None:
        """A connection on a rule's MX site closed: another pool of the site may open one."""
        for pool in list(self.by_path.get(path.key, ())):
            if pool.pending and self.shaper.connection_wait(path) is None:
                pool.open_more()

    def withdraw(self, domain: str) -> int:
        """Jobs for ``domain`` still waiting for a connection end untried (suspended)."""
        count = 0
        for pool in list(self.pools.values()):
            if not any(job.domain == domain for job in pool.pending):
                continue
            keep: deque[Job] = deque()
            for job in pool.pending:
                if job.domain == domain:
                    _untried(job)
                    count += 1
                else:
                    keep.append(job)
            pool.pending = keep
        return count

    def forget_idle(self, keep: int = KEPT_POOLS) -> int:
        """Past ``keep`` pools, forget idle ones with the least traffic (their counters go),
        so that mail to ever more servers does not grow memory without end."""
        self.health.forget_expired(self.reactor.seconds())
        excess = len(self.pools) - keep
        if excess <= 0:
            return 0
        idle = sorted(
            (p for p in self.pools.values() if not _is_busy(p)), key=lambda p: p.sent + p.failed
        )[:excess]
        for pool in idle:
            self._drop(pool)
        return len(idle)

    # -- out of file descriptors ---------------------------------------------

    def is_short_of_descriptors(self) -> bool:
        return self.short_until > 0 and self.reactor.seconds() < self.short_until

    def short_of_descriptors(self, reason: str) -> None:
        """A dial failed for want of descriptors: pause dialling for a moment, then offer
        the waiting jobs new connections again (told once per pause)."""
        now = self.reactor.seconds()
        if not self.is_short_of_descriptors():
            self.on_descriptor_shortage(reason)
        self.short_until = now + SHORTAGE_SECONDS
        if self._shortage_over is None or not self._shortage_over.active():
            self._shortage_over = self.reactor.callLater(SHORTAGE_SECONDS, self._dial_again)

    def _dial_again(self) -> None:
        self._shortage_over = None
        if self.is_short_of_descriptors():  # failed again meanwhile: wait until then
            delay = self.short_until - self.reactor.seconds()
            self._shortage_over = self.reactor.callLater(delay, self._dial_again)
            return
        self.short_until = 0.0
        if not self.stopping:
            for pool in list(self.pools.values()):
                if pool.pending:
                    pool.open_more()

    def bind_address_for(self, address: str, source: str | None = None) -> tuple[str, int] | None:
        """The local address a connection to ``address`` binds: the egress pool's turn
        (``source``), else [smtp_out] outbound_ip, when of the same family."""
        source = source or self.outbound_ip()
        if not source:
            return None
        same_family = ipaddress.ip_address(source).version == ipaddress.ip_address(address).version
        return (source, 0) if same_family else None

    def bandwidth_wait(self, size: int) -> float:
        limit = self.bandwidth_limit()
        if limit <= 0:
            return 0.0
        now = self.reactor.seconds()
        wait = self.shaper.bandwidth_wait(size, limit, now)
        return 0.0 if wait is None or wait.until is None else wait.until - now

    def forget_finished_waits(self) -> None:
        for call in [c for c in self.bandwidth_waits if not c.active()]:
            del self.bandwidth_waits[call]

    def caps_changed(self) -> None:
        """Connection or bandwidth caps were edited at run time: act on them now.

        Hosts with waiting jobs may open the new slots, and sends held back by the
        old bandwidth cap are planned again with the new one.
        """
        for pool in list(self.pools.values()):
            if pool.pending:
                pool.open_more()
        self.slot_wanted()
        waits, self.bandwidth_waits = list(self.bandwidth_waits), {}
        for call in waits:
            if call.active():
                call.reset(0)

    def slot_wanted(self) -> None:
        """A slot may be free: offer it to the hosts waiting for one."""
        for _ in range(len(self.slots.waiting)):
            key = self.slots.next_waiting()
            pool = self.pools.get(key) if key is not None else None  # type: ignore[call-overload]
            if pool is not None and pool.pending:
                pool.open_more()
            if self.slots.total >= self.caps()[1]:
                break

    def close_an_idle_connection(self, needy: HostPool) -> None:
        for pool in list(self.idle_pools):
            if pool is not needy and pool.idle:
                pool.idle.pop().quit()
                if not pool.idle:
                    self.idle_pools.discard(pool)
                return

    def open_connections(self) -> int:
        return self.slots.total

    # -- stopping --------------------------------------------------------

    def stop_taking(self) -> None:
        """Waiting jobs end untried; idle connections QUIT; busy ones finish."""
        self.stopping = True
        for pool in list(self.pools.values()):
            jobs, pool.pending = list(pool.pending), deque()
            for job in jobs:
                _untried(job)
            for client in list(pool.idle):
                client.quit()
            pool.idle.clear()
        self.idle_pools.clear()

    def abort_all(self, reason: str) -> None:
        for pool in list(self.pools.values()):
            for client in list(pool.clients):
                client.abort(reason)
