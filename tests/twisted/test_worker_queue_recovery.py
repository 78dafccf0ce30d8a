"""Who recovers what when worker processes share mailq/ (issue 13): each worker has its own
working/wN/ and receipt journal; the worker that replaces a crashed one restores its own and
touches no other worker's; the supervisor (or a later one-process engine) restores them all."""

import os

from twisted.internet import task

from mailengine.config.model import Config
from mailengine.queue.checker import QueueChecker, Role
from mailengine.queue.envelope import Envelope
from mailengine.queue.journal import ReceiptJournal
from mailengine.queue.store import QueueStore, worker_working_dirs
from tests.twisted.test_live_queue import SyncThreads
from tests.twisted.test_queue_checker import NOW, FakeEngine, ScanCounter, ids


def left_by_a_crash(root, worker, message_id):
    """A worker's working/ file and an unsettled journal record, as SIGKILL leaves them."""
    store = QueueStore(root, worker=worker)
    store.ensure_dirs()
    store.write_message("working", Envelope(message_id, "a@b.test", ["c@d.test"], 0), b"x\r\n")
    journal = ReceiptJournal(store.dir("working"), lambda: NOW)
    envelope = Envelope(f"j{message_id}", "a@b.test", ["c@d.test"], 0)
    _, write = journal.append(envelope.message_id, envelope.to_inf().encode(), b"y\r\n")
    write()
    return store


def start_checker(root, role, worker=0):
    store = QueueStore(root, worker=worker)
    clock = task.Clock()
    clock.advance(NOW)
    engine = FakeEngine(store, Config.defaults(), clock, ScanCounter())
    checker = QueueChecker(engine, lambda: None, run_in_thread=SyncThreads(), role=role)
    checker.startService()
    checker.stopService()
    return engine


def test_a_worker_store_has_its_own_working_directory_under_working(tmp_path):
    root = str(tmp_path / "mailq")
    store = QueueStore(root, worker=2)
    store.ensure_dirs()
    assert store.dir("working") == os.path.join(root, "working", "w2")
    assert store.dir("retry") == os.path.join(root, "retry")
    assert worker_working_dirs(root) == ["w2"]
    assert QueueStore(root).dir("working") == os.path.join(root, "working")


def test_a_restarted_worker_restores_only_its_own_working_files_and_journal(tmp_path):
    root = str(tmp_path / "mailq")
    left_by_a_crash(root, 1, "one@h")
    running = left_by_a_crash(root, 2, "two@h")  # worker 2 is alive: its files are its own
    engine = start_checker(root, Role.WORKER, worker=1)
    assert ids(engine.store, "retry") == ["jone@h", "one@h"]
    assert ids(running, "working") == ["two@h"]
    assert any(n.startswith("journal-") for n in os.listdir(running.dir("working")))
    assert os.listdir(engine.store.dir("working")) == []


def test_the_supervisor_restores_every_workers_files_before_they_start(tmp_path):
    root = str(tmp_path / "mailq")
    left_by_a_crash(root, 1, "one@h")
    left_by_a_crash(root, 2, "two@h")
    engine = start_checker(root, Role.SUPERVISOR)
    assert ids(engine.store, "retry") == ["jone@h", "jtwo@h", "one@h", "two@h"]
    assert engine.queue.scans == 0  # the workers scan retry/; the supervisor does not


def test_one_engine_after_a_run_with_workers_restores_their_files_too(tmp_path):
    root = str(tmp_path / "mailq")
    left_by_a_crash(root, 3, "three@h")
    engine = start_checker(root, Role.ENGINE)
    assert ids(engine.store, "retry") == ["jthree@h", "three@h"]


def test_a_young_interrupted_move_in_retry_is_left_to_the_worker_making_it(tmp_path):
    store = QueueStore(str(tmp_path / "mailq"))
    store.ensure_dirs()
    store.write_message("retry", Envelope("m@h", "a@b.test", ["c@d.test"], 0), b"x\r\n")
    os.rename(store.path("retry", "m@h", ".inf"), store.path("retry", "m@h", ".inf-moving"))
    ctime = os.lstat(store.path("retry", "m@h", ".inf-moving")).st_ctime
    assert store.repair_interrupted_moves(("retry",), settled_before=ctime - 1) == []
    assert store.repair_interrupted_moves(("retry",), settled_before=ctime + 1) == ["m@h"]
    assert ids(store, "retry") == ["m@h"]


def test_a_journal_message_another_worker_took_from_retry_is_not_restored_twice(tmp_path):
    root = str(tmp_path / "mailq")
    left_by_a_crash(root, 1, "one@h")  # its journal holds "jone@h", never settled
    taker = QueueStore(root, worker=2)
    taker.ensure_dirs()
    # Worker 1 wrote it to retry/ before it died; worker 2 has taken it since.
    taker.write_message("working", Envelope("jone@h", "a@b.test", ["c@d.test"], 0), b"y\r\n")
    engine = start_checker(root, Role.WORKER, worker=1)
    assert ids(engine.store, "retry") == ["one@h"]
    assert ids(taker, "working") == ["jone@h"]
