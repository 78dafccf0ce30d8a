"""The receipt journal: durable relay mail without per-message files (use_disk_for_relay).

Each accepted message is appended to a segment file ``working/journal-*.log``
and one fdatasync covers every message of a group-commit batch, so the 250
reply costs one append instead of creating, renaming, syncing and later
deleting two files per message. A message leaves the journal ("settles") when
it is delivered or when its ``.dat``/``.inf`` are safely in a queue directory;
a message still in flight after ``MATERIALIZE_SECONDS`` is written to working/
as the manual describes, so no segment lives long. A segment whose messages
have all settled is deleted. At start-up, unsettled messages of leftover
segments are restored into retry/ (manual §5: working/ goes to retry/).

Bookkeeping runs in the reactor thread; every file operation is a work item
for the GroupCommit thread, which runs them in order.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from twisted.logger import Logger

from mailengine.queue.receipts import encode_message, encode_settled, unsettled
from mailengine.queue.store import DIRS, QueueStore, worker_working_dirs

log = Logger(namespace="mailengine.queue")

SEGMENT_BYTES = 16 * 1024 * 1024
SEGMENT_SECONDS = 10.0  # an active segment is sealed after this long
MATERIALIZE_SECONDS = 30.0  # live messages of a sealed segment then go to working/ files
PREFIX, SUFFIX = "journal-", ".log"

Work = Callable[[], None]


class Segment:
    """One journal file; ``live`` holds the ids not settled yet."""

    __slots__ = (
        "closed",
        "fd",
        "live",
        "opened",
        "path",
        "retiring",
        "sealed_at",
        "size",
        "written",
    )

    def __init__(self, path: str, fd: int, opened: float) -> None:
        self.path = path
        self.fd = fd
        self.opened = opened
        self.size = 0  # bytes reserved (reactor thread)
        self.written = 0  # bytes on file (commit thread)
        self.live: set[str] = set()
        self.sealed_at: float | None = None
        self.retiring = False  # set in the reactor thread when removal is queued
        self.closed = False  # set in the commit thread when the file is gone


class ReceiptJournal:
    def __init__(self, directory: str, now: Callable[[], float]) -> None:
        self.directory = directory
        self._now = now
        self.active: Segment | None = None
        self.sealed: list[Segment] = []
        self._dirty: set[int] = set()  # fds written since the last sync (commit thread only)
        self._serial = 0

    # -- reactor thread: bookkeeping that returns work for the commit thread --

    def _open(self) -> Segment:
        now = self._now()
        self._serial += 1
        path = os.path.join(self.directory, f"{PREFIX}{int(now * 1000)}-{self._serial}{SUFFIX}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return Segment(path, fd, now)

    def _seal_active(self) -> None:
        if self.active is not None:
            self.active.sealed_at = self._now()
            self.sealed.append(self.active)
            self.active = None

    def append(self, message_id: str, inf: bytes, data: bytes) -> tuple[Segment, Work]:
        """Reserve the message in the active segment; the work writes it (then sync)."""
        active = self.active
        if active is not None and (
            active.size > SEGMENT_BYTES or self._now() - active.opened > SEGMENT_SECONDS
        ):
            self._seal_active()
            active = None
        if active is None:
            active = self.active = self._open()
        record = encode_message(message_id, inf, data)
        active.size += len(record)
        active.live.add(message_id)
        segment = active

        def write() -> None:
            self._append(segment, record)
            self._dirty.add(segment.fd)

        return segment, write

    def _append(self, segment: Segment, record: bytes) -> None:
        """Write one whole record (commit thread). A short or failed write (disk full) is
        cut back off the file, so the record fails alone and the next append is clean."""
        try:
            written = os.write(segment.fd, record)
        except OSError:
            written = -1
        if written != len(record):
            try:
                os.ftruncate(segment.fd, segment.written)
            except OSError:
                pass
            raise OSError(errno.ENOSPC, "journal write incomplete (disk full?)", segment.path)
        segment.written += written

    def settle(self, segment: Segment, message_id: str) -> list[Work]:
        """The message no longer needs the journal: a settle record, maybe a retirement."""
        if message_id not in segment.live:
            return []
        segment.live.discard(message_id)
        record = encode_settled(message_id)
        works: list[Work] = [lambda: self._write_quietly(segment, record)]
        if segment.sealed_at is not None and not segment.live:
            works.append(self._retire(segment))
        return works

    def _write_quietly(self, segment: Segment, record: bytes) -> None:
        if not segment.closed:
            self._append(segment, record)

    def _retire(self, segment: Segment) -> Work:
        if segment.retiring:
            return lambda: None
        segment.retiring = True
        if segment in self.sealed:
            self.sealed.remove(segment)

        def retire() -> None:
            segment.closed = True
            self._dirty.discard(segment.fd)
            os.close(segment.fd)
            os.unlink(segment.path)

        return retire

    def tick(self) -> tuple[list[Work], list[str]]:
        """Seal an old active segment, retire empty sealed ones; return (works, ids to
        materialize: live messages of segments sealed ``MATERIALIZE_SECONDS`` ago)."""
        now = self._now()
        if self.active is not None and now - self.active.opened > SEGMENT_SECONDS:
            self._seal_active()
        works: list[Work] = []
        overdue: list[str] = []
        for segment in list(self.sealed):
            if not segment.live:
                works.append(self._retire(segment))
            elif segment.sealed_at is not None and now - segment.sealed_at > MATERIALIZE_SECONDS:
                overdue.extend(segment.live)
        return works, overdue

    @property
    def has_segments(self) -> bool:
        """Any segment still open (the tick keeps running until the journal is gone)."""
        return bool(self.sealed) or self.active is not None

    def close_all(self) -> list[Work]:
        """At stop: seal and retire every segment whose messages have all settled."""
        self._seal_active()
        return [self._retire(s) for s in list(self.sealed) if not s.live]

    # -- commit thread ---------------------------------------------------

    def sync(self) -> None:
        """fdatasync every segment written since the last sync (one per batch)."""
        dirty, self._dirty = self._dirty, set()
        for fd in dirty:
            os.fdatasync(fd)


def recover_journal(store: QueueStore) -> int:
    """Restore unsettled messages of leftover segments into retry/; remove the segments.

    A message whose ``.inf`` already stands in a queue directory was written out
    before the stop, so only the journal's copy is dropped; with worker processes that
    includes another worker's ``working/wN/`` (it took the message from retry/).
    """
    directory = store.dir("working")
    others = [store.for_worker(int(d[1:])) for d in worker_working_dirs(store.root)]
    segments = sorted(
        n for n in os.listdir(directory) if n.startswith(PREFIX) and n.endswith(SUFFIX)
    )
    restored = 0
    for name in segments:
        path = os.path.join(directory, name)
        with open(path, "rb") as fh:
            blob = fh.read()
        for record in unsettled(blob):
            try:
                known = any(
                    os.path.exists(store.path(d, record.message_id, ".inf")) for d in DIRS
                ) or any(
                    os.path.exists(other.path("working", record.message_id, ".inf"))
                    for other in others
                )
            except ValueError:
                log.warn(
                    "journal {name}: bad message id {id!r} skipped", name=name, id=record.message_id
                )
                continue
            if not known:
                store.write_data_and_inf("retry", record.message_id, record.data, record.inf)
                restored += 1
        store.sync_all()
        os.unlink(path)
    return restored
