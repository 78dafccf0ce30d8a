"""Whether a connection may open: per-host and total caps (pure).

Manual §3: at most ``max_connections_per_host`` to one server and
``max_connections`` in total. A host whose queue is longer than its
connections can serve gets another connection while the caps allow; when the
total cap is reached, hosts wait in line for the next free slot, and an idle
connection elsewhere is closed to make room.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

from mailengine.scheduler.grants import Cap


def wants_connection(pending_jobs: int, connecting: int, idle: int) -> bool:
    """More work waits than the connections being opened or idle can take."""
    return pending_jobs > connecting + idle


class ConnectionSlots:
    """Counts of open (and opening) connections per host and in total."""

    def __init__(self) -> None:
        self.total = 0
        self.per_host: dict[Hashable, int] = {}
        self.waiting: deque[Hashable] = deque()  # hosts refused only by the total cap

    def open_count(self, host: Hashable) -> int:
        return self.per_host.get(host, 0)

    def may_open(self, host: Hashable, *, per_host_max: int, total_max: int) -> bool:
        return self.per_host.get(host, 0) < per_host_max and self.total < total_max

    def blocked_by_total(self, host: Hashable, *, per_host_max: int, total_max: int) -> bool:
        """True when only the total cap stops ``host`` from opening another connection."""
        return self.per_host.get(host, 0) < per_host_max and self.total >= total_max

    def opened(self, host: Hashable) -> None:
        self.total += 1
        self.per_host[host] = self.per_host.get(host, 0) + 1

    def closed(self, host: Hashable) -> None:
        self.total -= 1
        left = self.per_host.get(host, 0) - 1
        if left > 0:
            self.per_host[host] = left
        else:
            self.per_host.pop(host, None)

    def wait_for_slot(self, host: Hashable) -> None:
        if host not in self.waiting:
            self.waiting.append(host)

    def next_waiting(self) -> Hashable | None:
        return self.waiting.popleft() if self.waiting else None


def shared_caps(
    address: str, port: int, per_host: int, total: int, site: str = "", site_max: int = 0
) -> tuple[Cap, ...]:
    """The caps a connection holds a lease under when they are shared between nodes:
    the total, its server's address (the caps a receiver counts), its rule's MX site."""
    caps = (Cap("total", total), Cap(f"host:{address}:{port}", per_host))
    return (*caps, Cap(f"site:{site}", site_max)) if site and site_max else caps
