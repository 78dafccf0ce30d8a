"""Outbound delivery through the real engine: sinks on 127.0.1.x routed with bypass lines."""

import email
import os
import re
import smtplib

import pytest

from mailengine.policy.verp import decode_bounce_address
from mailengine.queue.inf import parse_inf
from tests.dnsserver import DNSServerProcess
from tests.harness import events_of, free_port, read_text, undeliverable_addresses, wait_for
from tests.sinks import SinkServer, route

pytestmark = pytest.mark.system
STOPPED = (0, -15, 143)  # SIGTERM: twistd re-raises the signal after a clean stop


def send(engine, rcpts, n=1, sender="sender@src.test", body=b"hello\r\n", subject="test"):
    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as client:
        for i in range(n):
            msg = f"Subject: {subject} {i}\r\nMessage-ID: <{subject}.{i}@src.test>\r\n\r\n".encode()
            client.sendmail(sender, rcpts, msg + body)


def subjects(sink):
    return [email.message_from_bytes(m.data)["Subject"] for m in sink.received()]


def test_recipients_at_one_domain_share_a_transaction_and_each_domain_gets_its_own(
    engine_factory, sinks
):
    one, two = sinks("127.0.1.1"), sinks("127.0.1.2")
    engine = engine_factory({"dns": {"bypass": [route("d1.test", one), route("d2.test", two)]}})
    send(engine, ["a@d1.test", "b@d1.test", "c@d2.test", "d@d1.test"])
    wait_for(lambda: one.received() and two.received(), what="both sinks")
    [m1], [m2] = one.received(), two.received()
    assert m1.rcpts == ["a@d1.test", "b@d1.test", "d@d1.test"] and m2.rcpts == ["c@d2.test"]
    assert m1.data == m2.data and b"hello\r\n" in m1.data
    assert one.commands("MAIL")[0].startswith("MAIL FROM:<sender@src.test>")
    engine.wait_log("4 total)")  # recipients accepted, in the manual's "sent" stats line


def test_a_thousand_messages_to_one_host_never_use_more_connections_than_the_cap(
    engine_factory, sinks
):
    sink = sinks("127.0.1.3")
    engine = engine_factory(
        {
            "dns": {"bypass": [route("d3.test", sink)]},
            "smtp_out": {"max_connections_per_host": 3},
        }
    )
    send(engine, ["x@d3.test"], n=1000)
    wait_for(lambda: len(sink.received()) == 1000, timeout=60, what="1000 messages")
    assert sink.max_concurrent <= 3
    assert len(sink.sessions) <= 3
    assert len(set(subjects(sink))) == 1000
    assert not sink.commands("RSET")  # no RSET between completed transactions


def test_when_the_first_mx_is_down_the_second_gets_the_mail(engine_factory, sinks):
    second = sinks("127.0.1.5")
    dead_port = free_port("127.0.1.4")  # nothing listens there
    engine = engine_factory(
        {
            "dns": {
                "bypass": [
                    f"d4.test,mx1.d4.test,MX,127.0.1.4:{dead_port}",
                    route("d4.test", second, "mx2.d4.test"),
                ]
            }
        }
    )
    send(engine, ["a@d4.test"])
    wait_for(lambda: second.received(), what="the second MX")
    assert second.received()[0].rcpts == ["a@d4.test"]


def test_a_4xx_is_retried_and_then_delivered(engine_factory, sinks):
    sink = sinks("127.0.1.6")
    refused = set()

    def greylist(rcpt):
        if rcpt not in refused:
            refused.add(rcpt)
            return (451, "4.7.1 greylisted, try again")
        return None

    sink.rcpt_reply = greylist
    engine = engine_factory(
        {
            "dns": {"bypass": [route("d5.test", sink)]},
            "queue": {"retry_intervals_minutes": [0.02], "check_interval_seconds": 1},
        }
    )
    send(engine, ["a@d5.test", "b@d5.test"])
    wait_for(lambda: len(sink.rcpts_received()) == 2, timeout=20, what="the retry")
    assert len(sink.commands("RCPT")) == 4
    assert sorted(sink.rcpts_received()) == ["a@d5.test", "b@d5.test"]
    wait_for(lambda: not os.listdir(os.path.join(engine.mailq, "retry")), what="empty retry/")


