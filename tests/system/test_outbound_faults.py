"""Outbound delivery through the real engine against receivers that fail: nothing
stuck in memory, no reconnect storms, every acknowledged recipient accounted for."""

import os
import random
import smtplib
import threading
import time

import pytest

from mailengine.queue.inf import parse_inf
from tests.harness import free_port, read_text, wait_for
from tests.misbehaving import KINDS, STEPS, Fault, MisbehavingServer
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


# -- receivers that fail every session right after the connect -------------------------

STORMS = {
    "closes at once": {"faults": [Fault("close", "CONNECT")]},
    "never greets": {"faults": [Fault("stall", "CONNECT")]},
    "endless line": {"faults": [Fault("endless", "CONNECT")]},
}


@pytest.mark.parametrize("how", sorted(STORMS))
def test_a_host_failing_every_session_gets_a_handful_of_connections_and_its_mail_is_deferred(
    engine_factory, how
):
    server = MisbehavingServer("127.0.9.2", **STORMS[how])
    try:
        engine = engine_factory(
            {
                "web": {"api_token": TOKEN},
                "dns": {"bypass": [f"storm.test,mx.storm.test,MX,127.0.9.2:{server.port}"]},
                "smtp_out": {"read_timeout_seconds": 5},
                "queue": {"retry_intervals_minutes": [0.05] * 30},  # due again every 3 s
            }
        )
        send_sessions(engine, 2, 1, "x@storm.test")
        wait_for(lambda: settled(engine, 2), timeout=60, what="both messages deferred")
        start, connections = time.monotonic(), server.connections
        time.sleep(12)  # retries are due every 3 s; the back-off holds the host down
        per_minute = (server.connections - connections) * 60 / (time.monotonic() - start)
        assert per_minute <= 12, f"{server.connections} connections"
        # A retry due every 3 s takes the message from retry/ for a moment: look at the
        # files once both are back there.
        wait_for(lambda: settled(engine, 2), timeout=60, what="both messages back in retry/")
        tries = {int(inf["sendtries"]) for inf in infs(engine)}
        assert tries and min(tries) >= 1
        status = call(engine, "/api/status")[1]
        [dest] = [d for d in status["destinations"] if d["domain"] == "storm.test"]
        assert dest["last_error"]
    finally:
        server.close()


# -- every misbehaviour through the engine: nothing lost, nothing falsely sent ----------

MISBEHAVIOURS = {
    "behaves": {},
    "250 to DATA": {"faults": [Fault("wrong", "DATA", code=250)]},
    "354 to RCPT": {"faults": [Fault("wrong", "RCPT", code=354)]},
    "extra reply to MAIL": {"faults": [Fault("extra", "MAIL")]},
    "extra reply to DATA": {"faults": [Fault("extra", "DATA")]},
    "missing reply to RCPT": {"faults": [Fault("missing", "RCPT")]},
    "split, bare LF, long lines": {"split": True, "bare_lf": True, "long_lines": True},
    "no PIPELINING": {"pipelining": False},
    "421 to RCPT": {"faults": [Fault("421", "RCPT")]},
    "421 after the dot": {"faults": [Fault("421", "DOT")]},
    "closes at DATA": {"faults": [Fault("close", "DATA")]},
    "closes after the dot, no reply": {"faults": [Fault("close", "DOT")]},
    "closes after replying to the dot": {"faults": [Fault("close-after", "DOT")]},
    "stalls after the dot": {"faults": [Fault("stall", "DOT")]},
    "garbage greeting": {"faults": [Fault("garbage", "CONNECT")]},
    "554 greeting": {"faults": [Fault("wrong", "CONNECT", code=554)]},
    "STARTTLS cut after 220": {
        "offers_starttls": True,
        "faults": [Fault("close-after", "STARTTLS")],
    },
}
DUPLICATES_ALLOWED = {"closes after the dot, no reply", "stalls after the dot"}  # RFC 5321 §6.1


def account(engine, servers, sent):
    """Each acknowledged recipient (all unique): counted sent only if its server took the
    message whole and said so; otherwise queued in retry/ with it in rcpttosend, or listed
    undeliverable. Returns the duplicates per misbehaviour."""
    retry, done = infs(engine), infs(engine, "done")
    counted_sent = {r for inf in retry + done for r in _rcpts(inf, "rcptsent")}
    queued = {r for inf in retry for r in _rcpts(inf, "rcpttosend")}
    undeliverable = {
        line.strip()
        for name in ("hard-undeliverable.txt", "soft-undeliverable.txt")
        for line in read_text(os.path.join(engine.root, name)).splitlines()
    }
    duplicates: dict[str, int] = {}
    for (token, rcpt), name in sent.items():
        taken = [d for d in servers[name].deliveries() if rcpt in d.rcpts]
        if len(taken) > 1:
            duplicates[name] = duplicates.get(name, 0) + len(taken) - 1
        if rcpt in counted_sent:
            end = b"END-" + token.encode() + b"\r\n"
            assert any(d.acknowledged and d.body.endswith(end) for d in taken), (name, rcpt)
        else:
            assert rcpt in queued or rcpt in undeliverable, (name, rcpt)
    return duplicates


