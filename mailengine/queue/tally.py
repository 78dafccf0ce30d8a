"""Recipients queued per destination and each destination's oldest message, kept as
messages come and go (pure), so the Destinations view, ``/api/destinations`` and
``/metrics`` never walk the queue (issue 10 item 3).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Protocol, TypeVar

import attrs


def domain_counts(addresses: Iterable[str]) -> dict[str, int]:
    """Recipients per domain (as ``delivery.plan.domain_of`` names it: the part after
    the last ``@``, lower case, no trailing dot)."""
    counts: dict[str, int] = {}
    for address in addresses:
        _, at, domain = address.rpartition("@")
        domain = domain.lower().rstrip(".") if at else ""
        counts[domain] = counts.get(domain, 0) + 1
    return counts


@attrs.define
class _Line:
    """One destination: its recipients, and its messages by id with their creation time;
    ``heap`` holds (created, id) with entries of messages gone left in until they surface."""

    recipients: int = 0
    members: dict[str, float] = attrs.field(factory=dict)
    heap: list[tuple[float, str]] = attrs.field(factory=list)

    def oldest(self) -> float:
        heap, members = self.heap, self.members
        while heap and members.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0]

    def compact(self) -> None:
        """Drop the entries of messages gone (called once they outnumber the live ones:
        memory stays in proportion to what is queued)."""
        self.heap = [(created, key) for key, created in self.members.items()]
        heapq.heapify(self.heap)


@attrs.frozen
class DestinationCount:
    domain: str
    recipients: int
    oldest_created: float  # of its oldest queued message


class DestinationTally:
    """Per destination domain: recipients queued and the oldest message's creation time.

    ``add`` (again, after its recipients changed) and ``remove`` cost a message's own
    domains; reading one destination costs about nothing, the top ``n`` a pass over the
    destinations (not the messages).
    """

    def __init__(self) -> None:
        self._lines: dict[str, _Line] = {}
        self._of: dict[str, tuple[float, dict[str, int]]] = {}  # id -> (created, counts)
        self.recipients = 0  # every destination together

    def __len__(self) -> int:
        return len(self._lines)

    def __contains__(self, key: str) -> bool:
        return key in self._of

    def add(self, key: str, addresses: Iterable[str], created: float) -> None:
        """Count message ``key`` with recipients ``addresses`` (replacing its last count)."""
        counts = domain_counts(addresses)
        old = self._of.get(key)
        if old is not None:
            if old == (created, counts):
                return
            self.remove(key)
        if not counts:
            return
        self._of[key] = (created, counts)
        lines = self._lines
        for domain, n in counts.items():
            line = lines.get(domain)
            if line is None:
                line = lines[domain] = _Line()
            line.recipients += n
            line.members[key] = created
            heapq.heappush(line.heap, (created, key))
            self.recipients += n

    def remove(self, key: str) -> None:
        old = self._of.pop(key, None)
        if old is None:
            return
        lines = self._lines
        for domain, n in old[1].items():
            line = lines[domain]
            line.recipients -= n
            self.recipients -= n
            members = line.members
            del members[key]
            if not members:
                del lines[domain]
            elif len(line.heap) > 2 * len(members) + 16:
                line.compact()

    def oldest_created(self) -> float | None:
        """The creation time of the oldest message counted (None: none); a pass over
        the destinations."""
        return min((line.oldest() for line in self._lines.values()), default=None)

    def get(self, domain: str) -> DestinationCount | None:
        line = self._lines.get(domain)
        if line is None:
            return None
        return DestinationCount(domain, line.recipients, line.oldest())

    def top(self, n: int) -> list[DestinationCount]:
        """The ``n`` destinations with the most queued recipients, most first."""
        best = heapq.nsmallest(
            n, self._lines.items(), key=lambda item: (-item[1].recipients, item[0])
        )
        return [DestinationCount(d, line.recipients, line.oldest()) for d, line in best]


class HasEnvelope(Protocol):
    @property
    def envelope(self) -> _Envelope: ...


class _Envelope(Protocol):
    @property
    def rcpt_to_send(self) -> list[str]: ...

    @property
    def time_created(self) -> float: ...


M = TypeVar("M", bound=HasEnvelope)


class MessageTable(dict[str, M]):
    """The live queue's messages by id, tallied per destination as they are set and
    removed. Setting a message again recounts it (its recipients changed)."""

    def __init__(self) -> None:
        super().__init__()
        self.tally = DestinationTally()

    def __setitem__(self, key: str, msg: M) -> None:
        super().__setitem__(key, msg)
        envelope = msg.envelope
        self.tally.add(key, envelope.rcpt_to_send, envelope.time_created)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.tally.remove(key)

    def pop(self, key: str, *default: M | None) -> M | None:  # type: ignore[override]
        self.tally.remove(key)
        return super().pop(key, *default)

    def recount(self, key: str) -> None:
        """Count ``key`` afresh (its envelope or recipients changed in place)."""
        msg = self.get(key)
        if msg is None:
            self.tally.remove(key)
        else:
            envelope = msg.envelope
            self.tally.add(key, envelope.rcpt_to_send, envelope.time_created)

    def clear(self) -> None:
        super().clear()
        self.tally = DestinationTally()

    def popitem(self) -> tuple[str, M]:
        key, msg = super().popitem()
        self.tally.remove(key)
        return key, msg

    def setdefault(self, key: str, default: M) -> M:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: object, **kwargs: object) -> None:
        raise TypeError("MessageTable: set messages one by one")
