"""A graceful stop writes the mail held in memory to retry/, and never ends without it.

Relay mail acknowledged with 250 and held only in memory (use_disk_for_relay
off) has no other copy: if retry/ cannot take it (disk full, permissions) the
stop does not end as if it had. It says why, in the log and on the console,
and tries again every few seconds until every message is written; freeing
space lets the stop finish. (Mail in working/ or the receipt journal is on
disk already and is recovered at the next start.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mailengine.queue.live import LiveQueue

log = Logger(namespace="mailengine.queue")

RETRY_SECONDS = 5.0


class StopWriteBack:
    """Runs ``queue.drain()`` until nothing is held only in memory."""

    def __init__(
        self,
        queue: LiveQueue,
        clock: IReactorTime,
        timeout_for: Callable[[int], float],
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.timeout_for = timeout_for  # seconds a round may take for this many messages
        self.retry_seconds = retry_seconds
        self.rounds = 0
        self.waiting = False  # between failed rounds

    def held(self) -> int:
        return self.queue.held_only_in_memory()

    @defer.inlineCallbacks
    def run(self) -> Any:
        """Fires once every message held in memory is written (or on disk already)."""
        while True:
            yield self._round()
            held = self.held()
            if not held:
                if self.rounds:
                    log.info("the messages held in memory are written to retry/ now")
                return
            self.rounds += 1
            log.error("{line}", line=self.describe(held))
            self.waiting = True
            try:
                yield task.deferLater(self.clock, self.retry_seconds, lambda: None)
            finally:
                self.waiting = False

    def describe(self, held: int) -> str:
        """The reason the stop waits, for the log and for a repeated signal."""
        return (
            f"NOT stopped: {held} acknowledged messages held in memory cannot be written to "
            f"{self.queue.store.dir('retry')} ({self.queue.write_error or 'unknown error'}); "
            f"they have no other copy, so the engine stays up and tries again every "
            f"{self.retry_seconds:g} s: free disk space (or fix the permissions)"
        )

    def _round(self) -> defer.Deferred:
        d = self.queue.drain()
        d.addTimeout(self.timeout_for(self.held()), self.clock)
        return d.addErrback(
            lambda f: log.failure("writing messages in memory to retry/ did not finish", f)
        )