def _rcpts(inf, key):
    return [r for r in inf.get(key, "").split(",") if r]


@pytest.mark.parametrize("use_disk", [False, True])
def test_every_misbehaviour_through_the_engine_loses_nothing_and_sends_nothing_falsely(
    engine_factory, use_disk
):
    duplicates = run_misbehaviours(engine_factory, MISBEHAVIOURS, use_disk, first_host=20)
    assert set(duplicates) <= DUPLICATES_ALLOWED, duplicates


def run_misbehaviours(engine_factory, misbehaviours, use_disk, first_host):
    """Three messages, each to one recipient at every server (and one 452 at the good
    one); a graceful stop once the good server has them; then the books are checked."""
    names = sorted(misbehaviours)
    servers = {
        name: MisbehavingServer(f"127.0.9.{first_host + i}", **misbehaviours[name])
        for i, name in enumerate(names)
    }
    domain = {name: f"m{i}.test" for i, name in enumerate(names)}
    bypass = [f"{domain[n]},mx.{domain[n]},MX,{s.host}:{s.port}" for n, s in servers.items()]
    try:
        engine = engine_factory(
            {
                "dns": {"bypass": bypass},
                "smtp_out": {"read_timeout_seconds": 5, "body_timeout_seconds": 5},
                "queue": {"use_disk_for_relay": use_disk, "save_done": True},
                "logs": {"log_undeliverable": True},
            }
        )
        sent = {}  # (token, recipient): the misbehaviour of its server
        with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as client:
            for n in range(3):
                token = f"T{n}x"
                for name in names:
                    sent[(token, f"u{n}@{domain[name]}")] = name
                sent[(token, f"bad{n}@{domain['behaves']}")] = "behaves"  # 452: deferred
                body = f"Subject: {token}\r\n\r\n.leading dot\r\nEND-{token}\r\n".encode()
                client.sendmail("news@example.org", [r for t, r in sent if t == token], body)
        wait_for(lambda: len(servers["behaves"].deliveries()) == 3, what="the good server")
        assert engine.stop() in (0, -15, 143)  # a graceful stop with sessions in flight
        duplicates = account(engine, servers, sent)
        assert not os.listdir(os.path.join(engine.mailq, "working"))
        return duplicates
    finally:
        for server in servers.values():
            server.close()


def test_a_server_that_closes_after_the_dot_without_replying_gets_the_message_again(
    engine_factory,
):
    # RFC 5321 §6.1: the one case where a duplicate is the price of never losing mail.
    server = MisbehavingServer("127.0.9.3", faulty_connections=1, faults=[Fault("close", "DOT")])
    try:
        engine = engine_factory(
            {
                "dns": {"bypass": [f"dup.test,mx.dup.test,MX,127.0.9.3:{server.port}"]},
                "queue": {"retry_intervals_minutes": [0.05]},
            }
        )
        send_sessions(engine, 1, 1, "x@dup.test")
        wait_for(lambda: len(server.deliveries()) == 2, timeout=60, what="the second delivery")
        first, second = server.deliveries()
        assert first.body == second.body and not first.acknowledged and second.acknowledged
        wait_for(lambda: not infs(engine), what="the message done")
    finally:
        server.close()


@pytest.mark.parametrize(("seed", "use_disk"), [(1, False), (2, True)])
def test_random_mixtures_of_misbehaviour_through_the_engine(engine_factory, seed, use_disk):
    chooser = random.Random(seed)
    mixtures = {
        f"mixture {i}": {
            "faults": [
                Fault(chooser.choice(KINDS), chooser.choice(STEPS), chooser.randint(1, 2))
                for _ in range(chooser.randint(1, 3))
            ],
            "pipelining": chooser.random() < 0.7,
            "split": chooser.random() < 0.3,
            "bare_lf": chooser.random() < 0.3,
        }
        for i in range(8)
    }
    run_misbehaviours(engine_factory, {"behaves": {}, **mixtures}, use_disk, first_host=40)
