"""A graceful stop that cannot write memory-held mail to retry/ (disk full) keeps trying
and does not end; freeing space lets it finish (issue 9)."""

import errno
import os

from twisted.internet import task
from twisted.logger import globalLogPublisher

from mailengine.config.model import Config
from mailengine.observe.counters import Counters
from mailengine.queue.commit import GroupCommit
from mailengine.queue.envelope import Envelope
from mailengine.queue.live import LiveQueue
from mailengine.queue.store import QueueStore
from mailengine.queue.writeback import RETRY_SECONDS, StopWriteBack
from tests.twisted.test_live_queue import Consumer, SyncThreads


class FullDisk(QueueStore):
    """A queue store whose writes fail with ENOSPC while ``full`` is set."""

    full = False

    def _write_file(self, path, data, durable):
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        super()._write_file(path, data, durable)


def held_queue(tmp_path, n):
    store = FullDisk(str(tmp_path / "mailq"))
    store.ensure_dirs()
    clock = task.Clock()
    clock.advance(1_000_000_000)
    committer = GroupCommit(SyncThreads(), lambda: None)
    queue = LiveQueue(store, Config.defaults(), clock, committer, Counters(clock.seconds()))
    queue.consumer = Consumer()
    for i in range(n):
        env = Envelope(f"M{i}@h", "s@y.test", ["a@x.test"], clock.seconds())
        queue.accept_relay(env, b"Subject: x\r\n\r\nhi\r\n")
    return store, clock, queue


def test_a_stop_on_a_full_disk_waits_says_why_and_finishes_once_there_is_room(tmp_path):
    store, clock, queue = held_queue(tmp_path, 3)
    assert queue.held_only_in_memory() == 3
    store.full = True
    lines = []
    observer = lambda e: lines.append(e.get("line", ""))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        writeback = StopWriteBack(queue, clock, lambda n: 60.0)
        done = writeback.run()
        for _ in range(3):
            clock.advance(RETRY_SECONDS)
        assert not done.called and writeback.waiting  # still up: nothing to lose
        assert queue.held_only_in_memory() == 3 and os.listdir(store.dir("retry")) == []
        said = [line for line in lines if line.startswith("NOT stopped")]
        assert len(said) == 4  # the first round and each retry
        assert "3 acknowledged messages held in memory" in said[0]
        assert "No space left on device" in said[0]
        store.full = False  # the operator frees space
        clock.advance(RETRY_SECONDS)
        assert done.called
    finally:
        globalLogPublisher.removeObserver(observer)
    assert queue.held_only_in_memory() == 0
    assert sorted(os.listdir(store.dir("retry"))) == sorted(
        f"M{i}@h.{ext}" for i in range(3) for ext in ("dat", "inf")
    )


def test_a_stop_with_room_on_disk_finishes_at_once(tmp_path):
    store, clock, queue = held_queue(tmp_path, 2)
    done = StopWriteBack(queue, clock, lambda n: 60.0).run()
    assert done.called and len(os.listdir(store.dir("retry"))) == 4
