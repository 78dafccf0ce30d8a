import os

import pytest
from twisted.internet import defer, task

from mailengine.config.model import Config
from mailengine.observe.counters import Counters
from mailengine.queue.commit import GroupCommit
from mailengine.queue.envelope import Envelope
from mailengine.queue.journal import MATERIALIZE_SECONDS, SEGMENT_SECONDS, recover_journal
from mailengine.queue.live import JOURNAL_TICK_SECONDS, LiveQueue
from mailengine.queue.receipts import encode_message, unsettled
from mailengine.queue.store import QueueStore


class SyncThreads:
    """Runs 'thread' work inline, or holds it until release() to model a slow fsync."""

    def __init__(self, hold=False):
        self.hold = hold
        self.waiting = []

    def __call__(self, fn):
        if self.hold:
            d = defer.Deferred()
            self.waiting.append((fn, d))
            return d
        return defer.maybeDeferred(fn)

    def release(self):
        waiting, self.waiting = self.waiting, []
        for fn, d in waiting:
            defer.maybeDeferred(fn).chainDeferred(d)


class Consumer:
    def __init__(self):
        self.calls = 0

    def messages_due(self):
        self.calls += 1


@pytest.fixture
def parts(tmp_path):
    return make_parts(tmp_path)


def make_parts(tmp_path):
    store = QueueStore(str(tmp_path / "mailq"))
    store.ensure_dirs()
    clock = task.Clock()
    clock.advance(1_000_000_000)
    config = Config.defaults()
    syncs = []
    threads = SyncThreads()
    committer = GroupCommit(threads, lambda: syncs.append(clock.seconds()))
    queue = LiveQueue(store, config, clock, committer, Counters(started=clock.seconds()))
    return store, clock, config, queue, syncs, threads


def env(i, rcpts=("a@x.test",)):
    return Envelope(
        message_id=f"M{i}@h",
        mail_from="s@y.test",
        rcpt_to_send=list(rcpts),
        time_created=1_000_000_000,
    )


def test_relay_mail_is_held_in_memory_and_handed_to_the_sender(parts):
    store, clock, config, queue, syncs, _ = parts
    consumer = Consumer()
    queue.consumer = consumer
    queue.accept_relay(env(1), b"x" * 100)
    assert consumer.calls == 1 and queue.memory_count == 1 and queue.memory_bytes == 100
    assert os.listdir(store.dir("working")) == [] and syncs == []
    [msg] = queue.take_due(10)
    assert msg.data == b"x" * 100 and msg.location == "memory"


def test_without_a_sender_relay_mail_waits_in_retry(parts):
    store, clock, config, queue, syncs, _ = parts
    results = []
    queue.accept_relay(env(1), b"hello\r\n").addCallback(results.append)
    assert results == ["M1@h"]
    assert sorted(os.listdir(store.dir("retry"))) == ["M1@h.dat", "M1@h.inf"]
    assert queue.memory_count == 0


def journal_files(store):
    return sorted(n for n in os.listdir(store.dir("working")) if n.startswith("journal-"))


def journal_unsettled(store):
    out = []
    for name in journal_files(store):
        with open(os.path.join(store.dir("working"), name), "rb") as fh:
            out += [r.message_id for r in unsettled(fh.read())]
    return out


def test_durable_relay_mail_is_journaled_and_synced_before_it_is_acknowledged(parts):
    store, clock, config, queue, syncs, threads = parts
    config.override("queue", "use_disk_for_relay", True)
    queue.consumer = Consumer()
    journal_syncs = []
    real_sync = queue.committer.sync_journal
    queue.committer.sync_journal = lambda: (journal_syncs.append(1), real_sync())
    threads.hold = True
    acked = []
    for i in range(5):
        queue.accept_relay(env(i), b"data\r\n").addCallback(acked.append)
    assert acked == []  # nothing acknowledged before the sync
    threads.release()  # the first batch (1 message) is appended and synced
    threads.release()  # the other 4 were batched together: one fdatasync
    assert len(acked) == 5 and len(journal_syncs) == 2 and syncs == []
    assert journal_unsettled(store) == [f"M{i}@h" for i in range(5)]
    assert [m.location for m in queue.take_due(10)] == ["journal"] * 5


