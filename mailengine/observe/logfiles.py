"""Log lines as the manual prints them (``YYYY/MM/DD HH:MM:SS text``): console and log/ files."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer

from mailengine.observe.timestamps import format_stamp

_DAILY = re.compile(r"^mailengine-(\d{4})-(\d{2})-(\d{2})\.log$")


def format_lines(event: dict[str, Any]) -> str:
    """The event as one or more stamped lines, with a traceback when it carries one."""
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text = f"{text}\n{failure.getTraceback()}".rstrip("\n")
    stamp = format_stamp(event.get("log_time") or 0.0)
    return "".join(f"{stamp} {line}\n" for line in text.splitlines() or [""])


@implementer(ILogObserver)
class StreamObserver:
    """Writes every event to a stream (the console in the foreground)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        try:
            self._stream.write(format_lines(event))
            self._stream.flush()
        except (OSError, ValueError):
            pass


def _local_day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).astimezone().strftime("%Y-%m-%d")


@implementer(ILogObserver)
class DailyLogFiles:
    """``log/mailengine-YYYY-MM-DD.log``, one per local day, kept ``retention_days`` (0: none)."""

    def __init__(self, directory: str, retention_days: Callable[[], int]) -> None:
        self.directory = directory
        self._retention_days = retention_days
        self._day = ""
        self._days = 0  # the retention the files were last pruned with
        self._file: IO[str] | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        days = self._retention_days()
        if days <= 0:
            self.close()
            return
        day = _local_day(event.get("log_time") or 0.0)
        if day != self._day or self._file is None:
            try:
                self._open(day, days)
            except OSError:  # log/ unwritable or full: the console still shows the line
                self._file = None
                return
        elif days != self._days:  # retention_days changed while running
            self._prune(day, days)
        try:
            assert self._file is not None
            self._file.write(format_lines(event))
        except (OSError, ValueError):
            pass

    def _open(self, day: str, days: int) -> None:
        self.close()
        os.makedirs(self.directory, exist_ok=True)
        self._file = open(  # noqa: SIM115 - kept open across events
            os.path.join(self.directory, f"mailengine-{day}.log"),
            "a",
            encoding="utf-8",
            buffering=1,
        )
        self._day = day
        self._prune(day, days)

    def _prune(self, today: str, days: int) -> None:
        self._days = days
        try:
            self.prune(today, days)
        except OSError:
            pass  # a file that cannot be removed now is tried again tomorrow

    def prune(self, today: str, days: int) -> list[str]:
        """Remove daily files more than ``days`` days older than ``today``."""
        cutoff = (
            datetime.strptime(today, "%Y-%m-%d").replace(tzinfo=UTC) - timedelta(days=days)
        ).strftime("%Y-%m-%d")
        removed = []
        for name in os.listdir(self.directory):
            m = _DAILY.match(name)
            if m and "-".join(m.groups()) <= cutoff:
                os.unlink(os.path.join(self.directory, name))
                removed.append(name)
        return removed

    def today_path(self) -> str | None:
        return self._file.name if self._file is not None else None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._day = ""


# twistd's --logger takes a no-argument factory; the plugin records here where
# the console should go (stdout in the foreground, twistd.log as a daemon).
console_target: dict[str, Any] = {"logfile": "", "nodaemon": True}


def console_observer() -> StreamObserver:
    """Factory named in twistd's ``--logger`` by the plugin."""
    logfile = console_target.get("logfile") or ""
    if console_target.get("nodaemon") and logfile in ("", "-"):
        return StreamObserver(sys.stdout)
    path = logfile if logfile not in ("", "-") else "twistd.log"
    return StreamObserver(open(path, "a", encoding="utf-8", buffering=1))
