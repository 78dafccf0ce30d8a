"""Who may open an inbound session: connection caps with priority peers (pure; manual §6).

Beyond ``max_connections`` sessions, or ``max_connections_per_ip`` from one
address, new peers are refused with 421; ``priority_ips`` are always admitted.
Every admitted session counts, priority ones included.
"""

from __future__ import annotations

import enum
from collections import Counter

import attrs

from mailengine.policy.ipranges import IPRanges


class Refusal(enum.Enum):
    TOO_MANY_SESSIONS = "too many connections"
    TOO_MANY_FROM_PEER = "too many connections from your address"


@attrs.frozen
class Limits:
    max_connections: int
    max_connections_per_ip: int = 0  # 0: no per-address limit
    priority_ips: IPRanges = attrs.field(factory=IPRanges)


def is_priority(peer_ip: str, priority_ips: IPRanges) -> bool:
    return priority_ips.has_zero or peer_ip in priority_ips


class Admission:
    """Counts open sessions in total and per peer address."""

    def __init__(self) -> None:
        self.total = 0
        self.by_ip: Counter[str] = Counter()

    def check(self, peer_ip: str, limits: Limits) -> Refusal | None:
        """None when a new session from ``peer_ip`` may open now, else why not."""
        if is_priority(peer_ip, limits.priority_ips):
            return None
        if self.total >= limits.max_connections:
            return Refusal.TOO_MANY_SESSIONS
        per_ip = limits.max_connections_per_ip
        if per_ip and self.by_ip[peer_ip] >= per_ip:
            return Refusal.TOO_MANY_FROM_PEER
        return None

    def admit(self, peer_ip: str, limits: Limits) -> Refusal | None:
        """``check`` and, when admitted, count the session (``release`` it when it ends)."""
        refusal = self.check(peer_ip, limits)
        if refusal is None:
            self.total += 1
            self.by_ip[peer_ip] += 1
        return refusal

    def release(self, peer_ip: str) -> None:
        if self.by_ip[peer_ip] <= 1:
            del self.by_ip[peer_ip]
        else:
            self.by_ip[peer_ip] -= 1
        self.total = max(0, self.total - 1)
