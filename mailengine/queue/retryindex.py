"""The compact index of retry/: messages not due soon, a few dozen bytes each (pure).

Postfix's queue manager keeps only a bounded *active* set of messages in
memory and leaves the rest of the deferred queue on disk, found again by
their files' times; this is the same idea (issue 12 item 6). For each message
in retry/ that is not in the active set the engine keeps its id and one
integer: when it is due, the inode of its ``.inf`` (a rewrite by another
program makes a new inode), how many recipients it still has to send (UNREAD
for one indexed from its listing alone: not in the books until it is read) and
the scan pass that last saw it. Ids wait in buckets by due minute, so finding
what comes due next never walks the index.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

BUCKET_SECONDS = 60
UNREAD = (1 << 24) - 1  # recipients not known: indexed from the listing alone
_LOW = (1 << 32) - 1
_INODE = (1 << 64) - 1
# Bits: epoch 0-31, recipients 32-55, inode 56-119, due (whole seconds) from 120.
_RCPTS_SHIFT, _INODE_SHIFT, _DUE_SHIFT = 32, 56, 120


def pack(due: float, inode: int, epoch: int, rcpts: int = UNREAD) -> int:
    return (
        (max(0, int(due)) << _DUE_SHIFT)
        | ((inode & _INODE) << _INODE_SHIFT)
        | (min(rcpts, UNREAD) << _RCPTS_SHIFT)
        | (epoch & _LOW)
    )


def due_of(packed: int) -> int:
    return packed >> _DUE_SHIFT


def inode_of(packed: int) -> int:
    return (packed >> _INODE_SHIFT) & _INODE


def rcpts_of(packed: int) -> int:
    return (packed >> _RCPTS_SHIFT) & UNREAD


def epoch_of(packed: int) -> int:
    return packed & _LOW


def rcpts_counted(packed: int) -> int:
    """Recipients of an entry as the books count them (0 for an unread one)."""
    rcpts = rcpts_of(packed)
    return 0 if rcpts == UNREAD else rcpts


class RetryIndex:
    """id -> (due, inode, epoch) for retry/ messages outside the active set."""

    def __init__(self) -> None:
        self._entries: dict[str, int] = {}
        self._buckets: dict[int, list[str]] = {}
        self._bucket_heap: list[int] = []
        self.recipients = 0  # to send, over the entries that were read (the books)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._entries

    def ids(self) -> list[str]:
        """A snapshot of every id (for walking the index in slices)."""
        return list(self._entries)

    def add(self, message_id: str, due: float, inode: int, epoch: int, rcpts: int = UNREAD) -> None:
        packed = pack(due, inode, epoch, rcpts)
        old = self._entries.get(message_id)
        self._entries[message_id] = packed
        self.recipients += rcpts_counted(packed) - (rcpts_counted(old) if old is not None else 0)
        if old is not None and due_of(old) // BUCKET_SECONDS == due_of(packed) // BUCKET_SECONDS:
            return  # already waiting in that bucket
        key = due_of(packed) // BUCKET_SECONDS
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = []
            heapq.heappush(self._bucket_heap, key)
        bucket.append(message_id)

    def get(self, message_id: str) -> int | None:
        return self._entries.get(message_id)

    def remove(self, message_id: str) -> int | None:
        """Forget an id (its bucket entry goes stale, skipped when popped); its packed
        entry, or None when it was not indexed."""
        packed = self._entries.pop(message_id, None)
        if packed is not None:
            self.recipients -= rcpts_counted(packed)
        return packed

    def mark_seen(self, message_id: str, epoch: int) -> None:
        packed = self._entries.get(message_id)
        if packed is not None:
            self._entries[message_id] = (packed & ~_LOW) | (epoch & _LOW)

    def next_due(self) -> float | None:
        """The start of the earliest bucket holding an id (None: empty)."""
        heap = self._bucket_heap
        while heap and not self._buckets.get(heap[0]):
            self._buckets.pop(heapq.heappop(heap), None)
        return heap[0] * BUCKET_SECONDS if heap else None

    def pop_due(self, until: float, limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` (id, packed entry) due before ``until``, earliest bucket
        first; they leave the index (the caller makes them active)."""
        out: list[tuple[str, int]] = []
        heap, buckets = self._bucket_heap, self._buckets
        while heap and len(out) < limit and heap[0] * BUCKET_SECONDS <= until:
            key = heap[0]
            bucket = buckets.get(key, [])
            while bucket and len(out) < limit:
                message_id = bucket.pop()
                packed = self._entries.get(message_id)
                if packed is None or due_of(packed) // BUCKET_SECONDS != key:
                    continue  # removed, or waiting in another bucket now
                del self._entries[message_id]
                self.recipients -= rcpts_counted(packed)
                out.append((message_id, packed))
            if not bucket:
                heapq.heappop(heap)
                buckets.pop(key, None)
        return out

    def stale(self, ids: list[str], epoch: int) -> Iterator[str]:
        """Those of ``ids`` still indexed but not seen since pass ``epoch`` began."""
        entries = self._entries
        for message_id in ids:
            packed = entries.get(message_id)
            if packed is not None and epoch_of(packed) < epoch:
                yield message_id
