"""The web admin against real delivery: /metrics while mail moves, and queue actions on
messages the engine is sending or holds back in memory (never lost, never doubled)."""

import json
import os
import signal
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import wait_for
from tests.sinks import route

pytestmark = pytest.mark.system
TOKEN = "delivery-test-token-0123456789"


def call(engine, path, method="GET", body=None):
    """(status, JSON) of one API call with the token (errors included)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{engine.web_port}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def metrics(engine):
    with urllib.request.urlopen(f"http://127.0.0.1:{engine.web_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def relay(engine, *recipients):
    import smtplib

    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=10) as client:
        for rcpt in recipients:
            client.sendmail("news@example.org", [rcpt], b"Subject: hi\r\n\r\nhello\r\n")


def in_memory(engine):
    return call(engine, "/api/queue?dir=memory")[1]["messages"]


def files(engine, dirname):
    return sorted(
        n[:-4] for n in os.listdir(os.path.join(engine.mailq, dirname)) if n.endswith(".inf")
    )


def test_metrics_follow_real_delivery_and_a_message_being_sent_is_left_alone(engine_factory, sinks):
    accepting, refusing, stalling = (sinks(f"127.0.2.{n}") for n in (1, 2, 3))
    refusing.rcpt_reply = lambda rcpt: (550, "5.1.1 no such user")
    stalling.stall_on = "DATA-END"
    routes = [
        route("ok.test", accepting),
        route("bad.test", refusing),
        route("slow.test", stalling),
    ]
    engine = engine_factory({"web": {"api_token": TOKEN}, "dns": {"bypass": routes}})
    relay(engine, "a@ok.test", "b@ok.test", "c@ok.test", "d@bad.test", "e@bad.test")
    relay(engine, "f@slow.test", "g@slow.test")
    wait_for(lambda: len(accepting.received()) == 3, what="the accepted mail")
    wait_for(lambda: stalling.concurrent == 2, what="two connections stuck at the end of DATA")

    def settled():
        values = metrics(engine)
        return (
            values.get(("mailengine_recipients_total", (("outcome", "failed_hard"),))) == 2
            and values
        )

    values = wait_for(settled, what="the refused recipients in /metrics")
    assert values[("mailengine_messages_received_total", ())] == 7
    assert values[("mailengine_recipients_total", (("outcome", "sent"),))] == 3
    assert values[("mailengine_outbound_connections_open", ())] >= 2  # idle ones stay open
    hosts = {
        dict(labels)["host"]: value
        for (name, labels), value in values.items()
        if name == "mailengine_outbound_host_connections_open"
    }
    assert [v for h, v in hosts.items() if h.startswith("mx.slow.test")] == [2]
    slow = ("mailengine_destination_queued_recipients", (("domain", "slow.test"),))
    assert values[slow] == 2
    assert values[("mailengine_queue_oldest_message_age_seconds", ())] > 0
    assert values[("mailengine_queue_memory_messages", ())] == 2

    # The operator tries to delete a message that is being sent right now: refused, kept.
    [stuck, _] = in_memory(engine)
    assert stuck["being_sent"] is True
    code, answer = call(engine, f"/api/queue/messages/{stuck['id']}/delete", "POST")
    assert code == 409 and answer["text"].startswith("being sent now")
    assert stuck["id"] in {m["id"] for m in in_memory(engine)}
    # The receiving host drops the connections: the attempts end soft, the messages go
    # to retry/, and there the delete works.
    stalling.close()
    wait_for(lambda: len(files(engine, "retry")) == 2, what="the stuck mail to go to retry/")
    code, answer = call(engine, f"/api/queue/messages/{stuck['id']}/delete", "POST")
    assert code == 200 and answer["text"] == "deleted from retry/"
    assert stuck["id"] not in files(engine, "retry") and len(files(engine, "retry")) == 1


def test_mail_held_back_by_the_hourly_cap_waits_in_memory_and_can_be_held(engine_factory, sinks):
    sink = sinks("127.0.2.1")
    engine = engine_factory(
        {
            "web": {"api_token": TOKEN},
            "smtp_out": {"max_messages_per_hour": 1},
            "dns": {"bypass": [route("x.test", sink)]},
        }
    )
    relay(engine, "a@x.test", "b@x.test", "c@x.test")
    wait_for(lambda: len(sink.received()) == 1, what="the first message (the cap allows one)")
    status = wait_for(
        lambda: (s := call(engine, "/api/status")[1])["held_by_rate_cap"] and s,
        what="the cap to hold sending",
    )
    assert status["queue"]["memory_messages"] == 2
    assert metrics(engine)[("mailengine_sending_held_by_rate_cap", ())] == 1
    waiting = in_memory(engine)
    assert len(waiting) == 2 and not any(m["being_sent"] for m in waiting)
    held, other = waiting
    code, answer = call(engine, f"/api/queue/messages/{held['id']}/hold", "POST")
    assert code == 200 and answer["text"] == "held (memory -> hold/)"
    assert files(engine, "hold") == [held["id"]]

    assert [m["id"] for m in in_memory(engine)] == [other["id"]]

    # A graceful stop writes the waiting one to retry/; the held one stays in hold/.
    assert engine.stop() in (0, -signal.SIGTERM)  # twistd re-raises the signal when done
    assert files(engine, "hold") == [held["id"]] and files(engine, "retry") == [other["id"]]
    assert len(sink.received()) == 1
