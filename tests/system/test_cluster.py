"""Two real engines sharing caps through a real redis-server ([cluster] redis_url):
connection caps per host, the hourly cap, suspensions by reaction, and Redis dying."""

from __future__ import annotations

import smtplib
import time
import urllib.request

import pytest

from tests.harness import wait_for
from tests.sinks import SinkServer, route

pytestmark = pytest.mark.system

TSS04 = (421, "4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred")


def node_settings(redis, name: str, **sections):
    out = {
        "server": {"stop_timeout_seconds": 1},
        "cluster": {"redis_url": redis.url, "node_name": name},
    }
    for section, values in sections.items():
        out.setdefault(section, {}).update(values)
    return out


def two_nodes(engine_factory, redis, domain: str, sink: SinkServer, **sections):
    """Node A and node B sharing caps through ``redis``, ``domain`` routed to ``sink``."""
    sections.setdefault("dns", {})["bypass"] = [route(domain, sink)]
    nodes = [engine_factory(node_settings(redis, n, **sections)) for n in ("node-a", "node-b")]
    wait_for(lambda: both_shared(nodes), what="both nodes sharing caps")
    return nodes


def load(nodes, rcpt: str, n: int, tags=("a", "b")) -> None:
    """``n`` messages into each node, tagged by node ("a 0", "a 1", ..., "b 0", ...)."""
    for node, tag in zip(nodes, tags, strict=True):
        send(node, rcpt, n, tag)


def send(engine, rcpt: str, n: int, tag: str) -> None:
    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=60) as client:
        for i in range(n):
            body = f"Subject: {tag} {i}\r\nMessage-ID: <{tag}.{i}@src.test>\r\n\r\nhi\r\n"
            client.sendmail("sender@src.test", [rcpt], body.encode())


def subjects(sink: SinkServer) -> set[str]:
    found = set()
    for m in sink.received():
        for line in m.data.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                found.add(line[9:].decode())
    return found


def metric(engine, name: str) -> float | None:
    url = f"http://127.0.0.1:{engine.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def delivers_the_hour_and_no_more(sink: SinkServer, cap: int, quiet_seconds: float = 3.0):
    """``cap`` ±1 messages reach ``sink`` and, for ``quiet_seconds``, no more (the hourly
    cap's window is an hour)."""
    wait_for(lambda: len(sink.received()) >= cap - 1, timeout=30, what=f"the hour's {cap}")
    settled = time.monotonic() + quiet_seconds
    wait_for(lambda: time.monotonic() > settled, timeout=10, interval=0.2, what="quiet")
    delivered = len(sink.received())
    assert cap - 1 <= delivered <= cap + 1, delivered


def both_shared(nodes) -> bool:
    return all(metric(n, "mailengine_cluster_fallback") == 0 for n in nodes) and all(
        metric(n, "mailengine_cluster_nodes_seen") == len(nodes) for n in nodes
    )


def test_two_nodes_never_open_more_than_max_connections_per_host_to_one_host_together(
    engine_factory, sinks, redis_server
):
    sink = sinks("127.0.13.1")
    sink.delay_seconds = 0.02  # each connection stays busy: both nodes want more of them
    nodes = two_nodes(
        engine_factory, redis_server, "capped.test", sink, smtp_out={"max_connections_per_host": 3}
    )
    load(nodes, "x@capped.test", 40)
    wait_for(lambda: len(sink.received()) == 80, timeout=60, what="80 messages")
    assert sink.max_concurrent == 3  # one node alone would open 3 of its own
    assert {s.split()[0] for s in subjects(sink)} == {"a", "b"}


def test_an_hourly_cap_of_100_delivers_100_across_two_nodes(engine_factory, sinks, redis_server):
    sink = sinks("127.0.13.2")
    nodes = two_nodes(
        engine_factory, redis_server, "hourly.test", sink, smtp_out={"max_messages_per_hour": 100}
    )
    load(nodes, "x@hourly.test", 70)
    delivers_the_hour_and_no_more(sink, 100)
    tags = [s.split()[0] for s in subjects(sink)]
    assert tags.count("a") and tags.count("b")  # both nodes took their part


def test_a_rules_message_rate_holds_across_two_nodes(engine_factory, sinks, redis_server):
    sink = sinks("127.0.13.5")
    rule = {"name": "paced", "domains": ["paced.test"], "max_messages_per_minute": 1200}
    nodes = two_nodes(engine_factory, redis_server, "paced.test", sink, shaping={"rule": [rule]})
    load(nodes, "x@paced.test", 80)  # 20 a second for both: 8 s; on their own, 4 s
    wait_for(lambda: len(sink.received()) == 160, timeout=60, what="every message")
    times = sorted(m.time for m in sink.received())
    in_four_seconds = sum(1 for t in times if t < times[0] + 4.0)
    assert in_four_seconds <= 110, in_four_seconds  # 80 + each node's first batch and slack
    assert times[-1] - times[0] >= 5.5  # nodes on their own would take 4 s at most


