"""Worker processes on one box ([server] workers = 2) through the real ``twistd mailengine``:
one SMTP port and one mailq/ shared, a killed worker restarted with its journal recovered,
every worker stopped gracefully, settings changed in the web admin reaching every worker
(issue 13, item 1)."""

from __future__ import annotations

import collections
import itertools
import os
import re
import signal
import smtplib
import threading
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import wait_for
from tests.sinks import route
from tests.system.test_inbound import MESSAGE, infs, queue_id
from tests.system.test_settings import api, start_engine

pytestmark = pytest.mark.system

READY = re.compile(r"worker (\d+) ready \(pid (\d+)\)")


def worker_pids(engine) -> dict[int, int]:
    """Worker index -> pid of its latest run, from the supervisor's log."""
    return {int(n): int(pid) for n, pid in READY.findall(engine.console())}


def started_with_workers(engine, n: int = 2) -> dict[int, int]:
    engine.wait_log(f"started with {n} workers")
    pids = worker_pids(engine)
    assert sorted(pids) == list(range(1, n + 1))
    return pids


def send_in_threads(engine, rcpts_for, clients: int, stop: threading.Event, acked: list):
    """``clients`` SMTP connections in turn sending until ``stop``; (id, rcpts) per 250."""

    def client(first: int) -> None:
        while not stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as c:
                    for n in itertools.count(first, clients):
                        if stop.is_set():
                            return
                        rcpts = rcpts_for(n)
                        c.mail("a@b.test")
                        for rcpt in rcpts:
                            c.rcpt(rcpt)
                        code, text = c.data(MESSAGE)
                        if code == 250:
                            acked.append((text.decode().rsplit(" ", 1)[1], rcpts))
                        if n % 7 == 0:
                            break  # a new connection now and then: another worker may take it
            except (smtplib.SMTPException, OSError):
                pass  # the worker it talked to was killed: a new connection

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    return threads


def test_two_workers_share_the_port_and_deliver_every_message_exactly_once(engine_factory, sinks):
    sink = sinks("127.0.2.31")
    engine = engine_factory(
        {"server": {"workers": 2}, "dns": {"bypass": [route("sink.test", sink)]}}
    )
    pids = started_with_workers(engine)
    acked: list[tuple[str, list[str]]] = []
    stop = threading.Event()
    threads = send_in_threads(engine, lambda n: [f"r{n}@sink.test"], 6, stop, acked)
    wait_for(lambda: len(acked) >= 120, timeout=60, what="120 acknowledged messages")
    stop.set()
    for t in threads:
        t.join(30)
    ids = [m for m, _ in acked]
    wait_for(lambda: len(sink.received()) >= len(ids), timeout=60, what="every message sent")
    delivered = collections.Counter(queue_id(m.data) for m in sink.received())
    assert set(delivered) == set(ids)
    assert max(delivered.values()) == 1, "a message was delivered twice"
    # Ids name the receiving process (P<pid>): both workers took connections.
    receivers = {int(re.match(r"P(\d+)T", m).group(1)) for m in ids}
    assert receivers == set(pids.values())
    # The supervisor's /metrics and /api/status add up both workers' counters.
    expected = {
        "mailengine_messages_received_total": len(ids),
        'mailengine_recipients_total{outcome="sent"}': len(ids),
        'mailengine_books_recipients_total{entry="received"}': len(ids),
        "mailengine_books_unaccounted_recipients": 0,
    }
    wait_for(lambda: metrics(engine, expected) == expected, timeout=15, what="box metrics")
    assert engine.stop() in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
    console = engine.console()
    for n in (1, 2):
        assert f"worker {n} (pid {pids[n]}) stopped" in console
    assert "stopped; 0 messages wait in retry/" in console