def test_delivered_journal_messages_settle_and_the_segment_is_removed(parts):
    store, clock, config, queue, syncs, _ = parts
    config.override("queue", "use_disk_for_relay", True)
    queue.consumer = Consumer()
    for i in range(3):
        queue.accept_relay(env(i), b"x\r\n")
    m0, m1, m2 = queue.take_due(10)
    queue.complete(m0)
    assert journal_unsettled(store) == ["M1@h", "M2@h"]
    m1.envelope.retry_time = clock.seconds() + 600
    queue.retry_later(m1)  # written to retry/ durably (one syncfs), then settled
    assert len(syncs) == 1 and os.path.exists(store.path("retry", "M1@h", ".dat"))
    assert journal_unsettled(store) == ["M2@h"]
    queue.complete(m2)
    for _ in range(int(SEGMENT_SECONDS / JOURNAL_TICK_SECONDS) + 2):
        clock.advance(JOURNAL_TICK_SECONDS)  # the segment is sealed, then removed
    assert journal_files(store) == []


def test_messages_in_flight_for_long_are_written_to_working(parts):
    store, clock, config, queue, syncs, _ = parts
    config.override("queue", "use_disk_for_relay", True)
    queue.consumer = Consumer()
    queue.accept_relay(env(1), b"slow\r\n")
    [msg] = queue.take_due(1)
    for _ in range(int((SEGMENT_SECONDS + MATERIALIZE_SECONDS) / JOURNAL_TICK_SECONDS) + 3):
        clock.advance(JOURNAL_TICK_SECONDS)
    assert msg.location == "working"
    assert sorted(os.listdir(store.dir("working"))) == ["M1@h.dat", "M1@h.inf"]
    queue.complete(msg)
    assert os.listdir(store.dir("working")) == []


def test_leftover_journal_messages_are_restored_into_retry_once(parts):
    store, clock, config, queue, syncs, _ = parts
    config.override("queue", "use_disk_for_relay", True)
    queue.consumer = Consumer()
    for i in range(4):
        queue.accept_relay(env(i), b"body %d\r\n" % i)
    m0, m1, *_ = queue.take_due(10)
    queue.complete(m0)
    m1.envelope.retry_time = clock.seconds() + 600
    queue.retry_later(m1)
    [segment] = journal_files(store)
    with open(os.path.join(store.dir("working"), segment), "ab") as fh:
        fh.write(encode_message("torn@h", b"mailfrom=x\n", b"partial")[:-3])
    # The engine is killed here; a new start restores M2 and M3, not M0 (delivered),
    # not M1 (already in retry/), not the torn record.
    assert recover_journal(store) == 2
    assert journal_files(store) == []
    assert sorted(i for i, _, _ in store.scan("retry")) == ["M1@h", "M2@h", "M3@h"]
    assert store.read_data("retry", "M3@h") == b"body 3\r\n"


def test_drain_writes_journal_messages_to_retry_and_removes_the_journal(parts):
    store, clock, config, queue, syncs, _ = parts
    config.override("queue", "use_disk_for_relay", True)
    queue.consumer = Consumer()
    for i in range(3):
        queue.accept_relay(env(i), b"x\r\n")
    queue.drain()
    assert len(os.listdir(store.dir("retry"))) == 6
    assert journal_files(store) == []


def test_memory_limit_offloads_new_mail_to_retry(parts):
    store, clock, config, queue, syncs, _ = parts
    config.override("queue", "max_messages_in_memory", 2)
    queue.consumer = Consumer()
    for i in range(4):
        queue.accept_relay(env(i), b"x\r\n")
    assert queue.memory_count == 2
    assert sorted(os.listdir(store.dir("retry"))) == [
        "M2@h.dat",
        "M2@h.inf",
        "M3@h.dat",
        "M3@h.inf",
    ]