def test_a_5xx_is_logged_undeliverable_and_a_dsn_with_transcript_goes_to_the_sender(
    engine_factory, sinks
):
    target, home = sinks("127.0.1.7"), sinks("127.0.1.8")
    target.rcpt_reply = lambda rcpt: (550, f"5.1.1 <{rcpt}>... no such user")
    engine = engine_factory(
        {
            "dns": {"bypass": [route("d6.test", target), route("src.test", home)]},
            "queue": {"use_dsn": True},
        }
    )
    send(engine, ["john@d6.test"], body=b"this is the message text\r\n")
    wait_for(lambda: home.received(), what="the DSN")
    [dsn] = home.received()
    assert dsn.mail_from == "" and dsn.rcpts == ["sender@src.test"]
    msg = email.message_from_bytes(dsn.data)
    assert msg.get_content_type() == "multipart/report"
    text = dsn.data.decode()
    assert "could not be delivered to" in text and "A transcript of the session follows:" in text
    assert "<-- DNS lookup succeeded, found 1 acceptable mail servers for d6.test" in text
    assert f"--> Attempting to connect to: mx.d6.test (127.0.1.7 {target.port})" in text
    assert "--> RCPT TO:<john@d6.test>" in text and "<-- 550 5.1.1 <john@d6.test>" in text
    assert "Content-Type: message/delivery-status" in text and "Status: 5.1.1" in text
    assert "Remote-MTA: dns; mx.d6.test" in text and "Diagnostic-Code: smtp; 550 5.1.1" in text
    assert "A copy of your message is reproduced below:" in text
    assert "this is the message text" in text
    wait_for(
        lambda: read_text(os.path.join(engine.root, "hard-undeliverable.txt")).startswith(
            "john@d6.test\t550 5.1.1"
        ),
        what="hard-undeliverable.txt",
    )


def test_test_mode_sessions_never_send_data_count_as_sent_and_use_mailq_test(engine_factory, sinks):
    sink = sinks("127.0.1.9")
    engine = engine_factory(
        {"dns": {"bypass": [route("d7.test", sink)]}, "queue": {"save_done": True}},
        test_mode=True,
    )
    send(engine, ["a@d7.test", "b@d7.test"], n=3)
    wait_for(lambda: len(sink.commands("RSET")) == 3, what="three RSETs")
    assert not sink.commands("DATA") and not sink.received()
    assert len(sink.commands("RCPT")) == 6
    wait_for(lambda: re.search(r" sent \(\d+/h avg, 6 total\)", engine.console()), what="6 sent")
    done = os.path.join(engine.root, "mailq-test", "done")
    wait_for(lambda: len([n for n in os.listdir(done) if n.endswith(".inf")]) == 3, what="done/")
    for name in [n for n in os.listdir(done) if n.endswith(".inf")]:
        fields = parse_inf(read_text(os.path.join(done, name)))
        assert fields["status"] == "done" and fields["rcptsent"] == "a@d7.test,b@d7.test"
    assert not os.path.exists(os.path.join(engine.root, "mailq"))  # the real queue: untouched


def test_verp_rewrites_mail_from_so_that_it_decodes_back_to_the_sender(engine_factory, sinks):
    sink = sinks("127.0.1.10")
    engine = engine_factory(
        {
            "dns": {"bypass": [route("d8.test", sink)]},
            "smtp_out": {"bounce_host": "bounces.me.test"},
            "server": {"local_domains": ["bounces.me.test"]},
        }
    )
    send(engine, ["a@d8.test"], sender="joe@src.test")
    wait_for(lambda: sink.received(), what="the message")
    verp = sink.received()[0].mail_from
    assert verp == "mailengine-bounce-joe%src.test@bounces.me.test"
    assert decode_bounce_address(verp) == ("joe@src.test", "bounces.me.test")


def arrival_rate(messages):
    times = sorted(m.time for m in messages)
    return (len(times) - 1) / (times[-1] - times[0])


def test_the_hourly_cap_holds_the_rate_within_ten_percent(engine_factory, sinks):
    sink = sinks("127.0.1.11")
    engine = engine_factory(
        {
            "dns": {"bypass": [route("d9.test", sink)]},
            "smtp_out": {"max_messages_per_hour": 72000},  # 20 a second
        }
    )
    send(engine, ["a@d9.test"], n=140)
    wait_for(lambda: len(sink.received()) == 140, timeout=30, what="140 messages")
    steady = sorted(sink.received(), key=lambda m: m.time)[40:]  # after the 2 s burst
    assert 18.0 <= arrival_rate(steady) <= 22.0
    engine.wait_log("Your mailing speed has reached 72000 messages per hour")
    assert engine.console().count("Your mailing speed has reached") == 1  # not one a message


