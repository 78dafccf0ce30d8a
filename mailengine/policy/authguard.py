"""SMTP AUTH failures per client address, and the lock-out they lead to (pure).

Guessing passwords online needs many tries from few addresses; counting
failures per connection only lets a client reconnect and go on. Here an
address with ``max_failures`` failed AUTH attempts within ``window_seconds``
is locked out for ``window_seconds`` from its last failure: every AUTH from it
is refused without a password being checked (Postfix's anvil and fail2ban do
the same outside the MTA). Memory stays bounded: old entries are pruned and
at most ``MAX_ADDRESSES`` are kept.
"""

from __future__ import annotations

from collections import deque

import attrs

MAX_ADDRESSES = 100_000


@attrs.define
class _Record:
    failures: deque[float] = attrs.field(factory=deque)  # times within the window
    locked_until: float = 0.0


@attrs.frozen
class Verdict:
    """What a failure led to: the count within the window, and a lock-out if it began now."""

    failures: int
    locked_for_seconds: float = 0.0


class AuthGuard:
    """Failed AUTH attempts per address; ``now`` comes in with every call."""

    def __init__(self, max_addresses: int = MAX_ADDRESSES) -> None:
        self.max_addresses = max_addresses
        self._records: dict[str, _Record] = {}

    def locked_for(self, address: str, now: float) -> float:
        """Seconds the address stays locked out (0: it may try)."""
        record = self._records.get(address)
        if record is None or record.locked_until <= now:
            return 0.0
        return record.locked_until - now

    def failed(
        self, address: str, now: float, *, max_failures: int, window_seconds: float
    ) -> Verdict:
        """Count one failure; ``max_failures`` 0 counts but never locks out."""
        record = self._records.get(address)
        if record is None:
            if len(self._records) >= self.max_addresses:
                self.prune(now, window_seconds)
                if len(self._records) >= self.max_addresses:  # still full: drop the oldest
                    self._records.pop(next(iter(self._records)))
            record = self._records[address] = _Record()
        failures = record.failures
        failures.append(now)
        while failures and failures[0] <= now - window_seconds:
            failures.popleft()
        if max_failures and len(failures) >= max_failures and record.locked_until <= now:
            record.locked_until = now + window_seconds
            return Verdict(len(failures), window_seconds)
        return Verdict(len(failures))

    def prune(self, now: float, window_seconds: float) -> None:
        """Forget addresses with no failure in the window and no lock-out running."""
        stale = [
            a
            for a, r in self._records.items()
            if r.locked_until <= now and (not r.failures or r.failures[-1] <= now - window_seconds)
        ]
        for address in stale:
            del self._records[address]

    def __len__(self) -> int:
        return len(self._records)
