"""Which message is due and which goes first: due time, then priority (pure).

Manual §5: priority 0 is highest and +1 at each retry, so retries yield to
new mail when capacity is short; known future retry times are honoured.
A due key whose destination may not take it yet is *parked* under that
destination's name and offered again when the destination has room, so it
never stands in front of another destination's mail.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterator


class Schedule:
    """Keys waiting for their due time, and keys due now ordered by (priority, due)."""

    def __init__(self) -> None:
        self._waiting: list[tuple[float, int, Hashable]] = []
        self._ready: list[tuple[int, float, int, Hashable]] = []
        self._entries: dict[Hashable, tuple[float, int, int]] = {}  # key -> (due, prio, seq)
        self._parked: dict[Hashable, list[tuple[int, float, int, Hashable]]] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[Hashable]:
        """Every scheduled key (waiting or due), in no particular order (a snapshot)."""
        return iter(list(self._entries))

    def due_time(self, key: Hashable) -> float | None:
        entry = self._entries.get(key)
        return entry[0] if entry else None

    def add(self, key: Hashable, due: float, priority: int = 0) -> None:
        """Schedule ``key`` (replacing an earlier entry for it)."""
        seq = next(self._seq)
        self._entries[key] = (due, priority, seq)
        heapq.heappush(self._waiting, (due, seq, key))

    def remove(self, key: Hashable) -> bool:
        return self._entries.pop(key, None) is not None

    def _live(self, key: Hashable, seq: int) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry[2] == seq

    def _promote(self, now: float) -> None:
        waiting, ready = self._waiting, self._ready
        while waiting and waiting[0][0] <= now:
            due, seq, key = heapq.heappop(waiting)
            if self._live(key, seq):
                heapq.heappush(ready, (self._entries[key][1], due, seq, key))

    def has_due(self, now: float) -> bool:
        self._promote(now)
        while self._ready and not self._live(self._ready[0][3], self._ready[0][2]):
            heapq.heappop(self._ready)
        return bool(self._ready)

    def pop_due(self, now: float, limit: int) -> list[Hashable]:
        """Up to ``limit`` due keys, highest priority (lowest number) first; removed."""
        self._promote(now)
        out: list[Hashable] = []
        ready = self._ready
        while ready and len(out) < limit:
            _, _, seq, key = heapq.heappop(ready)
            if self._live(key, seq):
                del self._entries[key]
                out.append(key)
        return out

    def park(self, key: Hashable, group: Hashable, due: float, priority: int = 0) -> None:
        """Schedule ``key`` as due but waiting for ``group`` (see ``release``)."""
        seq = next(self._seq)
        self._entries[key] = (due, priority, seq)
        heapq.heappush(self._parked.setdefault(group, []), (priority, due, seq, key))

    def release(self, group: Hashable, count: int) -> int:
        """Offer up to ``count`` of ``group``'s parked keys again, best priority first."""
        parked = self._parked.get(group)
        moved = 0
        while parked and moved < count:
            entry = heapq.heappop(parked)
            if self._live(entry[3], entry[2]):
                heapq.heappush(self._ready, entry)
                moved += 1
        if not parked:
            self._parked.pop(group, None)
        return moved

    def parked_groups(self) -> list[Hashable]:
        return list(self._parked)

    def parked_count(self, group: Hashable) -> int:
        """Entries parked under ``group`` (some perhaps removed since: an upper bound)."""
        return len(self._parked.get(group, ()))

    def next_due(self) -> float | None:
        """The earliest due time of a waiting key (None when nothing waits)."""
        waiting = self._waiting
        while waiting and not self._live(waiting[0][2], waiting[0][1]):
            heapq.heappop(waiting)
        return waiting[0][0] if waiting else None


def has_memory_room(
    count: int, used_bytes: int, size: int, *, max_messages: int, max_kb: int
) -> bool:
    """Can one more message of ``size`` bytes be held in memory (manual: else offload)?

    A message larger than the whole limit still fits when memory is empty, so it
    is sent on its own rather than never.
    """
    if count == 0:
        return True
    return count < max_messages and used_bytes + size <= max_kb * 1024