def metrics(engine, wanted) -> dict[str, float]:
    """The samples named in ``wanted`` (``name{label="value"}``) from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{engine.web_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
            key = f"{sample.name}{{{labels}}}" if labels else sample.name
            if key in wanted:
                found[key] = sample.value
    return found


def test_a_killed_worker_is_restarted_its_journal_recovered_and_no_acknowledged_mail_lost(
    engine_factory, sinks
):
    sink = sinks("127.0.2.32")
    settings = {
        "server": {"workers": 2, "local_domains": ["local.test"]},
        "queue": {"use_disk_for_relay": True, "check_interval_seconds": 1},
        "dns": {"bypass": [route("sink.test", sink)]},
    }
    engine = engine_factory(settings)
    pids = started_with_workers(engine)
    # Half the mail goes to a domain whose DNS never answers: held in memory, safe only
    # in the receipt journal of the worker that took it.
    acked: list[tuple[str, list[str]]] = []
    stop = threading.Event()
    rcpts_for = lambda n: ["v@sink.test"] if n % 2 else ["w@stuck.test"]  # noqa: E731
    threads = send_in_threads(engine, rcpts_for, 6, stop, acked)
    wait_for(
        lambda: len(acked) >= 150 and len(sink.received()) >= 20,
        timeout=60,
        what="150 acknowledged messages, some delivered",
    )
    os.kill(pids[1], signal.SIGKILL)
    engine.wait_log(f"worker 1 (pid {pids[1]}) ended (killed by signal 9); restarting it in 1 s")
    wait_for(lambda: worker_pids(engine)[1] != pids[1], timeout=30, what="worker 1 restarted")
    wait_for(lambda: len(acked) >= 250, timeout=60, what="more mail after the restart")
    stop.set()
    for t in threads:
        t.join(30)
    acked_ids = {m: r for m, r in acked}
    relay_ids = {m for m, r in acked if r == ["v@sink.test"]}
    wait_for(
        lambda: relay_ids <= {queue_id(m.data) for m in sink.received()},
        timeout=60,
        what="every acknowledged message to the sink delivered",
    )
    assert engine.stop() in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
    console = engine.console()
    assert re.search(r"worker 1: restored [1-9]\d* messages from the receipt journal", console)
    delivered = collections.Counter(queue_id(m.data) for m in sink.received())
    retry = {inf["messageid"] for inf in infs(engine, "retry")}
    lost = [m for m, r in acked if m not in delivered and m not in retry]
    assert not lost, f"{len(lost)} of {len(acked_ids)} acknowledged messages lost: {lost[:5]}"
    # A message on the killed worker's connection when it died may have reached the sink
    # without the worker hearing the 250: sent again. Nothing else is.
    twice = [m for m, n in delivered.items() if n > 1]
    print(f"delivered twice after the SIGKILL: {len(twice)}")
    assert len(twice) <= 10, twice  # at most one per open connection of the killed worker


def test_a_worker_restarted_while_a_destination_is_suspended_holds_its_mail_too(
    engine_factory, sinks
):
    sink = sinks("127.0.2.35")
    engine = start_engine(
        engine_factory, {"server": {"workers": 2}, "dns": {"bypass": [route("sink.test", sink)]}}
    )
    pids = started_with_workers(engine)
    status, reply = api(engine, "POST", "/api/destinations/sink.test/suspend")
    assert status == 200, reply
    os.kill(pids[1], signal.SIGKILL)
    wait_for(lambda: worker_pids(engine)[1] != pids[1], timeout=30, what="worker 1 restarted")
    restarted = worker_pids(engine)[1]
    ids: list[str] = []
    while not any(i.startswith(f"P{restarted}T") for i in ids):  # one per connection
        assert len(ids) < 60, f"the restarted worker took none of {len(ids)} messages"
        with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=10) as c:
            c.mail("a@b.test")
            c.rcpt(f"r{len(ids)}@sink.test")
            code, text = c.data(MESSAGE)
            assert code == 250
            ids.append(text.decode().rsplit(" ", 1)[-1])

    def listed():
        _, body = api(engine, "GET", "/api/destinations")
        return {d["domain"]: d for d in body["destinations"]}.get("sink.test")

    wait_for(
        lambda: (
            (d := listed()) and d["queued_recipients"] == len(ids) and d["state"] == "suspended"
        ),
        what=f"sink.test suspended with {len(ids)} recipients waiting in both workers",
    )
    assert sink.received() == []
    status, reply = api(engine, "POST", "/api/destinations/sink.test/resume")
    assert status == 200, reply
    wait_for(lambda: len(sink.received()) == len(ids), what="all sent after the resume")


def test_a_stop_under_load_writes_every_workers_memory_to_retry_and_loses_nothing(
    engine_factory, sinks
):
    sink = sinks("127.0.2.33")
    settings = {
        "server": {"workers": 2},
        "queue": {"use_disk_for_relay": False},  # acknowledged mail lives in memory only
        "dns": {"bypass": [route("sink.test", sink)]},
    }
    engine = engine_factory(settings)
    pids = started_with_workers(engine)
    acked: list[tuple[str, list[str]]] = []
    stop = threading.Event()
    rcpts_for = lambda n: ["v@sink.test"] if n % 2 else ["w@stuck.test"]  # noqa: E731
    threads = send_in_threads(engine, rcpts_for, 6, stop, acked)
    wait_for(lambda: len(acked) >= 150, timeout=60, what="150 acknowledged messages")
    code = engine.stop()  # SIGTERM while the clients still send
    stop.set()
    for t in threads:
        t.join(30)
    assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
    console = engine.console()
    for n in (1, 2):
        assert f"worker {n} (pid {pids[n]}) stopped" in console
    assert "restarting" not in console
    delivered = collections.Counter(queue_id(m.data) for m in sink.received())
    retry = {inf["messageid"] for inf in infs(engine, "retry")}
    lost = [m for m, _ in acked if m not in delivered and m not in retry]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged messages lost: {lost[:5]}"
    assert max(delivered.values(), default=1) == 1
    assert any(m in retry for m, r in acked if r == ["w@stuck.test"])
    assert not [
        n for n in os.listdir(os.path.join(engine.mailq, "working")) if n != "w1" and n != "w2"
    ]
    for n in (1, 2):
        assert os.listdir(os.path.join(engine.mailq, "working", f"w{n}")) == []


def test_shutdown_txt_stops_every_worker_and_the_supervisor(engine_factory):
    engine = engine_factory({"server": {"workers": 2}})
    pids = started_with_workers(engine)
    with open(os.path.join(engine.mailq, "retry", "shutdown.txt"), "w") as fh:
        fh.write("stop\n")
    assert engine.wait_exit(60) == 0
    console = engine.console()
    for n in (1, 2):
        assert f"worker {n} (pid {pids[n]}) stopped" in console
    assert "restarting" not in console


def test_a_setting_changed_in_the_web_admin_reaches_every_worker(engine_factory):
    engine = start_engine(engine_factory, {"server": {"workers": 2}})
    started_with_workers(engine)
    status, reply = api(engine, "PUT", "/api/settings/server/helo_text", {"value": "mx.box.test"})
    assert status == 200, reply

    def greetings() -> set[bytes]:
        """The name in the 220 greeting of a dozen connections (both workers answer some)."""
        seen = set()
        for _ in range(12):
            client = smtplib.SMTP(timeout=10)
            seen.add(client.connect("127.0.0.1", engine.smtp_port)[1].split()[0])
            client.close()
        return seen

    for n in (1, 2):
        engine.wait_log(f"worker {n}: [server] helo_text = 'mx.box.test' applied")
    assert greetings() == {b"mx.box.test"}


def test_suspend_and_resume_on_the_destinations_page_reach_every_worker(engine_factory, sinks):
    sink = sinks("127.0.2.34")
    engine = start_engine(
        engine_factory, {"server": {"workers": 2}, "dns": {"bypass": [route("sink.test", sink)]}}
    )
    started_with_workers(engine)
    status, reply = api(engine, "POST", "/api/destinations/sink.test/suspend")
    assert status == 200, reply
    for n in range(8):  # a connection each: both workers take some
        with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=10) as c:
            c.sendmail("a@b.test", [f"r{n}@sink.test"], MESSAGE)

    def listed():
        _, body = api(engine, "GET", "/api/destinations")
        return {d["domain"]: d for d in body["destinations"]}.get("sink.test")

    wait_for(
        lambda: (d := listed()) and d["queued_recipients"] == 8 and d["state"] == "suspended",
        what="sink.test suspended with 8 recipients waiting",
    )
    assert sink.received() == []
    status, reply = api(engine, "POST", "/api/destinations/sink.test/retry")
    assert status == 200 and reply["message"] == "sink.test: 8 waiting messages are due now."
    wait_for(lambda: len(sink.received()) == 8, what="all 8 sent after retry now")
