"""Queue actions on messages the engine holds in memory or is sending: never lost, never doubled."""

import os

import pytest
from twisted.internet import defer

from mailengine.config.persist import change_setting
from mailengine.queue.actions import QueueFilter
from mailengine.queue.commit import GroupCommit
from mailengine.queue.envelope import Envelope
from mailengine.queue.journal import MATERIALIZE_SECONDS, SEGMENT_SECONDS
from mailengine.web.queuecontrol import QueueControl
from tests.twisted.web_harness import Browser, make_engine, run_inline


class Sender:
    """The LiveQueue's consumer; takes nothing unless a test calls take_due."""

    def messages_due(self):
        pass


@pytest.fixture
def admin(tmp_path):
    engine, clock = make_engine(str(tmp_path))
    engine.queue.consumer = Sender()
    browser = Browser(engine, clock)
    assert browser.login().code == 303
    return browser


def relay(engine, message_id, *rcpts):
    env = Envelope(message_id, "s@y.test", list(rcpts), time_created=engine.reactor.seconds())
    engine.queue.accept_relay(env, b"Subject: relay " + message_id.encode() + b"\r\n\r\nhi\r\n")
    return engine.queue.messages[message_id]


def files(engine, dirname):
    return sorted(n for n in os.listdir(engine.store.dir(dirname)) if not n.startswith("journal"))


def journal_segments(engine):
    return [n for n in os.listdir(engine.store.dir("working")) if n.startswith("journal-")]


def api_act(admin, message_id, action):
    return admin.post(
        f"/api/queue/messages/{message_id}/{action}", headers={"X-CSRF-Token": [admin.csrf]}
    )


def durable(admin):
    change_setting(admin.engine.config, "queue", "use_disk_for_relay", True)


def test_a_message_whose_safe_copy_is_the_journal_is_listed_and_can_be_held(admin):
    engine = admin.engine
    durable(admin)
    msg = relay(engine, "J1@h", "a@x.test")
    assert msg.location == "journal"
    listing = admin.get("/gui/admin/queue?dir=memory").text
    assert "J1@h" in listing and "due: waits for the sender" in listing
    r = api_act(admin, "J1@h", "hold")
    assert r.code == 200 and r.json()["text"] == "held (memory -> hold/)"
    assert files(engine, "hold") == ["J1@h.dat", "J1@h.inf"]
    assert "J1@h" not in engine.queue.messages and engine.queue.memory_count == 0
    held = engine.store.read_envelope("hold", "J1@h", now=admin.clock.seconds())
    assert held.rcpt_to_send == ["a@x.test"] and "held by the operator" in held.log[-1]
    # Its journal copy is settled: a crash now would not bring it back into retry/.
    assert "J1@h" not in engine.queue.journal.active.live


def test_a_journal_message_can_be_deleted_and_its_page_shown(admin):
    engine = admin.engine
    durable(admin)
    relay(engine, "J1@h", "a@x.test")
    page = admin.get("/gui/admin/queue/message/J1@h").text
    assert "in memory" in page and "Subject: relay J1@h" in page and ">Hold<" in page
    r = api_act(admin, "J1@h", "delete")
    assert r.code == 200 and r.json()["text"] == "deleted from memory"
    assert "J1@h" not in engine.queue.messages and engine.queue.memory_count == 0
    assert "J1@h" not in engine.queue.journal.active.live