def test_the_bandwidth_cap_holds_within_ten_percent(engine_factory, sinks):
    sink = sinks("127.0.1.12")
    engine = engine_factory(
        {
            "dns": {"bypass": [route("d10.test", sink)]},
            "smtp_out": {"max_bandwidth_bytes_per_minute": 1_200_000},  # 20,000 bytes a second
        }
    )
    body = (b"x" * 98 + b"\r\n") * 40  # 4,000 bytes
    send(engine, ["a@d10.test"], n=30, body=body)
    wait_for(lambda: len(sink.received()) == 30, timeout=30, what="30 messages")
    steady = sorted(sink.received(), key=lambda m: m.time)[5:]
    size = len(steady[0].data)
    bytes_per_second = arrival_rate(steady) * size
    assert 18_000 <= bytes_per_second <= 22_000


def test_paused_sending_keeps_mail_in_retry_and_resume_sends_it_all(
    engine_factory, sinks, tmp_path
):
    sink = sinks("127.0.1.13")
    settings = {"dns": {"bypass": [route("d11.test", sink)]}, "smtp_out": {"paused": True}}
    engine = engine_factory(settings, root=tmp_path / "paused")
    send(engine, ["a@d11.test"], n=20)
    retry = os.path.join(engine.mailq, "retry")
    wait_for(lambda: len([f for f in os.listdir(retry) if f.endswith(".inf")]) == 20, what="retry/")
    assert engine.stop() in STOPPED
    assert sink.received() == [] and "stopped; 20 messages wait in retry/" in engine.console()
    settings["smtp_out"]["paused"] = False
    engine = engine_factory(settings, root=tmp_path / "paused")
    wait_for(lambda: len(sink.received()) == 20, timeout=20, what="the released batch")


def test_a_restart_in_the_middle_of_retries_loses_and_duplicates_nothing(
    engine_factory, sinks, tmp_path
):
    sink = sinks("127.0.1.14")
    accept = {"on": False}
    sink.rcpt_reply = lambda rcpt: (
        None
        if accept["on"] or rcpt.startswith("ok")
        else (
            451,
            "4.3.0 later",
        )
    )
    settings = {
        "dns": {"bypass": [route("d12.test", sink)]},
        "queue": {"retry_intervals_minutes": [0.03, 0.03, 0.03], "check_interval_seconds": 1},
    }
    root = tmp_path / "restart"
    engine = engine_factory(settings, root=root)
    send(engine, ["later@d12.test"], n=30, subject="later")
    send(engine, ["ok@d12.test"], n=30, subject="ok")
    wait_for(lambda: len(sink.received()) >= 10, what="some deliveries")
    assert engine.stop() in STOPPED  # mid-flow: some sent, some in retry/, some in flight
    accept["on"] = True
    engine = engine_factory(settings, root=root)
    wait_for(lambda: len(sink.received()) >= 60, timeout=30, what="all 60 messages")
    wait_for(lambda: not os.listdir(os.path.join(engine.mailq, "retry")), what="empty retry/")
    got = subjects(sink)
    assert sorted(got) == sorted([f"later {i}" for i in range(30)] + [f"ok {i}" for i in range(30)])


def test_starttls_is_used_when_offered_and_a_domain_that_must_verify_fails_soft(
    engine_factory, sinks, tmp_path
):
    from tests.sinks import self_signed_context

    sink = sinks("127.0.1.15")
    sink.tls_context = self_signed_context(str(tmp_path))
    engine = engine_factory(
        {
            "dns": {
                "bypass": [
                    route("opportunistic.test", sink, "mx.tls.test"),
                    route("strict.test", sink, "mx.tls.test"),
                ]
            },
            "smtp_out": {"tls_verify_domains": ["strict.test"]},
            "queue": {"retry_intervals_minutes": [0]},
        }
    )
    send(engine, ["b@strict.test"])
    soft = os.path.join(engine.root, "soft-undeliverable.txt")
    wait_for(
        lambda: undeliverable_addresses(soft) == ["b@strict.test"],
        what="the unverified domain to fail",
    )
    assert sink.received() == []  # never sent over an unverified (or plain) session
    # The certificate was the strict domain's problem: the server is not "down" for others.
    send(engine, ["a@opportunistic.test"])
    wait_for(lambda: sink.received(), what="the message over TLS")
    assert [m.rcpts for m in sink.received()] == [["a@opportunistic.test"]]
    assert sink.sessions[-1].tls and "STARTTLS" in sink.sessions[-1].commands
    engine.stop()  # the event log is flushed at the stop
    (delivered,) = [e for e in events_of(engine.root) if e["event"] == "delivered"]
    assert delivered["tls"].startswith("TLSv1") and delivered["egress_ip"] == "127.0.0.1"


