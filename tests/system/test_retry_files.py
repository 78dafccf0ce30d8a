"""Files dropped into retry/ of a running engine: hostile ones are skipped, good ones sent."""

import json
import os
import smtplib
import time
import urllib.request

import pytest

from mailengine.queue.envelope import Envelope
from mailengine.queue.store import QueueStore
from tests.harness import run_cli, wait_for
from tests.sinks import route

pytestmark = pytest.mark.system
STOPPED = (0, -15, 143)  # SIGTERM: twistd re-raises the signal after a clean stop


def greets(engine):
    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=10) as s:
        return s.noop()[0] == 250


def test_a_fifo_and_a_symlink_in_retry_neither_freeze_the_engine_nor_get_mailed(
    engine_factory, sinks, tmp_path
):
    sink = sinks("127.0.2.9")
    engine = engine_factory(
        {"dns": {"bypass": [route("x.test", sink)]}, "queue": {"check_interval_seconds": 1}},
        start=False,
    )
    retry = os.path.join(engine.mailq, "retry")
    os.makedirs(retry)
    os.mkfifo(os.path.join(retry, "FIFO1@h.inf"))
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"Subject: secret\r\n\r\nthe target of a symlink\r\n")
    with open(os.path.join(retry, "LINK1@h.inf"), "w") as fh:
        fh.write("mailfrom=s@y.test\nrcpttosend=a@x.test\n")
    os.symlink(secret, os.path.join(retry, "LINK1@h.dat"))
    engine.start()
    engine.wait_log("FIFO1@h.inf skipped and left in place")
    engine.wait_log("LINK1@h.inf skipped and left in place")
    assert greets(engine)
    assert engine.stop() in STOPPED  # SIGTERM is heard: nothing blocks the reactor
    assert "stopped;" in engine.console()
    assert sink.received() == []
    assert os.path.exists(os.path.join(retry, "FIFO1@h.inf"))
    assert os.path.islink(os.path.join(retry, "LINK1@h.dat"))


# -- acting at once (issue 12 item 5): check_interval_seconds = 600 throughout -------------

# Far longer than any pickup through inotify, far shorter than the 600 s queue check: a
# test that passes cannot have waited for the periodic check. Not a timing assertion.
ACT_AT_ONCE_DEADLINE = 10.0
TOKEN = "retry-files-test-token-0123456789"


@pytest.fixture
def sink(sinks):
    return sinks("127.0.2.10")


@pytest.fixture
def engine(engine_factory, sink):
    return engine_factory(
        {
            "queue": {"check_interval_seconds": 600, "retry_intervals_minutes": [30]},
            "dns": {"bypass": [route("x.test", sink)]},
            "web": {"api_token": TOKEN},
            "logs": {"debug_program": True},  # says when the start's scan is over
        }
    )


def drop_message(engine, message_id, recipient, retry_in=0.0):
    """Another program's write: .dat then .inf, each renamed into place."""
    now = time.time()
    envelope = Envelope(
        message_id, "s@y.test", [recipient], now, retry_time=now + retry_in if retry_in else None
    )
    QueueStore(engine.mailq).write_message("retry", envelope, b"Subject: drop\r\n\r\nhi\r\n")


def indexed(engine):
    """How many messages the running engine has in its queue index (status API)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{engine.web_port}/api/status",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())["queue"]["indexed"]


def test_a_file_dropped_into_retry_is_delivered_without_waiting_for_the_queue_check(engine, sink):
    engine.wait_log("started")
    drop_message(engine, "DROP1@h", "a@x.test")
    wait_for(lambda: sink.received(), ACT_AT_ONCE_DEADLINE, what="the dropped file to be sent")
    assert sink.received()[0].rcpts == ["a@x.test"]
    assert "watched" not in engine.console()  # no "retry/ is not watched" fallback line


def test_mailengine_shutdown_stops_the_engine_without_waiting_for_the_queue_check(engine):
    result = run_cli("shutdown", "--root", engine.root)
    assert result.returncode == 0, result.stderr
    assert b"within a second" in result.stdout
    assert engine.wait_exit(timeout=ACT_AT_ONCE_DEADLINE) == 0
    assert "retry/shutdown.txt found: shutting down" in engine.console()


def queue_action(engine, *args):
    result = run_cli("queue", *args, "--root", engine.root)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


def test_queue_actions_reach_the_running_engine_at_once(engine, sink):
    # Three messages due in an hour: the engine knows them but waits.
    for i in range(3):
        drop_message(engine, f"LATER{i}@h", f"r{i}@x.test", retry_in=3600)
    wait_for(lambda: indexed(engine) == 3, ACT_AT_ONCE_DEADLINE, what="three indexed")
    delete_me = "LATER0@h"
    assert "due now" in queue_action(engine, "retry-now", "LATER1@h")
    wait_for(lambda: len(sink.received()) == 1, ACT_AT_ONCE_DEADLINE, what="retry-now")
    assert "held" in queue_action(engine, "hold", "LATER2@h")
    assert "released" in queue_action(engine, "release", "LATER2@h")
    wait_for(lambda: len(sink.received()) == 2, ACT_AT_ONCE_DEADLINE, what="release")
    assert [m.rcpts for m in sink.received()] == [["r1@x.test"], ["r2@x.test"]]
    assert "deleted" in queue_action(engine, "delete", delete_me)
    wait_for(lambda: indexed(engine) == 0, ACT_AT_ONCE_DEADLINE, what="the delete to be seen")


def send_and_wait(engine, recipient):
    return run_cli(
        *("send", "--root", engine.root, "--wait", "--timeout", "60", recipient),
        input=b"Subject: wait\n\nbody\n",
    )


def test_send_says_where_the_message_went_and_waits_for_its_outcome(engine, sink):
    sink.rcpt_reply = lambda rcpt: (451, "4.7.1 try later") if "later" in rcpt else None
    sent = send_and_wait(engine, "a@x.test")
    assert sent.returncode == 0, sent.stderr
    message_id = sent.stdout.decode().splitlines()[0]
    assert f"queued in {engine.mailq}/retry/" in sent.stderr.decode()
    assert "delivered" in sent.stdout.decode().splitlines()[-1]
    assert [m.rcpts for m in sink.received()] == [["a@x.test"]]
    deferred = send_and_wait(engine, "later@x.test")
    assert deferred.returncode == 75, deferred.stderr
    assert "deferred, in retry/" in deferred.stdout.decode()
    assert message_id not in deferred.stdout.decode()