def test_scan_indexes_new_files_and_honours_future_retry_times(parts):
    store, clock, config, queue, syncs, _ = parts
    consumer = Consumer()
    queue.consumer = consumer
    later = env(1)
    later.retry_time = clock.seconds() + 300
    store.write_message("retry", later, b"x\r\n")
    now = env(2)
    now.retry_time = clock.seconds() - 1
    store.write_message("retry", now, b"y\r\n")
    report = queue.scan_retry()
    assert report.new == 2
    assert [m.message_id for m in queue.take_due(10)] == ["M2@h"]
    assert os.path.exists(store.path("working", "M2@h", ".dat"))
    assert queue.take_due(10) == []
    calls = consumer.calls
    clock.advance(300)  # the remembered retry time wakes the sender without a scan
    assert consumer.calls > calls
    assert [m.message_id for m in queue.take_due(10)] == ["M1@h"]
    assert queue.scan_retry().new == 0


def test_invalid_files_are_skipped_with_one_warning_and_left_in_place(parts, caplog):
    store, clock, config, queue, syncs, _ = parts
    with open(store.path("retry", "bad@h", ".inf"), "w") as fh:
        fh.write("garbage\n")
    with open(store.path("retry", "bad@h", ".dat"), "w") as fh:
        fh.write("x")
    with open(store.path("retry", "nodat@h", ".inf"), "w") as fh:
        fh.write("mailfrom=a@b\nrcpttosend=c@d\n")
    assert queue.scan_retry().invalid == 2
    assert queue.scan_retry().invalid == 2
    assert os.path.exists(store.path("retry", "bad@h", ".inf"))
    assert "bad@h" not in queue.messages


def test_a_message_held_by_another_program_is_forgotten_not_sent(parts):
    store, clock, config, queue, syncs, _ = parts
    queue.consumer = Consumer()
    store.write_message("retry", env(1), b"x\r\n")
    queue.scan_retry()
    store.move("M1@h", "retry", "hold")  # `mailengine queue hold` got there first
    assert queue.take_due(10) == []
    assert "M1@h" not in queue.messages


def test_retry_later_and_complete_move_files(parts):
    store, clock, config, queue, syncs, _ = parts
    queue.consumer = Consumer()
    queue.accept_relay(env(1), b"x\r\n")
    queue.accept_relay(env(2), b"y\r\n")
    m1, m2 = queue.take_due(10)
    m1.envelope.retry_time = clock.seconds() + 60
    queue.retry_later(m1)
    assert os.path.exists(store.path("retry", "M1@h", ".dat"))
    config.override("queue", "save_done", True)
    queue.complete(m2)
    with open(store.path("done", "M2@h", ".inf")) as fh:
        assert "status=done" in fh.read()
    assert queue.memory_count == 0
    assert queue.scan_retry().new == 0  # our own retry file is already known


def test_drain_writes_everything_in_memory_to_retry(parts):
    store, clock, config, queue, syncs, _ = parts
    queue.consumer = Consumer()
    for i in range(3):
        queue.accept_relay(env(i, rcpts=("a@x.test", "b@x.test")), b"x\r\n")
    queue.drain()
    assert len(os.listdir(store.dir("retry"))) == 6
    e = store.read_envelope("retry", "M0@h", now=0)
    assert e.rcpt_to_send == ["a@x.test", "b@x.test"]


def test_pausing_writes_mail_waiting_in_memory_to_retry(parts):
    store, clock, config, queue, syncs, _ = parts
    queue.consumer = Consumer()
    for i in range(3):
        queue.accept_relay(env(i), b"x\r\n")
    [in_flight] = queue.take_due(1)
    config.apply("smtp_out", "paused", True)
    assert sorted(os.listdir(store.dir("retry"))) == [
        "M1@h.dat",
        "M1@h.inf",
        "M2@h.dat",
        "M2@h.inf",
    ]
    assert queue.memory_count == 1 and in_flight.location == "memory"
    assert queue.accept_relay(env(9), b"y\r\n")  # new mail while paused: retry/ too
    assert os.path.exists(store.path("retry", "M9@h", ".inf"))
    config.apply("smtp_out", "paused", False)
    assert [m.message_id for m in queue.take_due(10)] == ["M1@h", "M2@h", "M9@h"]


