"""The periodic queue check on a fake clock: shutdown.txt, the retry/ scan, retention."""

import os
import time

import attrs
import pytest
from twisted.internet import defer, task

from mailengine.config.model import Config
from mailengine.queue.checker import CLAIM_SETTLE_SECONDS, QueueChecker
from mailengine.queue.envelope import Envelope
from mailengine.queue.store import QueueStore
from tests.twisted.test_live_queue import SyncThreads

NOW = 1_000_000_000


class ScanCounter:
    def __init__(self):
        self.scans = 0

    def scan_retry_in_background(self, run_in_thread):
        self.scans += 1
        return run_in_thread(lambda: None)


class InlineCommitter:
    """The committer's contract: work runs in order (here at once, on this thread)."""

    def submit(self, work, **kwargs):
        return defer.maybeDeferred(work)


@attrs.define
class FakeEngine:
    store: QueueStore
    config: Config
    reactor: task.Clock
    queue: ScanCounter
    committer: InlineCommitter = attrs.field(factory=InlineCommitter)


@pytest.fixture
def rig(tmp_path):
    store = QueueStore(str(tmp_path / "mailq"))
    store.ensure_dirs()
    clock = task.Clock()
    clock.advance(NOW)
    engine = FakeEngine(store, Config.defaults(), clock, ScanCounter())
    threads = SyncThreads(hold=True)
    stops = []
    checker = QueueChecker(engine, lambda: stops.append(clock.seconds()), run_in_thread=threads)
    return engine, checker, threads, stops


def put(store, dirname, message_id, age_seconds):
    store.write_message(dirname, Envelope(message_id, "a@b.test", ["c@d.test"], 0), b"x\r\n")
    for ext in (".dat", ".inf"):
        os.utime(store.path(dirname, message_id, ext), (NOW - age_seconds,) * 2)


def ids(store, dirname):
    return sorted(i for i, _, _ in store.scan(dirname))


def test_retention_sweeps_run_in_a_worker_thread_one_at_a_time(rig):
    engine, checker, threads, _ = rig
    engine.config.override("queue", "done_retention_minutes", 1)
    engine.config.override("queue", "incoming_retention_minutes", 0)  # keep
    put(engine.store, "done", "old@h", 61)
    put(engine.store, "done", "new@h", 59)
    put(engine.store, "incoming", "old@h", 3600)
    first = checker.sweep_retention()
    assert checker.sweep_retention() is first  # a second check while it runs waits for it
    assert len(threads.waiting) == 1
    assert ids(engine.store, "done") == ["new@h", "old@h"]  # nothing ran in the reactor
    threads.release()
    assert first.result == {"done": 1}
    assert ids(engine.store, "done") == ["new@h"]
    assert ids(engine.store, "incoming") == ["old@h"]


def test_shutdown_file_stops_the_engine_without_a_scan_and_checks_follow_the_live_interval(rig):
    engine, checker, threads, stops = rig
    checker.startService()
    assert engine.queue.scans == 1 and checker.checks == 1
    engine.config.override("queue", "check_interval_seconds", 5)
    engine.reactor.advance(600)  # the interval the first check was scheduled with
    assert engine.queue.scans == 2
    engine.reactor.advance(5)
    assert engine.queue.scans == 3
    open(os.path.join(engine.store.dir("retry"), "shutdown.txt"), "w").close()
    engine.reactor.advance(5)
    assert stops == [NOW + 610] and engine.queue.scans == 3
    assert not os.path.exists(os.path.join(engine.store.dir("retry"), "shutdown.txt"))
    checker.stopService()
    assert engine.reactor.getDelayedCalls() == []


def test_a_shorter_check_interval_set_at_run_time_counts_from_the_change(rig):
    engine, checker, threads, stops = rig
    checker.startService()
    engine.reactor.advance(100)
    engine.config.apply("queue", "check_interval_seconds", 5)  # the web admin's edit
    engine.reactor.advance(5)
    assert engine.queue.scans == 2  # not after the old 600 s wait
    checker.stopService()


def test_temporary_files_left_by_a_crash_are_removed_at_start_but_young_ones_stay(rig):
    engine, checker, threads, stops = rig
    retry = engine.store.dir("retry")
    for name, age in ((".old@h.dat.tmp", 7200), (".young@h.dat.tmp", 10)):
        path = os.path.join(retry, name)
        open(path, "w").close()
        os.utime(path, (NOW - age,) * 2)
    checker.startService()
    assert os.listdir(retry) == [".young@h.dat.tmp"]
    checker.stopService()


def claim(store, dirname, message_id):
    os.rename(
        store.path(dirname, message_id, ".inf"), store.path(dirname, message_id, ".inf-claimed")
    )


def test_claims_left_by_an_interrupted_operator_action_are_restored_at_start(rig):
    engine, checker, _, _ = rig
    store = engine.store
    put(store, "retry", "held@h", 60)
    claim(store, "retry", "held@h")  # a hold cut short after moving the .dat
    os.rename(store.path("retry", "held@h", ".dat"), store.path("hold", "held@h", ".dat"))
    engine.reactor.advance(time.time() + 60 - engine.reactor.seconds())  # claimed 60 s ago
    checker.startService()
    assert ids(store, "hold") == ["held@h"]  # its .inf back beside its .dat
    assert not os.listdir(store.dir("retry"))
    checker.stopService()


def test_a_claim_made_just_now_is_left_to_its_action_and_looked_at_again_later(rig):
    engine, checker, _, _ = rig
    store = engine.store
    put(store, "retry", "busy@h", 60)
    claim(store, "retry", "busy@h")  # a `mailengine queue` acting beside the start
    engine.reactor.advance(time.time() - engine.reactor.seconds())
    checker.startService()
    assert ids(store, "retry") == []
    engine.reactor.advance(CLAIM_SETTLE_SECONDS + 1)  # the action never finished
    assert ids(store, "retry") == ["busy@h"]
    checker.stopService()


def test_repairs_of_big_directories_run_in_the_committer_thread_before_the_first_scan(rig):
    engine, checker, threads, stops = rig
    held = SyncThreads(hold=True)
    engine.committer.submit = lambda work, **kwargs: held(work)
    put(engine.store, "retry", "cut@h", 0)
    os.rename(  # a move into retry/ cut short by a crash
        engine.store.path("retry", "cut@h", ".inf"),
        engine.store.path("retry", "cut@h", ".inf-moving"),
    )
    checker.startService()
    assert engine.queue.scans == 0 and len(held.waiting) == 2  # claims, then repairs
    assert not os.path.exists(engine.store.path("retry", "cut@h", ".inf"))
    held.release()
    assert os.path.exists(engine.store.path("retry", "cut@h", ".inf"))
    assert engine.queue.scans == 1
    checker.stopService()
