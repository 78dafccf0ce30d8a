"""When a soft-failed recipient is tried again, and when it has finally failed (pure).

Manual §5/§6: ``retry_intervals_minutes`` lists the wait before each retry;
after the last one the recipient has finally failed; ``[0]`` (parsed to
``()``) means never retry. Priority +1 at each retry so retries yield to new mail.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_PRIORITY = 99  # manual §5: priorities run from 0 (first) to 99


def retry_delay_seconds(intervals_minutes: Sequence[float], tries_made: int) -> float | None:
    """Seconds to wait after attempt number ``tries_made`` (1-based); None = finally failed."""
    if tries_made < 1 or tries_made > len(intervals_minutes):
        return None
    return intervals_minutes[tries_made - 1] * 60.0


def priority_after_retry(priority: int) -> int:
    """One step lower (a larger number), never past the manual's 99."""
    return min(priority + 1, MAX_PRIORITY)