def test_a_message_being_sent_is_left_alone_and_the_answer_says_why(admin):
    engine = admin.engine
    relay(engine, "S1@h", "a@x.test")
    [taken] = engine.queue.take_due(1)  # the delivery engine has it now
    for action in ("delete", "hold"):
        r = api_act(admin, "S1@h", action)
        assert r.code == 409 and r.json()["text"].startswith("being sent now")
    assert engine.queue.messages["S1@h"] is taken and taken.data is not None
    page = admin.get("/gui/admin/queue/message/S1@h").text
    assert "Being sent now" in page and ">Hold<" not in page and ">Delete<" not in page
    assert "being sent now" in admin.get("/gui/admin/queue?dir=memory").text
    assert files(engine, "hold") == [] and files(engine, "retry") == []
    # The attempt fails: it returns to retry/, where it can be held.
    taken.envelope.retry_time = admin.clock.seconds() + 600
    engine.queue.retry_later(taken)
    assert files(engine, "retry") == ["S1@h.dat", "S1@h.inf"]
    assert api_act(admin, "S1@h", "hold").json()["text"] == "held (retry/ -> hold/)"
    assert files(engine, "retry") == [] and files(engine, "hold") == ["S1@h.dat", "S1@h.inf"]


def test_a_message_written_to_working_while_it_waited_is_held_by_moving_its_files(admin):
    engine, clock = admin.engine, admin.clock
    durable(admin)
    relay(engine, "W1@h", "a@x.test")
    clock.advance(SEGMENT_SECONDS + 1)
    engine.queue.journal_tick()
    clock.advance(MATERIALIZE_SECONDS + 1)
    engine.queue.journal_tick()
    assert engine.queue.messages["W1@h"].location == "working"  # still waiting, in memory
    assert files(engine, "working") == ["W1@h.dat", "W1@h.inf"]
    r = api_act(admin, "W1@h", "hold")
    assert r.code == 200 and r.json()["to_dir"] == "hold"
    assert files(engine, "working") == [] and files(engine, "hold") == ["W1@h.dat", "W1@h.inf"]
    assert "W1@h" not in engine.queue.messages and engine.queue.memory_count == 0


def test_deleting_one_domain_from_a_waiting_message_keeps_the_others(admin):
    engine = admin.engine
    relay(engine, "M1@h", "a@x.test", "b@y.test")
    relay(engine, "M2@h", "c@x.test")
    headers = {"X-CSRF-Token": [admin.csrf]}
    r = admin.post("/api/queue/domains/x.test/delete?dir=memory", headers=headers).json()
    assert r["done"] == 2
    assert engine.queue.messages["M1@h"].envelope.rcpt_to_send == ["b@y.test"]
    assert "M2@h" not in engine.queue.messages


def test_a_hold_that_cannot_write_puts_the_message_in_retry_instead(admin):
    engine = admin.engine
    relay(engine, "M1@h", "a@x.test")
    hold = engine.store.dir("hold")
    os.rmdir(hold)
    with open(hold, "w") as fh:  # hold/ cannot take files now
        fh.write("not a directory")
    r = api_act(admin, "M1@h", "hold")
    assert r.code == 409 and "waits in retry/ instead" in r.json()["text"]
    assert files(engine, "retry") == ["M1@h.dat", "M1@h.inf"]
    assert engine.queue.messages["M1@h"].location == "retry"


class LaterThread:
    """A worker thread that runs only when the test says so."""

    def __init__(self):
        self.waiting = []

    def __call__(self, fn):
        d = defer.Deferred()
        self.waiting.append((fn, d))
        return d

    def run_all(self):
        while self.waiting:
            fn, d = self.waiting.pop(0)
            d.callback(fn())


def test_a_stop_while_a_hold_is_being_written_neither_loses_nor_doubles_it(tmp_path):
    engine, clock = make_engine(str(tmp_path))
    engine.queue.consumer = Sender()
    relay(engine, "M1@h", "a@x.test")
    relay(engine, "M2@h", "b@x.test")
    thread = LaterThread()
    committer = GroupCommit(thread, engine.store.sync_all)
    engine.committer = engine.queue.committer = committer
    control = QueueControl(engine, run_inline, clock.seconds)
    held = defer.ensureDeferred(control.act("hold", "M1@h", "admin"))
    # While hold/ is written: the engine neither takes it nor writes it elsewhere.
    assert engine.queue.take_due(10)[0].message_id == "M2@h"
    busy = defer.ensureDeferred(control.act("delete", "M1@h", "admin"))
    assert "writing it to disk" in busy.result.text
    stopped = engine.queue.drain()
    thread.run_all()
    thread.run_all()
    assert held.result.ok and stopped.called
    assert files(engine, "hold") == ["M1@h.dat", "M1@h.inf"]
    assert files(engine, "retry") == ["M2@h.dat", "M2@h.inf"]


