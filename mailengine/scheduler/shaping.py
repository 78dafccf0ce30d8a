"""Every cap and throttle in one place: may this destination take one more message, may
this path open one more connection, now — and if not, why and until when (pure).

A *destination* is a recipient domain: its messages wait in its own line (the queue
parks them under its name), so a slow, suspended or rate-limited destination holds
only its own mail. A *path* is a rule's MX site (the set of MX host names a domain
resolves to, so domains hosted by one provider share it): connection caps of a rule
hold per path. Time comes in as ``now`` (seconds); nothing here reads a clock.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable

import attrs

from mailengine.scheduler.caps import bandwidth_cap, hourly_message_cap
from mailengine.scheduler.grants import WHEN_TOLD, Grants, SharedReaction
from mailengine.scheduler.rules import SUSPEND, THROTTLE, Reaction, Rule, Rulebook, Source

IN_FLIGHT_PER_CONNECTION = 4  # messages a destination may hold in flight per connection
MIN_IN_FLIGHT = 32  # ... and at least this many (the send loop's window is 256 or more)
PACE_SLACK_SECONDS = 1.0  # a paced destination may catch up this much after a pause
RAMP_FACTOR = 1.1  # throttle recovery: +10 % per step (KumoMTA PR #594)
MAX_RAMP_STEPS = 200  # 1.1**200 is far past any ceiling; avoids float overflow
RATE_WINDOW_SECONDS = 60.0
# Messages a destination may have waiting on an MX lookup while its DNS is not known to
# answer (new, failing, or its last lookup went out on the wire): a slow or failing DNS
# then holds only these few in the send loop's window, not its whole budget.
MAX_DNS_PROBES = 2


class Reason(enum.Enum):
    """Why a message or a connection waits."""

    PAUSED = "paused"
    HOURLY_CAP = "hourly cap"
    BANDWIDTH = "bandwidth"
    SUSPENDED = "suspended"
    RATE = "rate"
    CONNECTION_CAP = "connection cap"
    DNS_WAIT = "DNS wait"


@attrs.frozen
class Wait:
    """The answer "not now": ``until`` a time, or None until one of its own finishes."""

    reason: Reason
    until: float | None = None
    detail: str = ""


SENDING, SUSPENDED, THROTTLED, DNS_FAILING, DNS_LOOKUP, CAPPED, RATED = (
    "sending",
    "suspended",
    "throttled",
    "dns_failing",
    "dns_lookup",
    "connection_capped",
    "rate_limited",
)
STATE_KINDS = (SENDING, SUSPENDED, THROTTLED, DNS_FAILING, DNS_LOOKUP, CAPPED, RATED)
LOOKING_UP = "MX lookup in progress"


@attrs.frozen
class StateView:
    """A destination's state: its kind (bounded), words for people, why, until when."""

    kind: str
    label: str
    reason: str = ""
    until: float = 0.0  # suspended: when it ends; DNS failing: when its answer expires


@attrs.frozen
class Path:
    """Where a rule's connections go: the rule and the MX site (sorted host names)."""

    rule: Rule
    site: str

    @property
    def key(self) -> str:
        return f"{self.rule.name}@{self.site}"


class Pacer:
    """``per_minute`` messages spread evenly (one every 60/per_minute s), a little slack."""

    __slots__ = ("next_at",)

    def __init__(self) -> None:
        self.next_at = -math.inf

    def wait_until(self, now: float) -> float | None:
        return None if now >= self.next_at else self.next_at

    def take(self, per_minute: float, now: float) -> None:
        self.next_at = max(self.next_at, now - PACE_SLACK_SECONDS) + 60.0 / per_minute


