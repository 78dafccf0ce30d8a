"""Which recipients travel together and which server is tried next (pure).

A message's recipients are grouped by domain (one transaction per domain, at
most ``MAX_RCPTS_PER_TRANSACTION`` RCPTs each); a domain's targets are tried in
MX order, address by address, skipping ``reject_mail_servers`` and servers that
failed moments ago.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import attrs

from mailengine.dns.answer import Destination

MAX_RCPTS_PER_TRANSACTION = 100  # RFC 5321 §4.5.3.1.8: servers must take at least 100
DOWN_SECONDS = 5.0  # a server that refused or timed out is skipped this long...
MAX_DOWN_SECONDS = 300.0  # ...doubled on each failure in a row, up to this


def domain_of(address: str) -> str:
    """The part after the last ``@``, lower case; "" when there is none."""
    _, at, domain = address.rpartition("@")
    return domain.lower().rstrip(".") if at else ""


def group_by_domain(
    recipients: Iterable[str], limit: int = MAX_RCPTS_PER_TRANSACTION
) -> list[tuple[str, list[str]]]:
    """[(domain, recipients)] in first-seen order, each list at most ``limit`` long.

    Duplicates (case-insensitive) are sent once. Addresses without a domain
    come back under the domain "".
    """
    by: dict[str, list[str]] = {}
    seen: set[str] = set()
    for address in recipients:
        key = address.lower()
        if key in seen:
            continue
        seen.add(key)
        by.setdefault(domain_of(address), []).append(address)
    out: list[tuple[str, list[str]]] = []
    for domain, rcpts in by.items():
        for i in range(0, len(rcpts), limit):
            out.append((domain, rcpts[i : i + limit]))
    return out


@attrs.frozen
class Hop:
    """One address of one MX host: where a connection goes."""

    host: str
    address: str
    port: int

    def describe(self) -> str:
        """``mx1.example.com (192.0.2.1 25)``: the manual's transcript form."""
        return f"{self.host} ({self.address} {self.port})"


def hops_for(
    destination: Destination, remote_port: int, is_rejected: Callable[[str], bool]
) -> tuple[Hop, ...]:
    """Every address of every target, in MX order, without rejected addresses."""
    hops = []
    for target in sorted(destination.targets, key=lambda t: t.preference):
        port = target.port or remote_port
        for address in target.addresses:
            if not is_rejected(address):
                hops.append(Hop(target.host, address, port))
    return tuple(hops)


def count_hosts(hops: Sequence[Hop]) -> int:
    return len({h.host for h in hops})


class HostHealth:
    """Servers that failed to connect or greet recently, and why.

    A server that keeps failing waits longer each time (doubling up to
    ``MAX_DOWN_SECONDS``; Postfix's and KumoMTA's destination back-off): with no
    new connection while it is down, a server that fails every session right
    after the connect gets a handful of connections a minute, not a storm.
    Failures while it is already down (connections opened together) count once.
    """

    def __init__(self, down_seconds: float = DOWN_SECONDS) -> None:
        self.down_seconds = down_seconds
        self._down: dict[tuple[str, int], tuple[float, str]] = {}
        self._strikes: dict[tuple[str, int], tuple[int, float]] = {}  # (failures, until)

    def mark_down(self, hop: Hop, now: float, reason: str) -> None:
        key = (hop.address, hop.port)
        entry = self._down.get(key)
        if entry is not None and entry[0] > now:
            self._down[key] = (entry[0], reason)  # the same failure, seen again
            return
        strikes = self._strikes.get(key, (0, 0.0))[0] + 1
        wait = min(self.down_seconds * 2 ** min(strikes - 1, 16), MAX_DOWN_SECONDS)
        self._down[key] = (now + wait, reason)
        self._strikes[key] = (strikes, now + wait)

    def mark_up(self, hop: Hop) -> None:
        self._down.pop((hop.address, hop.port), None)
        self._strikes.pop((hop.address, hop.port), None)

    def down_reason(self, hop: Hop, now: float) -> str | None:
        entry = self._down.get((hop.address, hop.port))
        if entry is None:
            return None
        if entry[0] <= now:
            del self._down[(hop.address, hop.port)]
            return None
        return entry[1]

    def is_down(self, hop: Hop, now: float) -> bool:
        return self.down_reason(hop, now) is not None

    def __len__(self) -> int:
        """Servers marked down (some perhaps expired but not yet forgotten)."""
        return len(self._down)

    def forget_expired(self, now: float) -> None:
        """Drop entries whose time is up (servers never asked about again stay otherwise);
        a server's failures are forgotten once it has been up for ``MAX_DOWN_SECONDS``."""
        for key in [k for k, (until, _) in self._down.items() if until <= now]:
            del self._down[key]
        for key in [
            k for k, (_, until) in self._strikes.items() if until + MAX_DOWN_SECONDS <= now
        ]:
            del self._strikes[key]


def next_hop(
    hops: Sequence[Hop], start: int, now: float, health: HostHealth
) -> tuple[int, list[tuple[Hop, str]]]:
    """Index of the first usable hop at or after ``start`` (len(hops) if none), and the
    hops skipped on the way with the reason each was down."""
    skipped: list[tuple[Hop, str]] = []
    i = start
    while i < len(hops):
        reason = health.down_reason(hops[i], now)
        if reason is None:
            break
        skipped.append((hops[i], reason))
        i += 1
    return i, skipped
