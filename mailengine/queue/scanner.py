"""The retry/ scan: index the files other programs (or a restart) put into retry/.

Files are listed and read in a worker thread, a batch at a time, and only the
index is touched on the reactor thread, so a scan of a big backlog never holds
up SMTP (issue 12 item 6). Files are read as untrusted (store.read_envelope:
regular files only, no symlinks, every value checked); a damaged one is logged
once, skipped and left in place (manual §5).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from itertools import islice
from typing import Any, Protocol

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from mailengine.config.model import Config
from mailengine.queue.envelope import Envelope
from mailengine.queue.inf import InfError
from mailengine.queue.retryindex import RetryIndex
from mailengine.queue.store import QueueStore

log = Logger(namespace="mailengine.queue")

# Directory entries per trip to the worker thread: big enough that the hops cost
# nothing, small enough that the reactor's share of a batch stays well under 10 ms.
BATCH = 500
# Index entries checked per reactor turn when a pass looks for files that went.
SWEEP_SLICE = 20_000

RunInThread = Callable[[Callable[[], Any]], defer.Deferred]
# (id, inode, what was found): an Envelope, a reason it is unusable, or None (gone).
ReadResult = tuple[str, int, Envelope | str | None]


@attrs.define
class ScanReport:
    new: int = 0
    removed: int = 0
    invalid: int = 0
    known: int = 0


def read_files(store: QueueStore, wanted: list[tuple[str, int]], now: float) -> list[ReadResult]:
    """Read ``retry/ID.inf`` of each wanted id (worker thread: touches only files)."""
    out: list[ReadResult] = []
    for message_id, inode in wanted:
        try:
            envelope = store.read_envelope("retry", message_id, now=now)
        except FileNotFoundError:
            out.append((message_id, inode, None))
        except (InfError, OSError) as exc:
            out.append((message_id, inode, str(exc) or type(exc).__name__))
        else:
            out.append((message_id, inode, envelope))
    return out


def check_files(store: QueueStore, wanted: list[tuple[str, int]], now: float) -> list[ReadResult]:
    """Files named by change events (worker thread): None for each one gone; nothing for
    one whose inode is the one already known; what it holds for the others."""
    out: list[ReadResult] = []
    for message_id, known in wanted:
        try:
            inode = os.lstat(store.path("retry", message_id, ".inf")).st_ino
        except FileNotFoundError:
            out.append((message_id, 0, None))
            continue
        if inode != known:
            out.extend(read_files(store, [(message_id, inode)], now))
    return out


@attrs.define
class _Pass:
    """One scan in progress; what it lists is marked with its epoch."""

    epoch: int
    now: float
    report: ScanReport = attrs.field(factory=ScanReport)


class ScannedQueue(Protocol):
    """What the scanner asks of the live queue (``LiveQueue``) it indexes retry/ for."""

    @property
    def store(self) -> QueueStore: ...

    @property
    def index(self) -> RetryIndex: ...

    @property
    def config(self) -> Config: ...

    def now(self) -> float: ...

    def drop_indexed(self, message_id: str) -> bool: ...

    def known_inode(self, message_id: str) -> int | None: ...

    def index_found(self, envelope: Envelope, inode: int, epoch: int) -> bool: ...

    def forget_if_gone(self, message_id: str, epoch: int) -> bool: ...

    def forget_unseen(self, epoch: int) -> int: ...

    def retry_state(self, message_id: str, inode: int, epoch: int) -> str: ...

    def index_unread(self, message_id: str, inode: int, mtime: float, epoch: int) -> bool: ...


class RetryScanner:
    """Scans retry/ for ``queue``; ``scan()`` inline, ``scan_in_background()`` in threads."""

    def __init__(self, queue: ScannedQueue) -> None:
        self.queue = queue
        self.store = queue.store
        # id -> (inode, epoch, why): an .inf already warned about, the pass that saw it
        self._bad: dict[str, tuple[int, int, str]] = {}
        self._running: defer.Deferred | None = None
        self.epoch = 0  # bumped per pass: what a pass indexed itself is never "gone"

    @property
    def is_running(self) -> bool:
        return self._running is not None

    def scan(self) -> ScanReport:
        """A whole pass on the calling thread (tests; a few files after an operator action)."""
        p = self._begin()
        entries = self.store.scan("retry")
        while batch := list(islice(entries, BATCH)):
            wanted = self._wanted(p, batch)
            self._apply(p, read_files(self.store, wanted, p.now))
        ids = self.queue.index.ids()
        p.report.removed += self._sweep(ids, p.epoch)
        return self._finish(p)

    def scan_in_background(self, run_in_thread: RunInThread) -> defer.Deferred:
        """A pass with the listing and reading in worker threads; one pass at a time
        (a second call while one runs gets the running one)."""
        if self._running is not None:
            return self._running
        d = defer.ensureDeferred(self._scan_in_threads(run_in_thread))

        def done(result: Any) -> Any:
            self._running = None
            return result

        d.addBoth(done)
        if not d.called:
            self._running = d
        return d

    async def _scan_in_threads(self, run_in_thread: RunInThread) -> ScanReport:
        p = self._begin()
        entries = self.store.scan("retry")
        while True:
            batch = await run_in_thread(lambda: list(islice(entries, BATCH)))
            if not batch:
                break
            wanted = self._wanted(p, batch)
            if wanted:
                found = await run_in_thread(partial(read_files, self.store, wanted, p.now))
                self._apply(p, found)
        ids = self.queue.index.ids()
        for start in range(0, len(ids), SWEEP_SLICE):
            p.report.removed += self._sweep(ids[start : start + SWEEP_SLICE], p.epoch)
            await run_in_thread(lambda: None)  # let the reactor serve between slices
        return self._finish(p)

    def _sweep(self, ids: list[str], epoch: int) -> int:
        """Drop index entries whose files the pass did not list (held, deleted)."""
        gone = list(self.queue.index.stale(ids, epoch))
        for message_id in gone:
            self.queue.drop_indexed(message_id)
        return len(gone)

    def check_ids(self, ids: list[str], run_in_thread: RunInThread) -> defer.Deferred:
        """Re-check the named messages' files (inotify said they changed), in a thread."""
        p = self._begin()
        wanted = []
        for message_id in ids:
            known = self.queue.known_inode(message_id)
            if known is not None:  # None: ours, being written or moved
                wanted.append((message_id, known))
        return self._check(p, wanted, run_in_thread)

    def read_ids(self, wanted: list[tuple[str, int]], run_in_thread: RunInThread) -> defer.Deferred:
        """Read these files whatever their inode (index entries coming due)."""
        p = self._begin()
        return self._check(p, [(message_id, -1) for message_id, _ in wanted], run_in_thread)

    def _check(
        self, p: _Pass, wanted: list[tuple[str, int]], run_in_thread: RunInThread
    ) -> defer.Deferred:
        if not wanted:
            return defer.succeed(p.report)

        def apply(found: list[ReadResult]) -> ScanReport:
            for message_id, _, result in found:
                if result is None and self.queue.forget_if_gone(message_id, p.epoch):
                    p.report.removed += 1
            self._apply(p, found)
            return p.report

        return run_in_thread(partial(check_files, self.store, wanted, p.now)).addCallback(apply)

    # -- the steps -----------------------------------------------------------

    def _begin(self) -> _Pass:
        self.epoch += 1
        return _Pass(self.epoch, self.queue.now())

    def _wanted(self, p: _Pass, batch: list[tuple[str, int, float]]) -> list[tuple[str, int]]:
        """Which listed files need reading: new ones due soon (a later one is indexed
        from its listing), and ones another program replaced."""
        wanted = []
        queue = self.queue
        for message_id, inode, mtime in batch:
            state = queue.retry_state(message_id, inode, p.epoch)
            if state == "known":
                p.report.known += 1
            elif state == "busy":
                continue
            elif self._bad.get(message_id, (0, 0, ""))[0] == inode:
                self._bad[message_id] = (inode, p.epoch, self._bad[message_id][2])
                p.report.invalid += 1
            elif queue.index_unread(message_id, inode, mtime, p.epoch):
                p.report.new += 1
            else:
                wanted.append((message_id, inode))
        return wanted

    def _apply(self, p: _Pass, found: list[ReadResult]) -> None:
        for message_id, inode, result in found:
            if result is None:
                continue  # gone between listing and reading
            if isinstance(result, str):
                before = self._bad.get(message_id)
                self._bad[message_id] = (inode, p.epoch, result)
                p.report.invalid += 1
                if before is None or before[0] != inode or before[2] != result:
                    # Once per file and reason (a watch event and a scan may both read it).
                    log.warn(
                        "retry/{id}.inf skipped and left in place: {why}",
                        id=message_id,
                        why=result,
                    )
                continue
            self._bad.pop(message_id, None)
            if self.queue.index_found(result, inode, p.epoch):
                p.report.new += 1

    def _finish(self, p: _Pass) -> ScanReport:
        p.report.removed += self.queue.forget_unseen(p.epoch)
        self._bad = {m: seen for m, seen in self._bad.items() if seen[1] >= p.epoch}
        if self.queue.config.logs.debug_program:
            r = p.report
            log.info(
                "retry scan: {new} new, {known} known, {removed} gone, {invalid} invalid",
                new=r.new,
                known=r.known,
                removed=r.removed,
                invalid=r.invalid,
            )
        return p.report

    def mark_bad(self, message_id: str, inode: int) -> None:
        """A file found unusable when loading it: not read again until it changes."""
        self._bad[message_id] = (inode, self.epoch, "")
