"""Traffic shaping through the real engine: no head-of-line blocking, rates, reactions,
connection caps per rule and MX site, messages per connection, egress pools."""

from __future__ import annotations

import math
import smtplib
import socket
import time

import pytest

from tests.harness import wait_for
from tests.sinks import SinkServer, route

pytestmark = pytest.mark.system

QUICK_STOP = {"server": {"stop_timeout_seconds": 1}}


def settings(**sections):
    out = {section: dict(values) for section, values in QUICK_STOP.items()}
    for section, values in sections.items():
        out.setdefault(section, {}).update(values)
    return out


def send(engine, rcpt: str, n: int, tag: str = "m") -> None:
    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=60) as client:
        for i in range(n):
            body = f"Subject: {tag} {i}\r\nMessage-ID: <{tag}.{i}@src.test>\r\n\r\nhi\r\n"
            client.sendmail("sender@src.test", [rcpt], body.encode())


def delivered_in(engine, sink: SinkServer, rcpt: str, n: int, tag: str) -> float:
    """Seconds from the first SMTP command of ``n`` messages to the last one received."""
    start = time.monotonic()
    before = len(sink.received())
    send(engine, rcpt, n, tag)
    wait_for(lambda: len(sink.received()) >= before + n, timeout=120, what=f"{n} for {rcpt}")
    return max(m.time for m in sink.received()) - start


def test_a_slow_destination_does_not_slow_a_healthy_one(engine_factory, sinks):
    # Issue 10 asks for 600 slow then 200 healthy; 300 and 100 keep the shape on a shared
    # test machine: with max_connections = 20 the send loop's window is 256 messages, so
    # the slow destination's mail alone would fill it.
    slow, healthy = sinks("127.0.3.1"), sinks("127.0.3.2")
    slow.delay_seconds = 2.0
    engine = engine_factory(
        settings(
            dns={"bypass": [route("slow.test", slow), route("fast.test", healthy)]},
            smtp_out={"max_connections": 20},
        )
    )
    alone = delivered_in(engine, healthy, "a@fast.test", 100, "alone")
    send(engine, "x@slow.test", 300, "slow")
    wait_for(lambda: slow.concurrent >= 5, what="the slow destination's connections")
    behind_slow = delivered_in(engine, healthy, "a@fast.test", 100, "behind")
    assert len(slow.received()) < 100  # the slow one is still far from done
    assert behind_slow <= alone * 1.2 + 1.0, (alone, behind_slow)


def test_max_messages_per_minute_holds_while_another_domain_runs_free(engine_factory, sinks):
    paced, free = sinks("127.0.3.3"), sinks("127.0.3.4")
    rule = {"name": "paced", "domains": ["paced.test"], "max_messages_per_minute": 600}
    engine = engine_factory(
        settings(
            dns={"bypass": [route("paced.test", paced), route("free.test", free)]},
            shaping={"rule": [rule]},
        )
    )
    send(engine, "p@paced.test", 150, "paced")
    send(engine, "f@free.test", 100, "free")
    wait_for(lambda: len(free.received()) == 100, timeout=30, what="the free domain")
    assert len(paced.received()) < 100  # 10 a second: the free one did not wait for it
    wait_for(lambda: len(paced.received()) == 150, timeout=60, what="the paced domain")
    times = sorted(m.time for m in paced.received())
    first = times[0]
    in_ten_seconds = sum(1 for t in times if t < first + 10.0)
    assert 90 <= in_ten_seconds <= 112, in_ten_seconds  # 100 +- 10 %, plus the start slack


@pytest.mark.slow
def test_sixty_messages_a_minute_hold_within_ten_percent_over_two_minutes(engine_factory, sinks):
    paced = sinks("127.0.3.5")
    rule = {"name": "sixty", "domains": ["sixty.test"], "max_messages_per_minute": 60}
    engine = engine_factory(
        settings(dns={"bypass": [route("sixty.test", paced)]}, shaping={"rule": [rule]})
    )
    send(engine, "p@sixty.test", 140, "sixty")
    wait_for(lambda: paced.received(), what="the first message")
    first = paced.received()[0].time
    wait_for(lambda: time.monotonic() > first + 121, timeout=150, interval=1, what="two minutes")
    in_two_minutes = sum(1 for m in paced.received() if m.time < first + 120.0)
    assert 108 <= in_two_minutes <= 132, in_two_minutes


