"""A big backlog in retry/: only what is due soon is held whole (issue 12 item 6)."""

import os

import pytest

from mailengine.queue import live
from mailengine.queue.envelope import Envelope
from tests.twisted.test_live_queue import Consumer, SyncThreads, make_parts


@pytest.fixture
def parts(tmp_path):
    return make_parts(tmp_path)


def deferred(store, clock, i, due_in, dated=True):
    """A message as the engine leaves it after a failed attempt (its .inf dated)."""
    env = Envelope(f"B{i}@h", "s@y.test", [f"r{i}@x.test"], clock.seconds(), send_tries=1)
    env.retry_time = clock.seconds() + due_in
    store.write_message("retry", env, b"x\r\n")
    if dated:
        store.date_inf("retry", env.message_id, env.retry_time)
    return env.message_id


def test_messages_due_later_are_indexed_from_the_listing_without_reading_them(parts):
    store, clock, config, queue, syncs, _ = parts
    ids = [deferred(store, clock, i, due_in=6 * 3600) for i in range(50)]
    # Damaged, yet dated hours ahead: a scan that read it would skip it as invalid.
    with open(store.path("retry", ids[0], ".inf"), "w") as fh:
        fh.write("not an inf\n")
    store.date_inf("retry", ids[0], clock.seconds() + 6 * 3600)
    report = queue.scan_retry()
    assert (report.new, report.invalid) == (50, 0)
    assert queue.messages == {} and len(queue.index) == 50  # nothing held whole
    assert queue.counts()["retry"] == 50 and queue.indexed_count == 50
    assert queue.scan_retry().known == 50


def test_an_indexed_message_comes_in_when_it_is_due_soon_and_is_sent_when_due(parts):
    store, clock, config, queue, syncs, _ = parts
    queue.consumer = Consumer()
    message_id = deferred(store, clock, 1, due_in=2 * 3600)
    queue.scan_retry()
    assert message_id in queue.index and queue.take_due(10) == []
    clock.advance(3600 + 120)  # within the horizon now: the next promotion reads it
    assert message_id in queue.messages and message_id not in queue.index
    clock.advance(3600)
    assert [m.message_id for m in queue.take_due(10)] == [message_id]


def test_the_active_set_is_bounded_and_refilled_as_room_frees(parts, monkeypatch):
    store, clock, config, queue, syncs, _ = parts
    monkeypatch.setattr(live, "ACTIVE_LIMIT", 3)
    queue.consumer = Consumer()
    for i in range(5):
        deferred(store, clock, i, due_in=-1, dated=False)  # due now, dropped by hand
    queue.scan_retry()
    assert len(queue.messages) == 3 and len(queue.index) == 2
    assert queue.counts()["retry"] == 5
    taken = queue.take_due(10)
    assert len(taken) == 3
    for msg in taken:
        queue.complete(msg)
    clock.advance(live.PROMOTE_SECONDS)
    assert len(queue.take_due(10)) == 2 and len(queue.index) == 0


def test_a_retry_far_ahead_leaves_memory_and_its_file_is_dated_to_it(parts):
    store, clock, config, queue, syncs, _ = parts
    queue.consumer = Consumer()
    queue.accept_relay(Envelope("R1@h", "s@y.test", ["a@x.test"], clock.seconds()), b"x\r\n")
    [msg] = queue.take_due(1)
    msg.envelope.retry_time = clock.seconds() + 8 * 3600
    queue.retry_later(msg)
    assert "R1@h" not in queue.messages and "R1@h" in queue.index
    assert os.stat(store.path("retry", "R1@h", ".inf")).st_mtime == msg.envelope.retry_time
    assert queue.scan_retry().known == 1  # known from the listing: not read again


def test_index_entries_whose_files_went_are_dropped_by_the_next_pass(parts):
    store, clock, config, queue, syncs, _ = parts
    ids = [deferred(store, clock, i, due_in=5 * 3600) for i in range(3)]
    queue.scan_retry()
    store.move(ids[1], "retry", "hold")  # `mailengine queue hold`
    reports = []
    queue.scan_retry_in_background(SyncThreads()).addCallback(reports.append)
    assert reports[0].removed == 1 and ids[1] not in queue.index and len(queue.index) == 2


def test_the_books_count_an_indexed_message_once_it_is_read_and_keep_it_when_it_leaves(parts):
    store, clock, config, queue, syncs, _ = parts
    queue.consumer = Consumer()
    books = queue.counters.books
    deferred(store, clock, 1, due_in=2 * 3600)
    queue.scan_retry()
    assert books.found == 0 and queue.queued_recipients() == 0  # not read: not in the books
    clock.advance(3600 + 120)
    assert books.found == 1 and queue.queued_recipients() == 1
    queue.accept_relay(Envelope("R2@h", "s@y.test", ["a@x.test", "b@x.test"], 0), b"x\r\n")
    [taken] = [m for m in queue.take_due(10) if m.message_id == "R2@h"]
    taken.envelope.retry_time = clock.seconds() + 8 * 3600
    queue.retry_later(taken)
    assert "R2@h" in queue.index and queue.queued_recipients() == 3
    store.delete("retry", "R2@h")
    queue.scan_retry()
    assert books.removed == 2 and queue.queued_recipients() == 1