def test_a_suspension_by_reaction_on_one_node_stops_the_other_nodes_connections(
    engine_factory, sinks, redis_server
):
    sink = sinks("127.0.13.3")
    sink.mail_reply = lambda sender: TSS04
    reaction = {"pattern": "TSS04", "action": "suspend", "minutes": 1}
    node_a, node_b = two_nodes(
        engine_factory, redis_server, "yahoo.test", sink, shaping={"reaction": [reaction]}
    )
    send(node_a, "y@yahoo.test", 1, "first")
    node_a.wait_log("yahoo.test: suspended for 1 minutes")
    node_b.wait_log("yahoo.test: suspended by node node-a")
    sink.mail_reply = lambda sender: None  # it would take mail now: node B must not try
    sessions = len(sink.sessions)
    send(node_b, "y@yahoo.test", 3, "later")
    quiet_until = time.monotonic() + 3.0
    wait_for(lambda: time.monotonic() > quiet_until, timeout=10, interval=0.2, what="3 s")
    assert len(sink.sessions) == sessions
    assert not sink.received()


def test_redis_killed_mid_load_loses_no_mail_falls_back_visibly_and_shares_again(
    engine_factory, sinks, redis_server
):
    sink = sinks("127.0.13.4")
    sink.delay_seconds = 0.01
    nodes = two_nodes(
        engine_factory, redis_server, "load.test", sink, smtp_out={"max_connections_per_host": 3}
    )
    load(nodes, "x@load.test", 100)
    wait_for(lambda: len(sink.received()) >= 20, timeout=30, what="the load under way")
    redis_server.kill()
    for node in nodes:
        node.wait_log("cluster: Redis at redis://127.0.0.1")
        assert "falling back to this node's share of each cap (1/2 of it" in node.console()
        wait_for(lambda n=node: metric(n, "mailengine_cluster_fallback") == 1, what="the gauge")
    wait_for(lambda: len(sink.received()) == 200, timeout=60, what="every message")
    expected = {f"{tag} {i}" for tag in ("a", "b") for i in range(100)}
    assert subjects(sink) == expected  # none lost, none twice
    assert len(sink.received()) == 200

    redis_server.start()  # empty: the nodes' heartbeats put their leases back
    wait_for(lambda: both_shared(nodes), timeout=15, what="both nodes sharing again")
    for node in nodes:
        after = node.console().rpartition("falling back")[2]
        assert "cluster: caps are shared through Redis at" in after
    names = redis_server.command("ZRANGE", "{mailengine}:nodes", "0", "-1").split()
    assert sorted(names) == ["node-a", "node-b"]
    sink.reset()
    load(nodes, "x@load.test", 40, tags=("c", "d"))
    wait_for(lambda: len(sink.received()) == 80, timeout=60, what="the load after the restart")
    assert sink.max_concurrent == 3  # shared again (falling back, it would be 1 each: 3 // 2)


def test_each_worker_process_is_a_node_and_the_per_host_cap_holds_across_them(
    engine_factory, sinks, redis_server
):
    sink = sinks("127.0.13.6")
    sink.delay_seconds = 0.02
    settings = node_settings(
        redis_server,
        "box",
        dns={"bypass": [route("workers.test", sink)]},
        smtp_out={"max_connections_per_host": 3},
        server={"workers": 2},
    )
    box = engine_factory(settings)

    def nodes_seen():
        return sorted(redis_server.command("ZRANGE", "{mailengine}:nodes", "0", "-1").split())

    wait_for(lambda: nodes_seen() == ["box-w1", "box-w2"], timeout=20, what="both workers")
    wait_for(  # the supervisor's /metrics and dashboard: the cluster its workers see
        lambda: metric(box, "mailengine_cluster_nodes_seen") == 2,
        what="the cluster on the supervisor's /metrics",
    )
    assert metric(box, "mailengine_cluster_fallback") == 0
    for i in range(4):  # four sessions: the workers share the listening port
        send(box, "x@workers.test", 30, f"s{i}")
    wait_for(lambda: len(sink.received()) == 120, timeout=60, what="every message")
    assert sink.max_concurrent <= 3  # two workers on their own could open 3 each
