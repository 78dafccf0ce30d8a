"""Shaping rules, deferral reactions and egress pools as values, and how they match (pure).

``[[shaping.rule]]`` is matched first by recipient domain, then by MX host suffix
(first match wins); ``[[shaping.reaction]]`` by a case-insensitive regular
expression on a whole reply; ``[[egress.pool]]`` names source addresses used in turn.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

SUSPEND = "suspend"
THROTTLE = "throttle"


@attrs.frozen
class Rule:
    """Limits for the destinations it matches (0 = no limit of that kind)."""

    name: str
    domains: tuple[str, ...] = ()
    mx_suffixes: tuple[str, ...] = ()
    max_connections: int = 0  # per MX site; 0: [smtp_out] max_connections_per_host
    max_messages_per_connection: int = 0
    max_messages_per_minute: int = 0  # for the whole destination
    pool: str = ""  # egress pool name; "" = [smtp_out] outbound_ip

    def matches_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for suffix in self.mx_suffixes:
            bare = suffix.lstrip(".")
            if host == bare or host.endswith("." + bare):
                return True
        return False


@attrs.frozen
class Reaction:
    """What a matching deferral does to its destination."""

    pattern: str
    action: str  # SUSPEND | THROTTLE
    minutes: float  # suspend: how long; throttle: one recovery step
    regex: re.Pattern[str] = attrs.field(eq=False, repr=False)

    @regex.default
    def _compile(self) -> re.Pattern[str]:
        return re.compile(self.pattern, re.IGNORECASE)


@attrs.frozen
class EgressPool:
    name: str
    source_ips: tuple[str, ...]
    helo_names: tuple[str, ...] = ()  # parallel to source_ips; () = [server] helo_text

    def source(self, turn: int) -> Source:
        """The ``turn``-th source (in turn, wrapping round) with its HELO name if set."""
        index = turn % len(self.source_ips)
        helo = self.helo_names[index] if index < len(self.helo_names) else ""
        return Source(self.source_ips[index], helo)


@attrs.frozen
class Source:
    """Where a connection comes from: a local address and the name it says in EHLO."""

    ip: str
    helo: str = ""  # "": the engine's name ([server] helo_text)


def rules_from(rows: Iterable[Mapping[str, Any]]) -> tuple[Rule, ...]:
    """Config rows (already validated) to rules, in file order."""
    return tuple(
        Rule(
            name=str(row["name"]),
            domains=tuple(d.lower() for d in row.get("domains") or ()),
            mx_suffixes=tuple(row.get("mx_suffixes") or ()),
            max_connections=int(row.get("max_connections") or 0),
            max_messages_per_connection=int(row.get("max_messages_per_connection") or 0),
            max_messages_per_minute=int(row.get("max_messages_per_minute") or 0),
            pool=str(row.get("pool") or ""),
        )
        for row in rows
    )


def reactions_from(rows: Iterable[Mapping[str, Any]]) -> tuple[Reaction, ...]:
    return tuple(Reaction(str(r["pattern"]), str(r["action"]), float(r["minutes"])) for r in rows)


def pools_from(rows: Iterable[Mapping[str, Any]]) -> dict[str, EgressPool]:
    return {
        str(r["name"]): EgressPool(
            str(r["name"]), tuple(r["source_ips"]), tuple(r.get("helo_names") or ())
        )
        for r in rows
    }


class Rulebook:
    """Which rule a destination falls under; which reaction a reply triggers."""

    def __init__(
        self,
        rules: Sequence[Rule] = (),
        reactions: Sequence[Reaction] = (),
        pools: Mapping[str, EgressPool] | None = None,
    ) -> None:
        self.rules = tuple(rules)
        self.reactions = tuple(reactions)
        self.pools = dict(pools or {})
        self.by_name = {r.name: r for r in self.rules}
        self._by_domain: dict[str, Rule] = {}
        for rule in self.rules:
            for domain in rule.domains:
                self._by_domain.setdefault(domain.lower(), rule)  # first match wins
        self.has_mx_rules = any(r.mx_suffixes for r in self.rules)

    def for_domain(self, domain: str) -> Rule | None:
        """The first rule that lists ``domain`` (O(1): asked for every message)."""
        return self._by_domain.get(domain) if self._by_domain else None

    def for_mx(self, hosts: Iterable[str]) -> Rule | None:
        """The first rule with a suffix matching any of the MX ``hosts``."""
        if not self.has_mx_rules:
            return None
        names = list(hosts)
        for rule in self.rules:
            if rule.mx_suffixes and any(rule.matches_host(h) for h in names):
                return rule
        return None

    def reaction_to(self, reply: str) -> Reaction | None:
        """The first reaction whose pattern is found in ``reply``."""
        for reaction in self.reactions:
            if reaction.regex.search(reply):
                return reaction
        return None