def test_a_tss04_deferral_suspends_only_its_destination_then_it_resumes_by_itself(
    engine_factory, sinks
):
    yahoo, other = sinks("127.0.3.6"), sinks("127.0.3.7")
    deferred_at: list[float] = []

    def tss04_once(sender):
        if not deferred_at:
            deferred_at.append(time.monotonic())
            return (421, "4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred")
        return None

    yahoo.mail_reply = tss04_once
    engine = engine_factory(
        settings(
            dns={"bypass": [route("yahoo.test", yahoo), route("other.test", other)]},
            shaping={"reaction": [{"pattern": "TSS04", "action": "suspend", "minutes": 0.2}]},
            queue={"retry_intervals_minutes": [0.02, 0.02, 0.02], "check_interval_seconds": 1},
        )
    )
    send(engine, "y@yahoo.test", 1, "first")
    wait_for(lambda: deferred_at, what="the TSS04 deferral")
    sessions_then = len(yahoo.sessions)
    send(engine, "y@yahoo.test", 3, "later")
    send(engine, "o@other.test", 5, "other")
    wait_for(lambda: len(other.received()) == 5, what="the other destination")
    assert time.monotonic() < deferred_at[0] + 11  # delivered while yahoo.test is suspended
    wait_for(lambda: len(yahoo.received()) == 4, timeout=60, what="the suspended mail")
    resumed = min(yahoo.session_starts()[sessions_then:])
    assert 11.0 <= resumed - deferred_at[0] <= 15.0, resumed - deferred_at[0]  # 12 s


def test_a_throttle_reaction_halves_the_rate_then_ramps_back(engine_factory, sinks):
    sink = sinks("127.0.3.8")
    deferred_at: list[float] = []

    def slow_down_once(rcpt):
        if len(sink.received()) >= 10 and not deferred_at:
            deferred_at.append(time.monotonic())
            return (451, "4.7.1 slow down please")
        return None

    sink.rcpt_reply = slow_down_once
    rule = {"name": "t", "domains": ["throttle.test"], "max_messages_per_minute": 480}
    engine = engine_factory(
        settings(
            dns={"bypass": [route("throttle.test", sink)]},
            shaping={
                "rule": [rule],
                "reaction": [{"pattern": "slow down", "action": "throttle", "minutes": 0.025}],
            },
            queue={"retry_intervals_minutes": [0.02]},
        )
    )
    send(engine, "t@throttle.test", 120, "t")
    wait_for(lambda: len(sink.received()) == 120, timeout=90, what="every message")
    t0 = deferred_at[0]
    times = sorted(m.time for m in sink.received())

    def count(start: float, end: float) -> int:
        return sum(1 for t in times if t0 + start <= t < t0 + end)

    # 8/s before; 4/s just after (halved); +10 % every 1.5 s: back to 8/s after ~11 s.
    assert count(0.5, 3.0) <= 14, times
    assert count(12.0, 15.0) >= 18, times


def test_max_messages_per_connection_makes_new_sessions(engine_factory, sinks):
    sink = sinks("127.0.3.9")
    rule = {
        "name": "short",
        "domains": ["short.test"],
        "max_connections": 1,
        "max_messages_per_connection": 5,
    }
    engine = engine_factory(
        settings(dns={"bypass": [route("short.test", sink)]}, shaping={"rule": [rule]})
    )
    n = 23
    send(engine, "s@short.test", n, "short")
    wait_for(lambda: len(sink.received()) == n, timeout=60, what="every message")
    per_session: dict[int, int] = {}
    for m in sink.received():
        per_session[m.session] = per_session.get(m.session, 0) + 1
    assert len(sink.sessions) >= math.ceil(n / 5)
    assert max(per_session.values()) <= 5
    assert sink.max_concurrent == 1


def test_an_mx_suffix_rule_caps_connections_across_domains_sharing_one_mx(engine_factory, sinks):
    sink = sinks("127.0.3.10")
    sink.delay_seconds = 0.05
    domains = [f"d{i}.hosted.test" for i in range(5)]
    rule = {"name": "provider", "mx_suffixes": [".provider.test"], "max_connections": 2}
    engine = engine_factory(
        settings(
            dns={"bypass": [route(d, sink, "mx.provider.test") for d in domains]},
            shaping={"rule": [rule]},
        )
    )
    for d in domains:
        send(engine, f"u@{d}", 10, d)
    wait_for(lambda: len(sink.received()) == 50, timeout=90, what="every message")
    assert sink.max_concurrent <= 2
    assert len({m.rcpts[0] for m in sink.received()}) == 5