@attrs.define
class Throttle:
    """A rate cut by a deferral, recovering by +10 % per step without another one."""

    rate: float  # per minute, as last halved
    ceiling: float  # the ramp ends here: the rule's rate, or the rate seen before
    step_seconds: float
    since: float  # the last deferral
    reply: str

    def current(self, now: float) -> float:
        steps = int(max(0.0, now - self.since) // self.step_seconds) if self.step_seconds else 0
        if steps >= MAX_RAMP_STEPS:
            return self.ceiling
        return min(self.ceiling, self.rate * RAMP_FACTOR**steps)

    def is_over(self, now: float) -> bool:
        return self.current(now) >= self.ceiling


@attrs.define(eq=False)
class DestinationState:
    """One recipient domain as the shaper knows it (kept incrementally)."""

    domain: str
    rule: Rule | None = None
    in_flight: int = 0
    pacer: Pacer = attrs.Factory(Pacer)
    throttle: Throttle | None = None
    suspended_until: float = 0.0
    suspended_by: str = ""  # the reply that triggered it, or "operator"
    last_error: str = ""
    is_dns_failing: bool = False
    dns_until: float | None = None  # the failed answer is cached until then (None: unknown)
    dns_lookups: int = 0  # MX lookups out for it now
    is_dns_known: bool = False  # its last lookup got a lasting answer (servers, or none)
    is_dns_transient: bool = False  # failing: a timeout or SERVFAIL, not "no such domain"
    dns_probes: set[str] = attrs.Factory(set)  # messages let in while its DNS is unknown
    window_start: float = 0.0
    count_now: int = 0  # messages started in the current rate window
    count_before: int = 0  # and in the one before
    last_started: float = -math.inf

    def count_started(self, now: float) -> None:
        if now - self.window_start >= RATE_WINDOW_SECONDS:
            gap = now - self.window_start
            self.count_before = self.count_now if gap < 2 * RATE_WINDOW_SECONDS else 0
            self.count_now = 0
            self.window_start = now
        self.count_now += 1

    def observed_per_minute(self, now: float) -> float:
        """Messages started over the last minute (the previous window, weighted)."""
        elapsed = now - self.window_start
        if elapsed >= 2 * RATE_WINDOW_SECONDS:
            return 0.0
        if elapsed >= RATE_WINDOW_SECONDS:
            return self.count_now * (2 - elapsed / RATE_WINDOW_SECONDS)
        return self.count_now + self.count_before * (1 - elapsed / RATE_WINDOW_SECONDS)

    def is_idle(self, now: float) -> bool:
        return (
            self.in_flight == 0
            and self.dns_lookups == 0
            and not self.dns_probes
            and self.suspended_until <= now
            and (self.throttle is None or self.throttle.is_over(now))
        )


class Shaper:
    """The one answer to "may it go now" for destinations, paths and the whole engine."""

    def __init__(self, rulebook: Rulebook | None = None, per_host: int = 10) -> None:
        self.rulebook = rulebook or Rulebook()
        self.per_host = per_host  # [smtp_out] max_connections_per_host
        self.destinations: dict[str, DestinationState] = {}
        self.connections: dict[str, int] = {}  # path key -> open connections
        self.hourly = hourly_message_cap()
        self.bandwidth = bandwidth_cap()
        self._turns: dict[str, int] = {}  # egress pool -> next source index
        self.rule_counts: dict[str, dict[str, int]] = {}  # rule -> event -> count
        # Caps shared with other nodes (cluster/): asked as well; None: this process only.
        self.grants: Grants | None = None
        self.node = ""  # this node's name in shared reactions

    # -- configuration -----------------------------------------------------

    def configure(self, rulebook: Rulebook, per_host: int) -> None:
        """New rules: known destinations are matched again (by domain; MX on next use)."""
        self.rulebook = rulebook
        self.per_host = per_host
        for dest in self.destinations.values():
            dest.rule = rulebook.for_domain(dest.domain)

    def destination(self, domain: str) -> DestinationState:
        dest = self.destinations.get(domain)
        if dest is None:
            dest = DestinationState(domain, self.rulebook.for_domain(domain))
            self.destinations[domain] = dest
        return dest

    def _count(self, rule: Rule | None, event: str) -> None:
        if rule is not None:
            counts = self.rule_counts.setdefault(rule.name, {})
            counts[event] = counts.get(event, 0) + 1

    # -- the whole engine ----------------------------------------------------

    def global_wait(self, now: float, *, is_paused: bool, hourly_cap: int) -> Wait | None:
        """Sending paused, or the hourly cap reached (``until`` its window allows more)."""
        if is_paused:
            return Wait(Reason.PAUSED)
        if hourly_cap and self.grants is not None:
            until = self.grants.hourly_wait(hourly_cap, now)
            if until is None:
                return None
            return Wait(Reason.HOURLY_CAP, None if until == WHEN_TOLD else until)
        if hourly_cap and self.hourly.available(hourly_cap, now) <= 0:
            return Wait(Reason.HOURLY_CAP, now + self.hourly.wait_seconds(hourly_cap, now))
        return None

    def hourly_room(self, hourly_cap: int, now: float) -> int:
        if self.grants is not None:
            return self.grants.hourly_room(hourly_cap, now)
        return self.hourly.available(hourly_cap, now)

    def took_messages(self, count: int, hourly_cap: int, now: float) -> None:
        if self.grants is not None:
            self.grants.hourly_took(count, hourly_cap, now)
            return
        self.hourly.take(hourly_cap, count, now)

    def bandwidth_wait(self, size: int, limit: int, now: float) -> Wait | None:
        """Bytes per minute for every connection together; the send is counted when it may go."""
        if limit <= 0:
            return None
        wait = self.bandwidth.wait_seconds(limit, now)
        if wait > 0:
            return Wait(Reason.BANDWIDTH, now + wait)
        self.bandwidth.take(limit, size, now)
        return None

    # -- destinations ------------------------------------------------------

    def budget(self, dest: DestinationState) -> int:
        """Messages a destination may hold in flight: enough to keep its connections busy."""
        rule = dest.rule
        connections = rule.max_connections if rule and rule.max_connections else self.per_host
        return max(MIN_IN_FLIGHT, IN_FLIGHT_PER_CONNECTION * connections)

    def per_minute(self, dest: DestinationState, now: float) -> float:
        """The destination's current rate cap (0: none)."""
        throttle = dest.throttle
        if throttle is not None:
            if not throttle.is_over(now):
                return max(1.0, throttle.current(now))
            dest.throttle = None  # ramped all the way back
        rule = dest.rule
        return float(rule.max_messages_per_minute) if rule else 0.0

    def may_send(self, domain: str, now: float) -> Wait | None:
        """May one more message for ``domain`` start now? O(1)."""
        dest = self.destination(domain)
        if dest.suspended_until > now:
            return Wait(Reason.SUSPENDED, dest.suspended_until, dest.suspended_by)
        dns = self._dns_hold(dest, now)
        if dns is not None:
            return dns
        if dest.in_flight >= self.budget(dest):
            return Wait(Reason.CONNECTION_CAP)
        rate = self.per_minute(dest, now)
        if rate:
            until = dest.pacer.wait_until(now)
            if until is not None:
                return Wait(Reason.RATE, until)
            if self.grants is not None:
                until = self.grants.rate_wait(domain, rate, now)
                if until is not None:
                    return Wait(Reason.RATE, None if until == WHEN_TOLD else until, "cluster")
        return None

    def room(self, domain: str, now: float) -> int:
        """How many of its waiting messages may be offered now (paced ones: one)."""
        if self.may_send(domain, now) is not None:
            return 0
        dest = self.destinations[domain]
        if self.per_minute(dest, now):
            return 1
        room = self.budget(dest) - dest.in_flight
        if not dest.is_dns_known:
            room = min(room, MAX_DNS_PROBES - len(dest.dns_probes))
        return room

    def sending(self, domain: str, now: float, key: str = "") -> None:
        """One message for ``domain`` starts (it was allowed by ``may_send``); ``key``
        names it until its MX lookup is answered (``dns_answered``) or it ends."""
        dest = self.destination(domain)
        if key and not dest.is_dns_known:
            dest.dns_probes.add(key)
        dest.in_flight += 1
        dest.last_started = now
        dest.count_started(now)
        rate = self.per_minute(dest, now)
        if rate:
            dest.pacer.take(rate, now)
            if self.grants is not None:
                self.grants.rate_took(domain, rate, now)

    def finished(
        self, domain: str, *, error: str = "", is_sent: bool = False, key: str = ""
    ) -> None:
        """A message for ``domain`` ended its attempt (``error``: the last failure reply)."""
        dest = self.destinations.get(domain)
        if dest is None:
            return
        dest.in_flight = max(0, dest.in_flight - 1)
        dest.dns_probes.discard(key)
        if error:
            dest.last_error = error
        elif is_sent:
            dest.last_error = ""
            dest.is_dns_failing = False

    def dns_started(self, domain: str) -> None:
        """An MX lookup for ``domain`` went out (``dns_done`` when it is answered)."""
        self.destination(domain).dns_lookups += 1

    def dns_done(self, domain: str) -> None:
        dest = self.destinations.get(domain)
        if dest is not None:
            dest.dns_lookups = max(0, dest.dns_lookups - 1)

    def dns_failed(
        self, domain: str, reason: str, until: float | None = None, *, is_transient: bool = False
    ) -> None:
        """The lookup failed; ``until``: when the failed answer leaves the cache. A
        transient failure (timeout, SERVFAIL) holds the destination's mail until then:
        asking again before gets the same cached failure."""
        dest = self.destination(domain)
        dest.is_dns_failing = True
        dest.is_dns_known = not is_transient  # "no such domain" is answered at once again
        dest.is_dns_transient = is_transient
        dest.dns_until = until
        dest.last_error = reason

    def dns_resolved(self, domain: str) -> None:
        dest = self.destination(domain)
        dest.is_dns_known = True
        if dest.is_dns_failing:
            dest.is_dns_failing = False
            dest.dns_until = None

    def dns_asked(self, domain: str) -> None:
        """An MX lookup for ``domain`` went out on the wire (not answered from the cache):
        until it is answered, only a few of its messages are let in."""
        dest = self.destinations.get(domain)
        if dest is not None:
            dest.is_dns_known = False

    def dns_answered(self, domain: str, key: str) -> bool:
        """Message ``key``'s lookup for ``domain`` was answered (after ``dns_failed`` or
        ``dns_resolved``); True when that lets more of its messages in."""
        dest = self.destinations.get(domain)
        if dest is None or key not in dest.dns_probes:
            return False
        dest.dns_probes.discard(key)
        return True

    def _dns_hold(self, dest: DestinationState, now: float) -> Wait | None:
        """Why ``dest`` may not take one more message for DNS: its failure is cached until
        a later time, or its few probing messages are still waiting for an answer."""
        if (
            dest.is_dns_failing
            and dest.is_dns_transient
            and dest.dns_until
            and dest.dns_until > now
        ):
            return Wait(Reason.DNS_WAIT, dest.dns_until, dest.last_error)
        if not dest.is_dns_known and len(dest.dns_probes) >= MAX_DNS_PROBES:
            return Wait(Reason.DNS_WAIT, None, LOOKING_UP)
        return None

    def dns_wait(self, domain: str, now: float) -> Wait | None:
        """Is ``domain`` waiting for DNS: failing (why, and until when the failed answer
        stands if known), or its MX lookup still out?"""
        dest = self.destinations.get(domain)
        if dest is None:
            return None
        if dest.is_dns_failing:
            until = dest.dns_until if dest.dns_until and dest.dns_until > now else None
            return Wait(Reason.DNS_WAIT, until, dest.last_error)
        if dest.dns_lookups:
            return Wait(Reason.DNS_WAIT, None, LOOKING_UP)
        return None

    # -- reactions and operator actions --------------------------------------

    def react(self, domain: str, reply: str, now: float) -> Reaction | None:
        """Apply the first reaction matching ``reply`` to ``domain``; None when none does."""
        reaction = self.rulebook.reaction_to(reply)
        if reaction is None:
            return None
        dest = self.destination(domain)
        if reaction.action == SUSPEND:
            until = now + reaction.minutes * 60.0
            if until > dest.suspended_until:
                dest.suspended_until = until
                dest.suspended_by = reply
        elif reaction.action == THROTTLE:
            self._throttle(dest, reaction, reply, now)
        self._count(dest.rule, reaction.action)
        self._share(dest, now)
        return reaction

    def _throttle(self, dest: DestinationState, reaction: Reaction, reply: str, now: float) -> None:
        throttle = dest.throttle
        if throttle is not None and dest.last_started < throttle.since:
            # Every message in flight started before the last cut: their deferrals say
            # nothing of the new rate, so they only restart its recovery.
            throttle.since, throttle.reply = now, reply
            return
        current = self.per_minute(dest, now) or dest.observed_per_minute(now)
        current = max(1.0, current)
        ceiling = throttle.ceiling if throttle is not None else current
        dest.throttle = Throttle(
            rate=max(1.0, current / 2),
            ceiling=ceiling,
            step_seconds=reaction.minutes * 60.0,
            since=now,
            reply=reply,
        )

    def suspend(self, domain: str, until: float, why: str = "operator", now: float = 0.0) -> None:
        dest = self.destination(domain)
        dest.suspended_until = until
        dest.suspended_by = why
        self._share(dest, now)

    def resume(self, domain: str, now: float = 0.0) -> None:
        """Lift a suspension and a throttle at once (the operator's "resume")."""
        dest = self.destination(domain)
        dest.suspended_until = 0.0
        dest.suspended_by = ""
        dest.throttle = None
        dest.pacer = Pacer()
        self._share(dest, now)

    def _share(self, dest: DestinationState, now: float) -> None:
        """Tell the other nodes (when caps are shared) how ``dest`` is held now."""
        if self.grants is not None:
            self.grants.reacted(shared_reaction(dest, self.node, now))

    def adopt(self, reaction: SharedReaction, now: float) -> bool:
        """Apply another node's reaction; True when it suspends the destination anew."""
        dest = self.destination(reaction.domain)
        was_suspended = dest.suspended_until > now
        dest.suspended_until = reaction.suspended_until
        dest.suspended_by = reaction.suspended_by
        dest.throttle = None
        if reaction.throttle_rate:
            dest.throttle = Throttle(
                rate=reaction.throttle_rate,
                ceiling=reaction.throttle_ceiling,
                step_seconds=reaction.throttle_step_seconds,
                since=reaction.throttle_since,
                reply=reaction.throttle_reply,
            )
        return dest.suspended_until > now and not was_suspended

    def is_suspended(self, domain: str, now: float) -> bool:
        dest = self.destinations.get(domain)
        return dest is not None and dest.suspended_until > now

    # -- paths and connections -----------------------------------------------

    def path_for(self, domain: str, hosts: Iterable[str]) -> Path | None:
        """The path a domain's connections take, learning an MX-suffix rule on the way;
        None for rule-less destinations (they keep [smtp_out]'s per-host caps)."""
        dest = self.destination(domain)
        if dest.rule is None and self.rulebook.has_mx_rules:
            hosts = list(hosts)
            dest.rule = self.rulebook.for_mx(hosts)
        rule = dest.rule
        if rule is None:
            return None
        return Path(rule, ",".join(sorted({h.lower().rstrip(".") for h in hosts})))

    def connection_wait(self, path: Path | None) -> Wait | None:
        """May one more connection open on ``path`` (its rule's cap across its MX site)?"""
        if path is None or not path.rule.max_connections:
            return None
        if self.connections.get(path.key, 0) >= path.rule.max_connections:
            return Wait(Reason.CONNECTION_CAP, None, f"{path.rule.max_connections} per site")
        return None

    def connection_opened(self, path: Path | None) -> None:
        if path is not None:
            self.connections[path.key] = self.connections.get(path.key, 0) + 1
            self._count(path.rule, "connections")

    def connection_closed(self, path: Path | None) -> None:
        if path is not None:
            left = self.connections.get(path.key, 0) - 1
            if left > 0:
                self.connections[path.key] = left
            else:
                self.connections.pop(path.key, None)

    def source_for(self, path: Path | None) -> Source | None:
        """The next source of the path's egress pool (address and HELO name), in turn;
        None: no pool."""
        if path is None or not path.rule.pool:
            return None
        pool = self.rulebook.pools.get(path.rule.pool)
        if pool is None or not pool.source_ips:
            return None
        turn = self._turns.get(pool.name, 0)
        self._turns[pool.name] = turn + 1
        return pool.source(turn)

    # -- views -------------------------------------------------------------

    def state(self, domain: str, now: float) -> StateView:
        """The destination's state as the web admin, /metrics and the CLI show it."""
        dest = self.destinations.get(domain)
        if dest is None:
            return StateView(SENDING, "sending")
        if dest.suspended_until > now:
            return StateView(SUSPENDED, "suspended", dest.suspended_by, dest.suspended_until)
        if dest.throttle is not None and not dest.throttle.is_over(now):
            rate = int(self.per_minute(dest, now))
            return StateView(THROTTLED, f"throttled to {rate}/min", dest.throttle.reply)
        dns = self.dns_wait(domain, now)
        if dns is not None:
            if dest.is_dns_failing:
                return StateView(DNS_FAILING, "DNS failing", dns.detail, dns.until or 0.0)
            return StateView(DNS_LOOKUP, "waiting for DNS", dns.detail)
        if dest.in_flight >= self.budget(dest):
            return StateView(CAPPED, "connection-capped", "")
        if dest.rule is not None and dest.rule.max_messages_per_minute:
            return StateView(RATED, f"at most {dest.rule.max_messages_per_minute}/min", "")
        return StateView(SENDING, "sending")

    def state_counts(self, now: float) -> dict[str, int]:
        """Destinations per state kind (a bounded label set for /metrics)."""
        counts = dict.fromkeys(STATE_KINDS, 0)
        for domain in self.destinations:
            counts[self.state(domain, now).kind] += 1
        return counts

    def unusual(self, now: float, top: int) -> list[str]:
        """Up to ``top`` destinations that are suspended, throttled or failing DNS."""
        out = []
        for domain in self.destinations:
            if self.state(domain, now).kind in (SUSPENDED, THROTTLED, DNS_FAILING):
                out.append(domain)
                if len(out) >= top:
                    break
        return out

    def forget_idle(self, now: float, keep: int, is_waiting: Iterable[str] = ()) -> int:
        """Past ``keep`` destinations, drop idle ones with nothing to remember."""
        excess = len(self.destinations) - keep
        if excess <= 0:
            return 0
        waiting = set(is_waiting)
        idle = [
            d
            for d, s in self.destinations.items()
            if d not in waiting and s.is_idle(now) and not s.last_error
        ][:excess]
        for domain in idle:
            del self.destinations[domain]
        return len(idle)


def shared_reaction(dest: DestinationState, node: str, now: float) -> SharedReaction:
    """A destination's suspension and throttle as the other nodes apply them."""
    throttle = dest.throttle
    expires = max(dest.suspended_until, now)
    if throttle is not None and throttle.rate > 0 and throttle.ceiling > throttle.rate:
        steps = math.ceil(math.log(throttle.ceiling / throttle.rate) / math.log(RAMP_FACTOR))
        expires = max(expires, throttle.since + min(steps, MAX_RAMP_STEPS) * throttle.step_seconds)
    return SharedReaction(
        domain=dest.domain,
        stamp=now,
        suspended_until=dest.suspended_until,
        suspended_by=dest.suspended_by,
        throttle_rate=throttle.rate if throttle is not None else 0.0,
        throttle_ceiling=throttle.ceiling if throttle is not None else 0.0,
        throttle_step_seconds=throttle.step_seconds if throttle is not None else 0.0,
        throttle_since=throttle.since if throttle is not None else 0.0,
        throttle_reply=throttle.reply if throttle is not None else "",
        node=node,
        expires=expires,
    )
