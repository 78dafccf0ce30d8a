"""``log/events-YYYY-MM-DD.jsonl``: the event log's files (one per UTC day), written cheaply.

Events are buffered in memory and appended by a timer (every second) and at a
stop: one ``write`` per file per flush, no fsync (the log is a record, not the
queue's safety). Files are opened with ``O_APPEND`` so lines from the
``mailengine`` command (operator actions) never mix with the engine's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.internet import task
from twisted.logger import Logger

from mailengine.observe.events import encode, record, utc_day

log = Logger(namespace="mailengine.events")

FLUSH_SECONDS = 1.0
EVENT_FILE = re.compile(r"^events-(\d{4}-\d{2}-\d{2})\.jsonl$")


def event_file_name(day: str) -> str:
    return f"events-{day}.jsonl"


def event_files(directory: str) -> list[str]:
    """The event files in ``directory``, oldest day first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if EVENT_FILE.match(n))


def prune_event_files(directory: str, today: str, days: int) -> list[str]:
    """Remove event files more than ``days`` days older than ``today`` (as the daily logs)."""
    cutoff = (
        datetime.strptime(today, "%Y-%m-%d").replace(tzinfo=UTC) - timedelta(days=days)
    ).strftime("%Y-%m-%d")
    removed = []
    for name in event_files(directory):
        m = EVENT_FILE.match(name)
        if m and m.group(1) <= cutoff:
            os.unlink(os.path.join(directory, name))
            removed.append(name)
    return removed


def append_lines(directory: str, day: str, text: str) -> None:
    """One ``O_APPEND`` write of whole lines (also used by the ``mailengine`` command)."""
    os.makedirs(directory, exist_ok=True)
    fd = os.open(
        os.path.join(directory, event_file_name(day)), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
    )
    try:
        os.write(fd, text.encode("utf-8", "replace"))
    finally:
        os.close(fd)


def append_records(directory: str, records: Iterable[dict[str, Any]], now: float) -> None:
    """Write events at once (a short-lived process has no timer to flush them)."""
    text = "".join(encode(r) for r in records)
    if text:
        append_lines(directory, utc_day(now), text)


class EventLog:
    """Collects events (``emit``) and appends them to the day's file on ``flush``."""

    def __init__(
        self,
        directory: str,
        *,
        retention_days: Callable[[], int],
        is_enabled: Callable[[], bool],
    ) -> None:
        self.directory = directory
        self._retention_days = retention_days
        self._is_enabled = is_enabled
        self._pending: list[tuple[str, str]] = []  # (day, line)
        self._day_number = -1
        self._day = ""
        self._pruned_day = ""
        self._timer: task.LoopingCall | None = None
        self.flushed: list[Callable[[], None]] = []  # told after a flush wrote something
        self.write_errors = 0

    @property
    def is_on(self) -> bool:
        return bool(self._is_enabled()) and self._retention_days() > 0

    def emit(self, event: str, now: float, **fields: Any) -> None:
        """Buffer one event (see ``events.FIELDS``); nothing happens when the log is off."""
        if not self.is_on:
            return
        self._add(now, encode(record(event, now, **fields)))

    def emit_records(self, records: Iterable[dict[str, Any]], now: float) -> None:
        if not self.is_on:
            return
        for r in records:
            self._add(now, encode(r))

    def _add(self, now: float, line: str) -> None:
        number = int(now // 86400)
        if number != self._day_number:  # the UTC day, formatted once a day
            self._day_number = number
            self._day = utc_day(now)
        self._pending.append((self._day, line))

    def flush(self) -> None:
        """Append what is buffered; a write error is logged and the lines are dropped
        (the log must never stop the engine)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        by_day: dict[str, list[str]] = {}
        for day, line in pending:
            by_day.setdefault(day, []).append(line)
        for day, lines in by_day.items():
            try:
                append_lines(self.directory, day, "".join(lines))
            except OSError as exc:
                self.write_errors += 1
                log.warn("cannot write the event log: {why}", why=exc)
        self._prune(max(by_day))
        for listener in list(self.flushed):
            listener()

    def _prune(self, today: str) -> None:
        if today == self._pruned_day:
            return
        self._pruned_day = today
        try:
            prune_event_files(self.directory, today, self._retention_days())
        except OSError:
            pass  # tried again tomorrow

    def start(self, clock: Any) -> None:
        """Flush every ``FLUSH_SECONDS`` on ``clock`` (the reactor)."""
        self._timer = task.LoopingCall(self.flush)
        self._timer.clock = clock
        self._timer.start(FLUSH_SECONDS, now=False).addErrback(
            lambda f: log.failure("event log timer stopped", f)
        )

    def stop(self) -> None:
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        self._timer = None
        self.flush()
