"""The box's view put together from its workers' statuses (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mailengine.queue.destination_states import DestinationLine


def merged_destinations(statuses: Mapping[int, Mapping[str, Any]]) -> list[DestinationLine]:
    """Every destination some worker does not simply send to; when several workers list
    one, the lowest-numbered worker's line (suspensions and throttles reach every worker
    through the supervisor, so their lines agree but for a second)."""
    merged: dict[str, DestinationLine] = {}
    for index in sorted(statuses):
        for row in statuses[index].get("destinations", ()):
            line = DestinationLine(**row)
            merged.setdefault(line.domain, line)
    return sorted(merged.values(), key=lambda line: line.domain)


def total(statuses: Iterable[Mapping[str, Any]], key: str) -> int:
    """One number of every worker's status summed (memory, queued recipients...)."""
    return sum(int(status.get(key, 0)) for status in statuses)