def test_a_failed_journal_append_is_cut_off_and_later_records_stay_readable(parts):
    store, clock, config, queue, syncs, _ = parts
    config.override("queue", "use_disk_for_relay", True)
    queue.consumer = Consumer()
    acked, refused = [], []
    queue.accept_relay(env(1), b"one\r\n").addCallback(acked.append)
    segment = queue.journal.active
    saved = os.dup(segment.fd)
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, segment.fd)  # the disk is full now
    queue.accept_relay(env(2), b"two\r\n").addCallbacks(acked.append, refused.append)
    os.dup2(saved, segment.fd)  # space again
    queue.accept_relay(env(3), b"three\r\n").addCallback(acked.append)
    os.close(saved)
    os.close(full)
    assert acked == ["M1@h", "M3@h"] and len(refused) == 1
    assert "M2@h" not in queue.messages and queue.memory_count == 2
    assert journal_unsettled(store) == ["M1@h", "M3@h"]


def test_a_journal_that_cannot_be_opened_refuses_the_message_and_holds_nothing(parts, monkeypatch):
    store, clock, config, queue, syncs, _ = parts
    config.override("queue", "use_disk_for_relay", True)
    queue.consumer = Consumer()

    def no_space():
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(queue.journal, "_open", no_space)
    refused = []
    queue.accept_relay(env(1), b"x\r\n").addErrback(refused.append)
    assert len(refused) == 1 and queue.memory_count == 0 and queue.messages == {}


def test_mail_journaled_while_sending_is_paused_goes_to_retry(parts):
    store, clock, config, queue, syncs, threads = parts
    config.override("queue", "use_disk_for_relay", True)
    queue.consumer = Consumer()
    threads.hold = True
    queue.accept_relay(env(1), b"x\r\n")
    config.apply("smtp_out", "paused", True)  # while the append is on its way
    threads.hold = False
    threads.release()
    assert os.path.exists(store.path("retry", "M1@h", ".inf"))
    assert queue.messages["M1@h"].location == "retry" and queue.memory_count == 0


def test_a_message_larger_than_the_memory_limit_is_sent_on_its_own(parts):
    store, clock, config, queue, syncs, _ = parts
    config.override("queue", "max_memory_kb", 1000)
    queue.consumer = Consumer()
    big = env(1)
    big.retry_time = clock.seconds()
    store.write_message("retry", big, b"x" * 1_200_000 + b"\r\n")
    queue.scan_retry()
    [msg] = queue.take_due(10)
    assert msg.message_id == "M1@h" and len(msg.data) == 1_200_002


def test_the_books_count_what_appears_in_and_vanishes_from_retry(parts):
    store, clock, config, queue, syncs, _ = parts
    store.write_message("retry", env(1, ("a@x.test", "b@x.test")), b"x\r\n")
    store.write_message("retry", env(2), b"x\r\n")
    queue.scan_retry()
    books = queue.counters.books
    assert (books.found, books.removed, queue.queued_recipients()) == (3, 0, 3)
    store.delete("retry", "M2@h")  # deleted by an operator
    replaced = env(1, ("a@x.test",))  # one recipient cut by another program
    store.replace_inf("retry", "M1@h", replaced.to_inf().encode())  # a new file: a new inode
    queue.scan_retry()
    assert (books.found, books.removed, queue.queued_recipients()) == (4, 3, 1)
    assert books.should_be_queued == queue.queued_recipients()


def test_a_scan_while_offloaded_mail_is_written_does_not_count_it_as_found(parts):
    store, clock, config, queue, syncs, threads = parts
    threads.hold = True
    done = []
    queue.accept_relay(env(1), b"x\r\n").addCallback(done.append)  # no sender: to retry/
    [(write, d)] = threads.waiting
    threads.waiting = []
    inode = write()  # the worker renamed it into retry/; the reactor has not heard yet
    queue.scan_retry()
    d.callback(inode)
    assert done == ["M1@h"]
    assert queue.counters.books.found == 0 and queue.queued_recipients() == 1
