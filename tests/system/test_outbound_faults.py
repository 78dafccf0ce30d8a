"""Outbound delivery through the real engine against receivers that fail: nothing
stuck in memory, no reconnect storms, every acknowledged recipient accounted for."""

import os
import smtplib
import threading

import pytest

from mailengine.queue.inf import parse_inf
from tests.harness import free_port, read_text, wait_for
from tests.system.test_web_delivery import TOKEN, call, metrics

pytestmark = pytest.mark.system


def send_sessions(engine, sessions, per_session, rcpt):
    """``sessions`` SMTP sessions at once, ``per_session`` messages each."""

    def one(s):
        with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as client:
            for i in range(per_session):
                body = f"Subject: m{s}.{i}\r\n\r\nhello\r\n".encode()
                client.sendmail("news@example.org", [rcpt], body)

    threads = [threading.Thread(target=one, args=(s,)) for s in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def infs(engine, dirname="retry"):
    path = os.path.join(engine.mailq, dirname)
    return [
        parse_inf(read_text(os.path.join(path, n)))
        for n in sorted(os.listdir(path))
        if n.endswith(".inf")
    ]


def settled(engine, expected):
    values = metrics(engine)
    memory = call(engine, "/api/queue?dir=memory")[1]["messages"]
    done = (
        not memory
        and values[("mailengine_outbound_connections_open", ())] == 0
        and len(infs(engine)) == expected
    )
    return values if done else None


@pytest.mark.parametrize("use_disk", [False, True])
def test_a_refused_bypass_target_hands_every_job_back_once_and_logs_the_refusals(
    engine_factory, use_disk
):
    dead = free_port("127.0.9.1")  # nothing listens there: connection refused
    engine = engine_factory(
        {
            "web": {"api_token": TOKEN},
            "dns": {"bypass": [f"dead.test,mx.dead.test,MX,127.0.9.1:{dead}"]},
            "logs": {"debug_smtp_out": True},
            "queue": {"use_disk_for_relay": use_disk, "retry_intervals_minutes": [30]},
        }
    )
    send_sessions(engine, 3, 5, "x@dead.test")
    values = wait_for(lambda: settled(engine, 15), timeout=60, what="15 deferred, none in memory")
    assert values[("mailengine_recipients_total", (("outcome", "deferred"),))] == 15
    assert {inf["sendtries"] for inf in infs(engine)} == {"1"}
    assert "connection failed" in engine.console()
