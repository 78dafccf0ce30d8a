"""How long DNS answers are kept, and the engine-wide answer cache (pure; ``now`` passed in)."""

from __future__ import annotations

import heapq

import attrs

from mailengine.dns.records import Answer

# Every answer is kept at least this long (a TTL of 0 would mean a query per
# message at bulk volume) and at most a day (a changed MX is seen by tomorrow).
TTL_FLOOR_SECONDS = 5
TTL_CEILING_SECONDS = 86_400
# NXDOMAIN / NODATA without an SOA to say how long (RFC 2308 §5).
NEGATIVE_TTL_DEFAULT_SECONDS = 300
# Timeout, SERVFAIL, REFUSED: kept briefly so a burst of messages for a broken
# domain waits on one query, not thousands (RFC 2308 §7: at most 5 minutes).
TRANSIENT_FAILURE_SECONDS = 30
# Beyond this many answers the ones closest to expiry are dropped first.
MAX_ENTRIES = 200_000
# Kept-warm answers are refreshed this long before they expire (at most).
REFRESH_AHEAD_SECONDS = 10.0


def clamp_ttl(
    ttl: float, floor: float = TTL_FLOOR_SECONDS, ceiling: float = TTL_CEILING_SECONDS
) -> float:
    return max(floor, min(ceiling, ttl))


def seconds_to_keep(
    answer: Answer, floor: float = TTL_FLOOR_SECONDS, ceiling: float = TTL_CEILING_SECONDS
) -> float:
    """The answer's lifetime: the smallest TTL among its records (positive), the
    SOA-derived TTL (negative), or a short fixed time (transient failure)."""
    if answer.is_transient_failure:
        return clamp_ttl(TRANSIENT_FAILURE_SECONDS, floor, ceiling)
    ttls = [r.ttl for r in (*answer.records, *answer.additional)]
    if answer.error or not ttls:
        if answer.negative_ttl is not None:
            return clamp_ttl(answer.negative_ttl, floor, ceiling)
        return clamp_ttl(NEGATIVE_TTL_DEFAULT_SECONDS, floor, ceiling)
    return clamp_ttl(min(ttls), floor, ceiling)


Key = tuple[str, str]  # (name, kind)


@attrs.define
class _Entry:
    answer: Answer
    expires_at: float


class AnswerCache:
    """Answers by (name, kind) until they expire; expired entries are dropped as
    new ones arrive, so the cache needs no timer."""

    def __init__(
        self,
        floor: float = TTL_FLOOR_SECONDS,
        ceiling: float = TTL_CEILING_SECONDS,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.floor = floor
        self.ceiling = ceiling
        self.max_entries = max_entries
        self._entries: dict[Key, _Entry] = {}
        self._expiry_heap: list[tuple[float, Key]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str, kind: str, now: float, fresh_for: float = 0.0) -> Answer | None:
        """The kept answer, unless it expires within ``fresh_for`` seconds."""
        entry = self._entries.get((name, kind))
        if entry is None or entry.expires_at - now <= fresh_for:
            return None
        return entry.answer

    def expires_at(self, name: str, kind: str) -> float | None:
        entry = self._entries.get((name, kind))
        return None if entry is None else entry.expires_at

    def put(self, answer: Answer, now: float) -> float:
        """Keep ``answer``; returns when it expires."""
        key = (answer.name, answer.kind)
        expires_at = now + seconds_to_keep(answer, self.floor, self.ceiling)
        self._entries[key] = _Entry(answer, expires_at)
        heapq.heappush(self._expiry_heap, (expires_at, key))
        self._drop_expired(now)
        return expires_at

    def clear(self) -> None:
        self._entries.clear()
        self._expiry_heap.clear()

    def _drop_expired(self, now: float) -> None:
        heap = self._expiry_heap
        while heap and (heap[0][0] <= now or len(self._entries) > self.max_entries):
            expires_at, key = heapq.heappop(heap)
            entry = self._entries.get(key)
            # A key put again later has a newer heap item; this one is stale.
            if entry is not None and entry.expires_at == expires_at:
                del self._entries[key]


@attrs.frozen
class RefreshPlan:
    """When to refresh a kept-warm domain, and which answers count as stale then."""

    delay: float
    fresh_for: float


def refresh_plan(now: float, expires_at: float) -> RefreshPlan:
    """Refresh shortly before the first answer expires: REFRESH_AHEAD_SECONDS, or
    a fifth of the remaining life when that is shorter. At refresh time answers
    expiring within twice that margin are fetched again; the rest are kept."""
    remaining = max(0.0, expires_at - now)
    ahead = min(REFRESH_AHEAD_SECONDS, remaining / 5)
    return RefreshPlan(delay=remaining - ahead, fresh_for=2 * ahead)
