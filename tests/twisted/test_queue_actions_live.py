"""Operator actions against a LiveQueue: what the engine sees after `mailengine queue` acts."""

import os

import pytest
from twisted.internet import defer, task

from mailengine.config.model import Config
from mailengine.observe.counters import Counters
from mailengine.queue.actions import QueueActions
from mailengine.queue.commit import GroupCommit
from mailengine.queue.envelope import Envelope
from mailengine.queue.live import LiveQueue
from mailengine.queue.store import QueueStore

NOW = 1_700_000_000.0


class Sender:
    def __init__(self):
        self.calls = 0

    def messages_due(self):
        self.calls += 1


@pytest.fixture
def live(tmp_path):
    store = QueueStore(str(tmp_path / "mailq"))
    store.ensure_dirs()
    clock = task.Clock()
    clock.advance(NOW)
    committer = GroupCommit(defer.maybeDeferred, lambda: None)
    queue = LiveQueue(store, Config.defaults(), clock, committer, Counters(started=NOW))
    queue.consumer = Sender()
    return store, clock, queue, QueueActions(store)


def envelope(message_id, retry_in=3600.0):
    return Envelope(
        message_id=message_id,
        mail_from="s@y.test",
        rcpt_to_send=["a@x.test"],
        time_created=NOW,
        retry_time=NOW + retry_in,
    )


def test_retry_now_from_the_command_line_makes_an_engine_written_retry_due(live):
    store, clock, queue, actions = live
    # The engine wrote this retry itself (after a soft failure): due in an hour.
    queue.accept_relay(envelope("M1"), b"Subject: x\r\n\r\nhi\r\n")
    [msg] = queue.take_due(1)
    msg.envelope.retry_time = NOW + 3600
    queue.retry_later(msg)
    assert queue.take_due(10) == []
    assert actions.act("retry-now", "M1", clock.seconds()).ok
    report = queue.scan_retry()
    assert report.new == 1  # a new .inf file: re-read, not mistaken for the old one
    [due] = queue.take_due(10)
    assert due.message_id == "M1" and due.location == "working"


def test_a_message_held_by_the_command_line_is_forgotten_and_never_taken(live):
    store, clock, queue, actions = live
    store.write_message("retry", envelope("M1", retry_in=0), b"x\r\n")
    queue.scan_retry()
    assert "M1" in queue.messages
    assert actions.act("hold", "M1", clock.seconds()).ok
    queue.scan_retry()
    assert "M1" not in queue.messages and queue.take_due(10) == []
    assert os.path.exists(store.path("hold", "M1", ".inf"))
    clock.advance(7200)
    queue.scan_retry()
    assert queue.take_due(10) == []  # hold/ is never read


def test_a_hold_that_races_the_engine_never_loses_the_message(live):
    store, clock, queue, actions = live
    store.write_message("retry", envelope("M1", retry_in=0), b"x\r\n")
    queue.scan_retry()
    assert actions.act("hold", "M1", clock.seconds()).ok  # before the engine's next scan
    assert queue.take_due(10) == []  # its claim (a rename) fails: forgotten, not sent
    assert "M1" not in queue.messages
    assert sorted(os.listdir(store.dir("hold"))) == ["M1.dat", "M1.inf"]
