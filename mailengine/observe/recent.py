"""The most recent final failures, for the dashboard (pure ring buffer)."""

from __future__ import annotations

from collections import deque

import attrs


@attrs.frozen
class FinalFailure:
    time: float
    message_id: str
    address: str
    hard: bool  # 5xx (hard) or retries exhausted (soft)
    reason: str
    category: str = ""  # a bounce category (reports.categories)


@attrs.define
class RecentFailures:
    limit: int = 200
    items: deque[FinalFailure] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.items = deque(maxlen=self.limit)

    def add(self, failure: FinalFailure) -> None:
        self.items.append(failure)

    def latest(self, n: int = 20) -> list[FinalFailure]:
        return list(self.items)[-n:][::-1]
