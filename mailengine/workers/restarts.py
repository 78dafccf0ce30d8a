"""How many workers, and when to restart one that ended (pure: ``now`` is passed in)."""

from __future__ import annotations

import attrs

FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 60.0
# A worker that ran this long before it ended counts as healthy: the next restart is quick.
STABLE_SECONDS = 60.0


def worker_count(setting: int | str, cores: int | None) -> int:
    """``[server] workers``: a number, or "auto" (one per core; 1 when unknown)."""
    if setting == "auto":
        return max(1, cores or 1)
    return int(setting)


@attrs.define
class RestartBackoff:
    """Doubling delays for a worker that keeps dying; back to the first after a stable run."""

    first: float = FIRST_DELAY_SECONDS
    most: float = MAX_DELAY_SECONDS
    stable: float = STABLE_SECONDS
    _next: float = 0.0

    def delay_after(self, started: float, ended: float) -> float:
        """Seconds to wait before starting the worker again, given when it started and ended."""
        if ended - started >= self.stable or self._next == 0.0:
            self._next = self.first
        delay = self._next
        self._next = min(self._next * 2, self.most)
        return delay