def test_holding_all_mail_in_memory_to_a_domain_syncs_once_per_batch_off_the_reactor(tmp_path):
    engine, clock = make_engine(str(tmp_path))
    engine.queue.consumer = Sender()
    for i in range(5):
        relay(engine, f"M{i}@h", f"u{i}@x.test")
    relay(engine, "Y@h", "v@y.test")
    thread, syncs = LaterThread(), []
    committer = GroupCommit(thread, lambda: syncs.append(1))
    engine.committer = engine.queue.committer = committer
    control = QueueControl(engine, run_inline, clock.seconds)
    which = QueueFilter(dirs=("memory",), domain="x.test")
    done = defer.ensureDeferred(control.act_on_matching("hold", which, "admin"))
    assert files(engine, "hold") == [] and not done.called  # nothing written in the reactor
    thread.run_all()
    assert len(done.result) == 5 and all(r.ok for r in done.result)
    assert len(files(engine, "hold")) == 10 and list(engine.queue.messages) == ["Y@h"]
    assert committer.batches == len(syncs) == 2  # the first hold, then the other four


def test_retry_now_on_a_waiting_message_says_it_is_already_due(admin):
    relay(admin.engine, "M1@h", "a@x.test")
    r = api_act(admin, "M1@h", "retry-now").json()
    assert r["ok"] and r["text"].startswith("already due")


def test_mail_in_memory_is_paged_oldest_first_and_searched(admin):
    engine, clock = admin.engine, admin.clock
    for i in range(60):
        relay(engine, f"M{i:02d}@h", f"u{i}@{'x' if i % 2 else 'y'}.test")
        clock.advance(1)
    first = admin.get("/gui/admin/queue?dir=memory").text
    assert "1-50 of 60 messages" in first and "M00@h" in first and "M50@h" not in first
    assert first.index("M00@h") < first.index("M01@h")
    assert "51-60 of 60" in admin.get("/gui/admin/queue?dir=memory&page=1").text
    found = admin.get("/api/queue?dir=memory&domain=x.test&limit=5").json()
    assert found["total"] == 30 and [m["id"] for m in found["messages"]][:2] == ["M01@h", "M03@h"]


def test_a_taken_message_waiting_for_a_connection_is_not_labelled_being_sent(admin):
    engine = admin.engine

    class Job:
        def __init__(self, started):
            self.started, self.done = started, False

    class Attempt:  # the delivery engine's view of a taken message (delivery/sender.py)
        def __init__(self, started):
            self.jobs = [Job(started)]

        @property
        def is_on_a_connection(self):
            return any(j.started and not j.done for j in self.jobs)

    class Delivery:
        attempts = {"Q1@h": Attempt(False), "Q2@h": Attempt(True)}

    admin.running.delivery = Delivery()
    relay(engine, "Q1@h", "a@x.test")
    relay(engine, "Q2@h", "b@x.test")
    engine.queue.take_due(2)
    listing = admin.get("/gui/admin/queue?dir=memory").text
    assert listing.count("being sent now") == 1 and listing.count("waiting for a connection") == 1
    r = api_act(admin, "Q1@h", "hold")
    assert r.code == 409 and r.json()["text"].startswith("taken for an attempt, waiting")
    page = admin.get("/gui/admin/queue/message/Q1@h").text
    assert "Taken for an attempt, waiting for a connection" in page and ">Hold<" not in page
    Delivery.attempts["Q1@h"].jobs[0].started = True  # a connection took it
    assert "being sent now" in admin.get("/gui/admin/queue/message/Q1@h").text
