"""The engine's MXResolver: bypass table, then a shared TTL cache over twisted.names (shell).

One instance per engine (made by service.py, handed to delivery). Answers are cached per
(name, record type), so MX hosts shared by many domains are asked about once;
concurrent questions about one name share one query on the wire.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailengine.dns.answer import Destination, DNSFailure, MXResolver, Resolution, Target
from mailengine.dns.bypass import BypassEntry, BypassTable
from mailengine.dns.cache import AnswerCache
from mailengine.dns.nameservers import QUERY_TIMEOUT_SECONDS, Nameservers, system_nameservers
from mailengine.dns.records import CNAME_LOOP, Answer, Record, addresses_of, follow_cnames
from mailengine.dns.resolvconf import DNS_PORT
from mailengine.dns.targets import (
    BadDomain,
    address_literal,
    bypass_destination,
    describe_destination,
    failed,
    is_null_mx,
    literal_destination,
    mail_hosts,
    no_usable_host,
    normalise_domain,
    order_targets,
)

log = Logger(namespace="mailengine.dns")

Key = tuple[str, str]
MakeNameservers = Callable[[Sequence[tuple[str, int]]], Any]  # -> a Nameservers


@attrs.define
class _Pass:
    """One resolve: which cache entries it used, and how fresh they must be."""

    fresh_for: float = 0.0
    keys: set[Key] = attrs.field(factory=set)


@attrs.frozen
class _Chased:
    """The last answer of a CNAME chase and the wanted records at its end."""

    answer: Answer
    records: tuple[Record, ...] = ()


@attrs.frozen
class _HostAddresses:
    host: str
    preference: int
    addresses: tuple[str, ...]
    problem: str = ""  # why there are none, for the DSN
    is_transient: bool = False


class MailResolver:
    """``resolve(domain)`` -> Deferred[Resolution]; never errbacks (see answer.py)."""

    def __init__(
        self,
        config: Any,
        reactor: Any,
        servers: Sequence[tuple[str, int]],
        *,
        clock: Any = None,
        rng: random.Random | None = None,
        timeout: Sequence[float] = QUERY_TIMEOUT_SECONDS,
        cache: AnswerCache | None = None,
        make_nameservers: MakeNameservers | None = None,
    ) -> None:
        self.config = config
        self.clock = clock if clock is not None else reactor
        self.rng = rng if rng is not None else random.Random()
        self.cache = cache if cache is not None else AnswerCache()
        self._make_nameservers: MakeNameservers = make_nameservers or (
            lambda addrs: Nameservers(addrs, reactor, timeout, self._is_debug)
        )
        self.nameservers = self._make_nameservers(list(servers))
        self._ns_bypass: dict[tuple[str, int], Any] = {}
        self._bypass_entries: tuple[BypassEntry, ...] = ()
        self._bypass = BypassTable()
        self._in_flight: dict[Key, list[defer.Deferred[Answer]]] = {}
        # domain -> (its Destination before ordering, until when every answer it rests
        # on stands): a message to a domain resolved a moment ago skips the chase
        self._known: dict[str, tuple[Destination, float]] = {}

    @classmethod
    def from_config(
        cls, config: Any, reactor: Any, resolv_conf: str = "/etc/resolv.conf", **kwargs: Any
    ) -> MailResolver:
        """``[dns] servers``, or resolv.conf's nameservers when that is empty (never both)."""
        servers = list(config.dns.servers) or system_nameservers(resolv_conf)
        return cls(config, reactor, servers, **kwargs)

    # -- the interface -------------------------------------------------------

    def resolve(self, domain: str) -> defer.Deferred[Resolution]:
        known = self._known.get(domain)
        if known is not None:
            destination, until = known
            if until > self.clock.seconds() and self.config.dns.bypass is self._bypass_entries:
                return defer.succeed(self._ordered(destination))
            del self._known[domain]
        return self._resolve(domain, _Pass())

    def _remember(self, resolution: Resolution, domain: str, lookup: _Pass) -> Resolution:
        """Keep a Destination until the first answer it rests on expires (bypass: until
        the table changes). Failures are not kept here: their answers are, in the cache."""
        if isinstance(resolution, Destination):
            if len(self._known) >= self.cache.max_entries:
                self._known.clear()
            first = self._first_expiry(lookup)
            self._known[domain] = (resolution, math.inf if first is None else first)
        return resolution

    def warm(self, domain: str, fresh_for: float = 0.0) -> defer.Deferred[float]:
        """Resolve ``domain`` again, re-asking for answers expiring within ``fresh_for``
        seconds; fires with when the first answer used expires (keep-warm)."""
        lookup = _Pass(fresh_for)
        d: defer.Deferred[Any] = self._resolve(domain, lookup)
        return d.addCallback(lambda _: self._expires_at(lookup))

    def close(self) -> None:
        """Close lingering TCP connections (engine stop)."""
        for nameservers in (self.nameservers, *self._ns_bypass.values()):
            nameservers.close()

    # -- config read at use time -----------------------------------------------

    def _is_debug(self) -> bool:
        return bool(self.config.logs.debug_dns)

    def bypass_table(self) -> BypassTable:
        """``[dns] bypass`` as it is now; a changed table also drops cached answers."""
        entries = self.config.dns.bypass
        if entries is not self._bypass_entries:
            if tuple(entries) != self._bypass_entries:
                self._bypass = BypassTable.from_entries(entries)
                self.cache.clear()
                self._known.clear()
            self._bypass_entries = entries
        return self._bypass

    def _nameservers_for(self, name: str) -> Any:
        entry = self.bypass_table().nameserver_for(name)
        if entry is None:
            return self.nameservers
        server = (entry.ip, entry.port or DNS_PORT)
        if server not in self._ns_bypass:
            self._ns_bypass[server] = self._make_nameservers([server])
        return self._ns_bypass[server]

    # -- one query: cache, then in-flight, then the wire ----------------------

    def _query(self, name: str, kind: str, lookup: _Pass) -> defer.Deferred[Answer]:
        key = (name, kind)
        lookup.keys.add(key)
        kept = self.cache.get(name, kind, self.clock.seconds(), lookup.fresh_for)
        if kept is not None:
            return defer.succeed(kept)
        waiting = self._in_flight.get(key)
        if waiting is not None:
            d: defer.Deferred[Answer] = defer.Deferred()
            waiting.append(d)
            return d
        waiting = self._in_flight[key] = []
        d = self._nameservers_for(name).query(name, kind)
        d.addBoth(self._answered, key, waiting)
        return d

    def _answered(
        self, result: Answer | Failure, key: Key, waiting: list[defer.Deferred[Answer]]
    ) -> Answer | Failure:
        del self._in_flight[key]
        if isinstance(result, Answer):
            self.cache.put(result, self.clock.seconds())
        for d in waiting:
            d.callback(result)
        return result

    def _expires_at(self, lookup: _Pass) -> float:
        first = self._first_expiry(lookup)
        return first if first is not None else self.clock.seconds() + self.cache.ceiling

    def _first_expiry(self, lookup: _Pass) -> float | None:
        times = [self.cache.expires_at(*key) for key in lookup.keys]
        known = [t for t in times if t is not None]
        return min(known) if known else None

    # -- from answers to a Resolution -------------------------------------------

    async def _route(self, raw: str, lookup: _Pass) -> Resolution:
        ip = address_literal(raw)
        if ip is not None:
            return literal_destination(raw.strip(), ip)
        try:
            domain = normalise_domain(raw)
        except BadDomain as exc:
            return failed(raw, str(exc), permanent=True)
        pinned = self.bypass_table().mx_for(domain)
        if pinned:
            return bypass_destination(domain, pinned)
        mx = await self._chase(domain, "MX", lookup)
        if mx.answer.error:
            return self._failed_answer(domain, mx.answer)
        if is_null_mx(mx.records):
            return failed(
                domain, f"{domain} does not accept mail (null MX, RFC 7505)", permanent=True
            )
        hosts = mail_hosts(mx.records)
        if not hosts:  # RFC 5321 §5.1: no MX, so the domain itself is the host
            return await self._implicit(domain, lookup)
        found = await defer.gatherResults(
            [
                defer.Deferred.fromCoroutine(
                    self._addresses(host, pref, mx.answer.additional, lookup)
                )
                for pref, host in hosts
            ]
        )
        targets = tuple(Target(h.preference, h.host, h.addresses) for h in found if h.addresses)
        if not targets:
            return no_usable_host(domain, [h.problem for h in found])
        return Destination(domain, targets, source="dns")

    async def _implicit(self, domain: str, lookup: _Pass) -> Resolution:
        own = await self._addresses(domain, 0, (), lookup)
        if own.addresses:
            return Destination(domain, (Target(0, domain, own.addresses),), source="implicit")
        if own.is_transient:
            return failed(domain, own.problem, permanent=False)
        return failed(domain, f"{domain} has no MX and no A or AAAA records", permanent=True)

    async def _addresses(
        self, host: str, preference: int, additional: Sequence[Record], lookup: _Pass
    ) -> _HostAddresses:
        """A then AAAA of ``host``: from the additional section when it has them."""
        given = addresses_of(host, additional)
        if given:
            return _HostAddresses(host, preference, given)
        a, aaaa = await defer.gatherResults(
            [
                defer.Deferred.fromCoroutine(self._chase(host, kind, lookup))
                for kind in ("A", "AAAA")
            ]
        )
        addresses = tuple(dict.fromkeys(r.data for r in (*a.records, *aaaa.records)))
        if addresses:
            return _HostAddresses(host, preference, addresses)
        transient = [c.answer for c in (a, aaaa) if c.answer.is_transient_failure]
        if transient:
            return _HostAddresses(host, preference, (), transient[0].describe_error(), True)
        if a.answer.is_permanent_failure:
            return _HostAddresses(host, preference, (), a.answer.describe_error())
        return _HostAddresses(host, preference, (), f"{host} has no A or AAAA records")

    async def _chase(self, name: str, kind: str, lookup: _Pass) -> _Chased:
        """Ask, following CNAMEs; re-ask at the chain's end when the answer stops short."""
        hops = 0
        while True:
            answer = await self._query(name, kind, lookup)
            if answer.error:
                return _Chased(answer)
            chase = follow_cnames(answer, name, kind, hops)
            if chase.is_broken:
                return _Chased(attrs.evolve(answer, error=CNAME_LOOP))
            if chase.records or chase.name == name:
                return _Chased(answer, chase.records)
            name, hops = chase.name, chase.hops

    @staticmethod
    def _failed_answer(domain: str, answer: Answer) -> DNSFailure:
        why = answer.describe_error()
        if answer.name != domain:
            why = f"{why} (CNAME of {domain})"
        return failed(domain, why, permanent=answer.is_permanent_failure)

    # -- the end of every resolve -----------------------------------------------

    def _resolve(self, domain: str, lookup: _Pass) -> defer.Deferred[Resolution]:
        d = defer.Deferred.fromCoroutine(self._route(domain, lookup))
        d.addCallback(self._remember, domain, lookup)
        d.addCallback(self._ordered)
        d.addCallback(self._dated, lookup)
        d.addErrback(self._bug, domain)
        return d

    def _dated(self, resolution: Resolution, lookup: _Pass) -> Resolution:
        """A failure says until when its cached answers stand (the Destinations view)."""
        if isinstance(resolution, Destination):
            return resolution
        first = self._first_expiry(lookup)
        return resolution if first is None else attrs.evolve(resolution, until=first)

    def _ordered(self, resolution: Resolution) -> Resolution:
        if isinstance(resolution, Destination):
            resolution = attrs.evolve(
                resolution, targets=order_targets(resolution.targets, self.rng)
            )
        if self._is_debug():
            if isinstance(resolution, Destination):
                log.info("{text}", text=describe_destination(resolution))
            else:
                kind = "permanent" if resolution.permanent else "transient"
                log.info("{reason} ({kind})", reason=resolution.reason, kind=kind)
        return resolution

    def _bug(self, failure: Failure, domain: str) -> Resolution:
        log.failure("resolving {domain} failed", failure, domain=domain)
        return DNSFailure(domain, False, "DNS lookup failed: internal error (see the log)")


if TYPE_CHECKING:
    _conforms: type[MXResolver] = MailResolver
