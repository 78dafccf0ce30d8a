"""What the delivery engine shows the web admin and /metrics (value types, pure)."""

from __future__ import annotations

from typing import Protocol

import attrs

from mailengine.scheduler.grants import ClusterView


@attrs.frozen
class HostStatus:
    """One MX host (by address and port) as the connection pools see it."""

    host: str  # "mx1.example.com (192.0.2.1:25)"
    open_connections: int
    sent: int
    failed: int
    last_error: str = ""
    protocol_errors: int = 0  # sessions it ended out of step (issue 9): it misbehaves
    misbehaving: str = ""  # the last of them


@attrs.frozen
class DomainStatus:
    """One destination domain: recipients queued (memory and retry/), oldest age."""

    domain: str
    queued_recipients: int
    oldest_seconds: float
    last_error: str = ""
    state: str = "sending"  # scheduler.shaping.STATE_KINDS
    state_text: str = "sending"  # "throttled to 30/min", "suspended", ...
    reason: str = ""  # the reply that suspended or throttled it, the DNS failure
    until: float = 0.0  # suspended: when it ends; DNS failing: when its answer expires


@attrs.frozen
class DeliveryStatus:
    paused: bool
    open_connections: int
    hosts: tuple[HostStatus, ...] = ()
    domains: tuple[DomainStatus, ...] = ()  # most queued recipients first
    held_by_rate_cap: bool = False
    protocol_errors: int = 0  # sessions ended by a server out of step, every host
    destination_states: tuple[tuple[str, int], ...] = ()  # (state kind, destinations)
    rule_events: tuple[tuple[str, str, int], ...] = ()  # (rule, event, count) since start
    cluster: ClusterView | None = None  # caps shared through [cluster] redis_url


class DeliveryStatusSource(Protocol):
    """Implemented by the delivery engine (``DeliveryEngine``)."""

    def status(self, now: float, top: int = 20) -> DeliveryStatus: ...
