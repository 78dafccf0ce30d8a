"""Sending caps: messages per hour and bytes per minute, as token buckets (pure).

Both are read at use time from the live settings, so a change applies at once.
A bucket holds at most a few seconds' worth (``burst_seconds``) and refills so
that no window of the cap's period ever sees more than the cap: a full bucket
plus one period of refill equals the cap exactly.
"""

from __future__ import annotations

import math


class TokenBucket:
    """``limit`` units per ``period_seconds``; 0 = no cap. Time comes in as ``now``."""

    def __init__(self, period_seconds: float, burst_seconds: float) -> None:
        self.period = period_seconds
        self.burst_seconds = burst_seconds
        self.limit = 0
        self.tokens = 0.0
        self.stamp: float | None = None

    def _shape(self, limit: int) -> tuple[float, float]:
        """(capacity, refill per second) for ``limit`` per period."""
        capacity = max(1.0, limit * self.burst_seconds / self.period)
        # capacity + period * rate == limit: never more than the cap in any period.
        rate = max(limit - capacity, limit * 0.01) / self.period
        return capacity, rate

    def _refill(self, limit: int, now: float) -> tuple[float, float]:
        capacity, rate = self._shape(limit)
        if self.stamp is None or limit != self.limit:
            # A new cap starts full; a changed one keeps what was used (at most its new
            # capacity) and refills at the new rate from now on.
            self.limit = limit
            self.tokens = capacity if self.stamp is None else min(self.tokens, capacity)
        else:
            self.tokens = min(capacity, self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        return capacity, rate

    def available(self, limit: int, now: float) -> int:
        """Whole units that may be used now (a large number when there is no cap)."""
        if limit <= 0:
            return 1 << 30
        self._refill(limit, now)
        return max(0, math.floor(self.tokens + 1e-9))

    def take(self, limit: int, amount: float, now: float) -> None:
        """Use ``amount`` units (may run into debt: large messages still go)."""
        if limit <= 0:
            return
        self._refill(limit, now)
        self.tokens -= amount

    def wait_seconds(self, limit: int, now: float, need: float = 1.0) -> float:
        """How long until ``need`` units are available (0 when they are now)."""
        if limit <= 0:
            return 0.0
        capacity, rate = self._refill(limit, now)
        missing = min(need, capacity) - self.tokens
        return 0.0 if missing <= 1e-9 else missing / rate


def hourly_message_cap() -> TokenBucket:
    """``max_messages_per_hour``: up to two seconds' worth at once, then a steady rate."""
    return TokenBucket(period_seconds=3600.0, burst_seconds=2.0)


def bandwidth_cap() -> TokenBucket:
    """``max_bandwidth_bytes_per_minute``, shared by every connection."""
    return TokenBucket(period_seconds=60.0, burst_seconds=1.0)
