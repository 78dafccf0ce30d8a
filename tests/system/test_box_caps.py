"""Caps shared by the workers of one box, granted by the supervisor ([server] workers = 2,
no Redis; issue 13 item 2), through the real ``twistd mailengine`` and real sinks: each
cap test fails when every worker applies the caps on its own (together N times a cap); a
killed worker's connection leases go back at once, not when they expire."""

from __future__ import annotations

import collections
import math
import os
import re
import signal
import smtplib
import threading
import time

import pytest

from mailengine.cluster.book import LEASE_TTL_SECONDS
from tests.harness import wait_for
from tests.sinks import SinkServer, route
from tests.system.test_cluster import delivers_the_hour_and_no_more, metric
from tests.system.test_inbound import queue_id
from tests.system.test_workers import worker_pids

pytestmark = pytest.mark.system

TSS04 = (421, "4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred")
RECEIVER = re.compile(r"P(\d+)T")
MESSAGE_ID = re.compile(rb"Message-ID: <([^>]+)>")


def box(engine_factory, domain: str, sink: SinkServer, workers: int = 2, **sections):
    """Workers sharing caps through their supervisor, ``domain`` routed to ``sink``."""
    settings = {"server": {"workers": workers, "stop_timeout_seconds": 1}}
    settings["dns"] = {"bypass": [route(domain, sink)]}
    for section, values in sections.items():
        settings.setdefault(section, {}).update(values)
    engine = engine_factory(settings)
    engine.wait_log(f"started with {workers} workers")
    wait_for(
        lambda: metric(engine, "mailengine_cluster_nodes_seen") == workers,
        what="every worker sharing caps (the supervisor's /metrics)",
    )
    assert metric(engine, "mailengine_cluster_fallback") == 0
    return engine


def receiver(queue_id_text: str) -> int:
    """The pid of the worker that received a message (queue ids name it: P<pid>T...)."""
    found = RECEIVER.match(queue_id_text)
    assert found, queue_id_text
    return int(found.group(1))


def load(engine, rcpt, count: int, tag="m", per_connection=5, workers=2, text="hi\r\n"):
    """At least ``count`` messages, over new connections until ``workers`` workers took
    some (whichever worker is free accepts a connection). Returns messages per worker pid."""
    taken: collections.Counter[int] = collections.Counter()
    sent = 0
    deadline = time.monotonic() + 30
    while sent < count or len(taken) < workers:
        assert time.monotonic() < deadline, f"one worker took every connection: {taken}"
        with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as client:
            for _ in range(per_connection):
                head = f"Subject: {tag} {sent}\r\nMessage-ID: <{tag}.{sent}@src.test>\r\n"
                body = head + "\r\n" + text
                client.mail("sender@src.test")
                client.rcpt(rcpt)
                code, reply = client.data(body.encode())
                assert code == 250, (code, reply)
                taken[receiver(reply.decode().rsplit(" ", 1)[1])] += 1
                sent += 1
    return taken


def delivered_by(sink: SinkServer) -> collections.Counter[int]:
    return collections.Counter(receiver(queue_id(m.data)) for m in sink.received())


SITE_RULE = {"name": "site", "domains": ["capped.test"], "max_connections": 2}


@pytest.mark.parametrize(
    ("host", "sections", "cap"),
    [
        ("127.0.14.1", {"smtp_out": {"max_connections_per_host": 3}}, 3),
        ("127.0.14.6", {"smtp_out": {"max_connections": 2}}, 2),  # the total
        ("127.0.14.7", {"shaping": {"rule": [SITE_RULE]}}, 2),  # a shaping rule's
    ],
    ids=["per_host", "total", "rule"],
)
def test_two_workers_never_open_more_connections_than_a_cap_together(
    engine_factory, sinks, host, sections, cap
):
    sink = sinks(host)
    sink.delay_seconds = 0.02  # each connection stays busy: both workers want more of them
    engine = box(engine_factory, "capped.test", sink, **sections)
    taken = load(engine, "x@capped.test", 50)
    total = sum(taken.values())
    wait_for(lambda: len(sink.received()) == total, timeout=60, what=f"{total} messages")
    assert delivered_by(sink) == taken  # both workers sent their own mail
    assert sink.max_concurrent <= cap, sink.max_concurrent  # on their own: up to cap each


