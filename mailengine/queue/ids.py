"""Message ids in the manual's shape ``P<pid>T<time>C<counter>@<host>`` (pure)."""

from __future__ import annotations

import itertools
import re

_HOST = re.compile(r"[^A-Za-z0-9.-]")


class MessageIdFactory:
    """Unique across processes (pid) and restarts (start time in ms) of one host."""

    def __init__(self, pid: int, start_time: float, host: str) -> None:
        host = _HOST.sub("-", host.strip(".")) or "localhost"
        self._prefix = f"P{pid}T{int(start_time * 1000)}C"
        self._suffix = f"@{host}"
        self._counter = itertools.count(1)

    def next_id(self) -> str:
        return f"{self._prefix}{next(self._counter)}{self._suffix}"
