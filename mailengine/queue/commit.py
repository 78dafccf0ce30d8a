"""Group commit: queue file writes run in a worker thread in batches, one sync per batch.

Many sessions finishing DATA at once share one syncfs(2), so ``use_disk_for_relay``
costs little throughput (manual §5: the message is on disk before the 250).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

Work = Callable[[], Any]
RunInThread = Callable[[Callable[[], Any]], defer.Deferred]


class GroupCommit:
    """``submit(work, durable)`` -> Deferred fired once the work ran (and was synced)."""

    def __init__(self, run_in_thread: RunInThread, sync: Callable[[], None]) -> None:
        self._run_in_thread = run_in_thread
        self._sync = sync
        self._pending: list[tuple[Work, bool, defer.Deferred]] = []
        self._busy = False
        self.batches = 0
        self.items = 0

    @property
    def idle(self) -> bool:
        return not self._busy and not self._pending

    def submit(self, work: Work, *, durable: bool) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._pending.append((work, durable, d))
        if not self._busy:
            self._start()
        return d

    def _start(self) -> None:
        batch, self._pending = self._pending, []
        self._busy = True
        self.batches += 1
        self.items += len(batch)
        sync = any(durable for _, durable, _ in batch)

        def run() -> list[tuple[bool, Any]]:
            results: list[tuple[bool, Any]] = []
            for work, _, _ in batch:
                try:
                    results.append((True, work()))
                except Exception:
                    results.append((False, Failure()))
            if sync and any(ok for ok, _ in results):
                self._sync()  # an exception here fails the whole batch
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

        self._run_in_thread(run).addBoth(done)