def test_more_workers_than_a_cap_take_turns_while_mail_waits(engine_factory, sinks):
    """Three workers, a per-host cap of 2: each worker's fair part is 1, so two workers
    can hold the cap while the third waits, none of them over its part. With mail
    waiting in all three, the holders give turns (one connection every 2 s): the third
    worker's first message goes out early, not once a holder has run out of mail
    (then at about two thirds of the way)."""
    sink = sinks("127.0.14.11")
    sink.delay_seconds = 0.01  # about 40 ms a message: 2 connections take ~50 a second
    engine = box(
        engine_factory, "turns.test", sink, workers=3, smtp_out={"max_connections_per_host": 2}
    )
    taken: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    def inject(thread: int) -> None:  # far faster than 2 connections deliver
        for n in range(20):
            with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as client:
                for m in range(5):
                    body = f"Subject: t\r\nMessage-ID: <t.{thread}.{n}.{m}@src.test>\r\n\r\nhi\r\n"
                    client.mail("sender@src.test")
                    client.rcpt("x@turns.test")
                    code, reply = client.data(body.encode())
                    assert code == 250, (code, reply)
                    with lock:
                        taken[receiver(reply.decode().rsplit(" ", 1)[1])] += 1

    threads = [threading.Thread(target=inject, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = sum(taken.values())
    wait_for(lambda: len(sink.received()) == total, timeout=90, what=f"{total} messages")
    assert len(taken) == 3 and delivered_by(sink) == taken, taken
    assert sink.max_concurrent <= 2
    order = [receiver(queue_id(m.data)) for m in sink.received()]
    firsts = {pid: order.index(pid) for pid in taken}
    assert max(firsts.values()) < total * 0.4, (firsts, total, taken)


def connections_to(pid: int, sink: SinkServer) -> int:
    return len(ports_to(pid, sink))


def ports_to(pid: int, sink: SinkServer) -> set[int]:
    """The local ports of the TCP connections process ``pid`` has open to ``sink`` (its
    sockets' inodes in /proc/net/tcp, where the remote end is the sink's port)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    with open("/proc/net/tcp") as fh:
        rows = [line.split() for line in fh.readlines()[1:]]
    established = "01"
    return {
        int(row[1].split(":")[1], 16)
        for row in rows
        if int(row[2].split(":")[1], 16) == sink.port and row[3] == established and row[9] in inodes
    }


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most (start, end) spans open at one moment."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = now = 0
    for _, step in edges:  # at a tie the end (-1) comes first
        now += step
        most = max(most, now)
    return most


def message_ids(sink: SinkServer) -> set[str]:
    found = (MESSAGE_ID.search(m.data) for m in sink.received())
    return {f.group(1).decode() for f in found if f}


def test_a_killed_workers_connection_leases_are_given_back_at_once(engine_factory, sinks):
    sink = sinks("127.0.14.8")
    sink.delay_seconds = 0.05  # sessions last: the leases are held while the worker dies
    engine = box(
        engine_factory,
        "leased.test",
        sink,
        smtp_out={"max_connections_per_host": 2},
        queue={"use_disk_for_relay": True, "check_interval_seconds": 1},
    )
    taken = load(engine, "x@leased.test", 60)
    pid = max(taken, key=lambda p: taken[p])  # the worker with the most mail to send
    n = {p: i for i, p in worker_pids(engine).items()}[pid]
    wait_for(lambda: connections_to(pid, sink), what=f"worker {n} connected to the sink")
    os.kill(pid, signal.SIGSTOP)  # it opens no other connection while it is read
    killed_ports = ports_to(pid, sink)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    engine.wait_log(f"worker {n} (pid {pid}) ended (killed by signal 9)")
    assert re.search(rf"worker {n}'s [12] connection leases given back", engine.console())

    # Without the give-back its leases would block the cap until they expire (10 s after
    # their last renewal): the other worker, or worker 1 restarted, uses the whole cap.
    def living_workers_connections() -> int:
        living = [p for p in worker_pids(engine).values() if p != pid]
        return sum(connections_to(p, sink) for p in living)

    wait_for(lambda: living_workers_connections() == 2, timeout=6, what="2 connections again")
    assert time.monotonic() < killed_at + LEASE_TTL_SECONDS - 1
    total = sum(taken.values())
    wanted = {f"m.{n}@src.test" for n in range(total)}
    wait_for(lambda: message_ids(sink) >= wanted, timeout=60, what="every acknowledged message")
    # A session ends when the client ends it: at its QUIT, or with the killed worker (the
    # sink, a slow reader, may see the end later, when the cap is used again).
    with sink.lock:
        ends = [
            (s.started, s.quit_at or s.ended or math.inf, s.port in killed_ports)
            for s in sink.sessions
        ]
    spans = [(start, min(end, killed_at) if killed else end) for start, end, killed in ends]
    assert most_at_once(spans) <= 2, spans


def test_an_hourly_cap_delivers_its_number_across_both_workers(engine_factory, sinks):
    sink = sinks("127.0.14.2")
    engine = box(engine_factory, "hourly.test", sink, smtp_out={"max_messages_per_hour": 40})
    load(engine, "x@hourly.test", 70)
    delivers_the_hour_and_no_more(sink, 40, quiet_seconds=2.0)
    assert len(delivered_by(sink)) == 2  # both workers took their part of the hour


def test_a_suspension_by_reaction_in_one_worker_stops_the_other(engine_factory, sinks):
    sink = sinks("127.0.14.3")
    sink.mail_reply = lambda sender: TSS04
    reaction = {"pattern": "TSS04", "action": "suspend", "minutes": 1}
    engine = box(engine_factory, "yahoo.test", sink, shaping={"reaction": [reaction]})
    first = load(engine, "y@yahoo.test", 1, "first", per_connection=1, workers=1)
    engine.wait_log("yahoo.test: suspended for 1 minutes")
    suspended_by = re.search(r"worker (\d): yahoo.test: suspended for 1", engine.console())
    other = 3 - int(suspended_by.group(1))
    engine.wait_log(f"worker {other}: yahoo.test: suspended by node")
    sink.mail_reply = lambda sender: None  # it would take mail now: no worker may try
    sessions = len(sink.sessions)
    later = load(engine, "y@yahoo.test", 4, "later", per_connection=1)
    assert len(first + later) == 2  # the worker that was not told by the sink holds mail
    quiet_until = time.monotonic() + 2.5
    wait_for(lambda: time.monotonic() > quiet_until, timeout=10, interval=0.2, what="2.5 s")
    assert len(sink.sessions) == sessions
    assert not sink.received()


def test_a_rules_message_rate_holds_across_both_workers(engine_factory, sinks):
    sink = sinks("127.0.14.4")
    rule = {"name": "paced", "domains": ["paced.test"], "max_messages_per_minute": 1200}
    engine = box(engine_factory, "paced.test", sink, shaping={"rule": [rule]})
    taken = load(engine, "x@paced.test", 100)  # 20 a second together: 4 s; on their own, 2.5
    total = sum(taken.values())
    wait_for(lambda: len(sink.received()) == total, timeout=60, what="every message")
    assert delivered_by(sink) == taken
    times = sorted(m.time for m in sink.received())
    in_two_seconds = sum(1 for t in times if t < times[0] + 2.0)
    # 40 in two seconds at the rate, plus each worker's first batch (10) and slack; each
    # worker on its own would send 80 and more.
    assert in_two_seconds <= 70, in_two_seconds
    assert times[-1] - times[0] >= (total - 30) / 20.0


def test_the_bandwidth_cap_is_split_between_the_workers(engine_factory, sinks):
    sink = sinks("127.0.14.5")
    # 1,000 bytes a second for the box, 500 for each worker: the first message of 2.2 KB
    # puts a worker 1.7 KB into debt, so its second goes 3.4 s later (at the whole cap
    # each worker would send its second 1.2 s later).
    engine = box(
        engine_factory,
        "narrow.test",
        sink,
        smtp_out={"max_bandwidth_bytes_per_minute": 60000},
    )
    load(engine, "x@narrow.test", 10, per_connection=1, text=("x" * 78 + "\r\n") * 25)
    wait_for(lambda: sink.received(), what="the first message")
    first = min(m.time for m in sink.received())
    wait_for(lambda: time.monotonic() > first + 3.0, timeout=10, interval=0.1, what="3 s")
    early = [m for m in sink.received() if m.time < first + 3.0]
    assert len(early) <= 2, len(early)  # one from each worker; at the whole cap, 4
