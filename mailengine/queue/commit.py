"""Group commit: queue file work runs in a worker thread in batches, one sync per batch.

Many sessions finishing DATA at once share one sync, so ``use_disk_for_relay``
costs little throughput (manual §5: the message is on disk before the 250).
Two kinds of sync: ``durable`` work (files in the queue directories) is covered
by one syncfs(2) of the queue's file system; ``journal`` work (appends to the
receipt journal) by one fdatasync per journal segment. Work runs in submission
order, batch after batch, so a later item always sees an earlier one done.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

Work = Callable[[], Any]
RunInThread = Callable[[Callable[[], Any]], defer.Deferred]

NONE, JOURNAL, DURABLE = 0, 1, 2


class GroupCommit:
    """``submit(work, durable=, journal=)`` -> Deferred fired once the work ran and synced."""

    def __init__(
        self,
        run_in_thread: RunInThread,
        sync: Callable[[], None],
        sync_journal: Callable[[], None] = lambda: None,
    ) -> None:
        self._run_in_thread = run_in_thread
        self._sync = sync
        self.sync_journal = sync_journal
        self._pending: list[tuple[Work, int, defer.Deferred]] = []
        self._busy = False
        self._idle_waiters: list[defer.Deferred] = []
        self.batches = 0
        self.items = 0

    @property
    def idle(self) -> bool:
        return not self._busy and not self._pending

    def when_idle(self) -> defer.Deferred:
        """Fires once every submitted item has run."""
        if self.idle:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._idle_waiters.append(d)
        return d

    def submit(self, work: Work, *, durable: bool = False, journal: bool = False) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._pending.append((work, DURABLE if durable else JOURNAL if journal else NONE, d))
        if not self._busy:
            self._start()
        return d

    def _start(self) -> None:
        batch, self._pending = self._pending, []
        self._busy = True
        self.batches += 1
        self.items += len(batch)
        need = max(kind for _, kind, _ in batch)

        def run() -> list[tuple[bool, Any]]:
            results: list[tuple[bool, Any]] = []
            for work, _, _ in batch:
                try:
                    results.append((True, work()))
                except Exception:
                    results.append((False, Failure()))
            if need == DURABLE and any(ok for ok, _ in results):
                self._sync()  # syncfs covers the journal too; an exception fails the batch
            elif need == JOURNAL and any(ok for ok, _ in results):
                self.sync_journal()
            return results

        def done(results: list[tuple[bool, Any]] | Failure) -> None:
            self._busy = False
            for i, (_, _, d) in enumerate(batch):
                if isinstance(results, Failure):
                    d.errback(results)
                else:
                    ok, value = results[i]
                    if ok:
                        d.callback(value)
                    else:
                        d.errback(value)
            if self._pending and not self._busy:
                self._start()
            elif self.idle:
                waiters, self._idle_waiters = self._idle_waiters, []
                for w in waiters:
                    w.callback(None)

        self._run_in_thread(run).addBoth(done)