def test_an_egress_pool_uses_each_source_address_in_turn(engine_factory, sinks):
    sink = sinks("127.0.3.11")
    rule = {
        "name": "bulk",
        "domains": ["pooled.test"],
        "pool": "duo",
        "max_messages_per_connection": 1,
    }
    engine = engine_factory(
        settings(
            dns={"bypass": [route("pooled.test", sink)]},
            shaping={"rule": [rule]},
            egress={"pool": [{"name": "duo", "source_ips": ["127.0.0.2", "127.0.0.3"]}]},
        )
    )
    send(engine, "p@pooled.test", 6, "pooled")
    wait_for(lambda: len(sink.received()) == 6, timeout=30, what="every message")
    assert sink.peers() == {"127.0.0.2", "127.0.0.3"}


def test_each_egress_source_says_its_own_helo_name(engine_factory, sinks):
    sink = sinks("127.0.3.24")
    rule = {"name": "bulk", "domains": ["named.test"], "pool": "duo"}
    pool = {
        "name": "duo",
        "source_ips": ["127.0.0.2", "127.0.0.3"],
        "helo_names": ["out2.me.test", "out3.me.test"],
    }
    rule["max_messages_per_connection"] = 1
    engine = engine_factory(
        settings(
            dns={"bypass": [route("named.test", sink)]},
            shaping={"rule": [rule]},
            egress={"pool": [pool]},
            server={"helo_text": "engine.me.test"},
        )
    )
    send(engine, "n@named.test", 4, "named")
    wait_for(lambda: len(sink.received()) == 4, timeout=30, what="every message")
    greetings = {
        (s.peer, c) for s in sink.sessions for c in s.commands if c[:4] in ("EHLO", "HELO")
    }
    assert greetings == {("127.0.0.2", "EHLO out2.me.test"), ("127.0.0.3", "EHLO out3.me.test")}


def test_rules_edited_through_the_api_apply_at_once_and_are_written_back(engine_factory, sinks):
    from tests.system.test_settings import api, start_engine

    sink = sinks("127.0.3.12")
    engine = start_engine(engine_factory, settings(dns={"bypass": [route("api.test", sink)]}))
    rule = {"name": "bulk", "domains": ["api.test"], "pool": "duo"}
    status, reply = api(engine, "PUT", "/api/settings/shaping/rule", {"value": [rule]})
    assert status == 400 and "no [[egress.pool]] has that name" in reply["error"]
    pool = {"name": "duo", "source_ips": ["127.0.0.2", "127.0.0.3"]}
    status, reply = api(engine, "PUT", "/api/settings/egress/pool", {"value": [pool]})
    assert status == 200 and reply["applies"] == "now", reply
    rule["max_messages_per_connection"] = 1
    status, reply = api(engine, "PUT", "/api/settings/shaping/rule", {"value": [rule]})
    assert status == 200, reply
    send(engine, "p@api.test", 6, "api")
    wait_for(lambda: len(sink.received()) == 6, timeout=30, what="every message")
    assert sink.peers() == {"127.0.0.2", "127.0.0.3"}
    with open(engine.config_path, encoding="utf-8") as fh:
        text = fh.read()
    assert "[[shaping.rule]]" in text and "[[egress.pool]]" in text
    status, reply = api(engine, "GET", "/api/settings/shaping/rule")
    assert status == 200 and reply["value"][0]["name"] == "bulk", reply


def test_destinations_view_suspends_resumes_and_shows_state_and_metrics(engine_factory, sinks):
    from tests.system.test_web_delivery import TOKEN, call, metrics

    sink = sinks("127.0.3.13")
    engine = engine_factory(
        settings(dns={"bypass": [route("held.test", sink)]}, web={"api_token": TOKEN})
    )
    status, reply = call(engine, "/api/destinations/held.test/suspend", "POST")
    assert status == 200 and "suspended" in reply["message"], reply
    send(engine, "h@held.test", 3, "held")

    def held():
        listed = call(engine, "/api/destinations")[1]["destinations"]
        return [d for d in listed if d["domain"] == "held.test" and d["queued_recipients"] == 3]

    [shown] = wait_for(held, what="held.test listed with its 3 messages")
    assert shown["state"] == "suspended" and shown["state_text"].startswith("suspended until")
    assert shown["reason"] == "operator"
    assert metrics(engine)[("mailengine_destinations", (("state", "suspended"),))] == 1
    assert not sink.received()
    status, reply = call(engine, "/api/destinations/held.test/resume", "POST")
    assert status == 200, reply
    wait_for(lambda: len(sink.received()) == 3, what="the resumed mail")
    assert call(engine, "/api/destinations/held.test/explode", "POST")[0] == 404