def test_rejected_mail_servers_are_never_dialled_and_the_next_mx_gets_the_mail(
    engine_factory, sinks
):
    own, primary = sinks("127.0.1.16"), sinks("127.0.1.17")
    engine = engine_factory(
        {
            "dns": {
                "bypass": [
                    route("d13.test", own, "mx1.d13.test"),
                    route("d13.test", primary, "mx2.d13.test"),
                    route("d14.test", own),
                ]
            },
            "smtp_out": {"reject_mail_servers": ["127.0.1.16"]},
            "queue": {"retry_intervals_minutes": [0]},
        }
    )
    send(engine, ["a@d13.test", "b@d14.test"])
    wait_for(lambda: primary.received(), what="the second MX")
    soft = os.path.join(engine.root, "soft-undeliverable.txt")
    wait_for(
        lambda: undeliverable_addresses(soft) == ["b@d14.test"],
        what="d14.test, only at a rejected IP",
    )
    assert primary.received()[0].rcpts == ["a@d13.test"]
    assert own.sessions == []  # never connected to


def test_outbound_sessions_come_from_outbound_ip_and_greet_with_helo_text(engine_factory, sinks):
    sink = sinks("127.0.1.18")
    sink.ehlo_reply = (502, "5.5.1 EHLO not here")  # HELO fallback says it too
    engine = engine_factory(
        {
            "dns": {"bypass": [route("d15.test", sink)]},
            "smtp_out": {"outbound_ip": "127.0.0.77"},
            "server": {"helo_text": "relay.me.test"},
        }
    )
    send(engine, ["a@d15.test"])
    wait_for(lambda: sink.received(), what="the message")
    assert [s.peer for s in sink.sessions] == ["127.0.0.77"]
    assert sink.commands("EHLO") == ["EHLO relay.me.test"]
    assert sink.commands("HELO") == ["HELO relay.me.test"]


MX_ZONE = """\
d16.test       300 MX 10 mx1.d16.test
d16.test       300 MX 20 mx2.d16.test
mx1.d16.test   300 A  127.0.1.19
mx2.d16.test   300 A  127.0.1.20
test           300 SOA 60
"""


def test_mx_hosts_from_dns_are_dialled_on_remote_port_and_a_421_greeting_moves_on(
    engine_factory, sinks, tmp_path
):
    first = sinks("127.0.1.19")
    first.greeting = (421, "4.3.2 too busy")
    zone = tmp_path / "zone.txt"
    zone.write_text(MX_ZONE)
    with SinkServer("127.0.1.20", first.port) as second, DNSServerProcess(str(zone)) as dns:
        engine = engine_factory(
            {"dns": {"servers": [dns.spec]}, "smtp_out": {"remote_port": first.port}}
        )
        send(engine, ["a@d16.test"])
        wait_for(lambda: second.received(), what="the second MX")
        assert second.received()[0].rcpts == ["a@d16.test"]
        assert len(first.sessions) == 1 and first.commands() == []  # refused at the greeting


def test_debug_settings_log_the_outbound_dialogue_and_the_send_loop(engine_factory, sinks):
    sink = sinks("127.0.1.21")
    engine = engine_factory(
        {
            "dns": {"bypass": [route("d17.test", sink)]},
            "logs": {"debug_smtp_out": True, "debug_send_loop": True},
        }
    )
    send(engine, ["a@d17.test"])
    wait_for(lambda: sink.received(), what="the message")
    engine.wait_log(f"127.0.1.21:{sink.port} --> RCPT TO:<a@d17.test>")
    engine.wait_log(f"127.0.1.21:{sink.port} <-- 250 2.0.0 queued")
    engine.wait_log("send loop: took 1 messages")
    engine.wait_log(f"-> mx.d17.test (127.0.1.21:{sink.port})")


def test_a_server_that_closes_after_a_few_messages_gets_the_rest_on_fresh_connections(
    engine_factory, sinks
):
    sink = sinks("127.0.1.22")
    sink.messages_per_session = 5  # then MAIL gets 421 and the session ends
    engine = engine_factory(
        {"dns": {"bypass": [route("d18.test", sink)]}, "smtp_out": {"max_connections_per_host": 1}}
    )
    send(engine, ["a@d18.test"], n=20)
    wait_for(lambda: len(sink.received()) == 20, what="all 20, none deferred to a retry")
    assert len(sink.sessions) >= 4 and len(set(subjects(sink))) == 20