def test_a_message_for_a_suspended_and_a_healthy_domain_goes_to_the_healthy_one_now(
    engine_factory, sinks
):
    from tests.system.test_web_delivery import TOKEN, call

    held, fine = sinks("127.0.3.14"), sinks("127.0.3.15")
    engine = engine_factory(
        settings(
            dns={"bypass": [route("held.test", held), route("fine.test", fine)]},
            web={"api_token": TOKEN},
        )
    )
    assert call(engine, "/api/destinations/held.test/suspend", "POST")[0] == 200
    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as client:
        client.sendmail(
            "s@src.test", ["a@held.test", "b@fine.test"], b"Subject: both\r\n\r\nhi\r\n"
        )
    wait_for(lambda: fine.received(), what="the healthy half")
    assert not held.received()
    assert call(engine, "/api/destinations/held.test/retry", "POST")[0] == 200
    wait_for(lambda: held.received(), what="the held half after retry now")
    assert [m.rcpts for m in held.received() + fine.received()] == [
        ["a@held.test"],
        ["b@fine.test"],
    ]


DNS_ZONE = """\
test          300 SOA 60
broken.test   SERVFAIL
"""


def test_destinations_show_a_lookup_in_progress_and_a_failing_one_until_its_answer_expires(
    engine_factory, tmp_path
):
    from tests.dnsserver import DNSServerProcess
    from tests.system.test_web_delivery import TOKEN, call, metrics

    zone = tmp_path / "zone.txt"
    zone.write_text(DNS_ZONE)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never answers
    silent.bind(("127.0.0.1", 0))
    slow_ns = f"slow.test,ns.slow.test,NS,127.0.0.1:{silent.getsockname()[1]}"
    with silent, DNSServerProcess(str(zone)) as dns:
        engine = engine_factory(
            settings(dns={"servers": [dns.spec], "bypass": [slow_ns]}, web={"api_token": TOKEN})
        )
        send(engine, "b@broken.test", 1, "broken")
        send(engine, "s@slow.test", 1, "slow")

        def shown(domain, state):
            listed = call(engine, "/api/destinations")[1]["destinations"]
            return [d for d in listed if d["domain"] == domain and d["state"] == state]

        [broken] = wait_for(lambda: shown("broken.test", "dns_failing"), what="DNS failing")
        assert broken["reason"].startswith("DNS lookup failed") and "SERVFAIL" in broken["reason"]
        assert broken["until"] > time.time() - 5  # the failed answer is kept until then
        assert broken["state_text"].startswith("DNS failing (next lookup after")
        [slow] = wait_for(lambda: shown("slow.test", "dns_lookup"), what="the lookup out")
        assert slow["state_text"] == "waiting for DNS"
        assert slow["reason"] == "MX lookup in progress"
        assert metrics(engine)[("mailengine_destinations", (("state", "dns_failing"),))] >= 1


def test_a_failing_dns_holds_only_its_own_mail_until_the_failure_expires(
    engine_factory, sinks, tmp_path
):
    from tests.dnsserver import DNSServerProcess
    from tests.system.test_web_delivery import TOKEN, call

    zone = tmp_path / "zone.txt"
    zone.write_text(DNS_ZONE)
    fine = sinks("127.0.3.16")
    with DNSServerProcess(str(zone)) as dns:
        engine = engine_factory(
            settings(
                dns={"servers": [dns.spec], "bypass": [route("fine.test", fine)]},
                web={"api_token": TOKEN},
            )
        )
        send(engine, "b@broken.test", 30, "broken")
        took = delivered_in(engine, fine, "f@fine.test", 20, "fine")
        assert took < 10, took  # the healthy destination is not behind the broken one

        def broken():
            listed = call(engine, "/api/destinations")[1]["destinations"]
            return [d for d in listed if d["domain"] == "broken.test"]

        [held] = wait_for(broken, what="broken.test listed")
        assert held["state"] == "dns_failing" and held["queued_recipients"] == 30
        assert held["until"] > time.time() + 15  # the SERVFAIL is cached for 30 s
        # Only the first few went to look it up and were deferred; the rest wait in
        # memory for the failure to expire instead of being taken and deferred each.
        assert call(engine, "/api/status")[1]["totals"]["deferred"] <= 2
        asked = [q for q in dns.queries() if q[0].rstrip(".") == "broken.test"]
        assert 1 <= len(asked) <= 2
