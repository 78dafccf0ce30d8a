"""The suppression list through the real engine: fed by hard failures and bounces, checked
at RCPT TO, managed with ``mailengine suppress`` (issue 12, item 4)."""

from __future__ import annotations

import glob
import os
import smtplib

import pytest

from tests.harness import events_of, run_cli, wait_for
from tests.sinks import route

pytestmark = pytest.mark.system
MESSAGE = b"Subject: s\r\n\r\nhello\r\n"


def rcpt(engine, address):
    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as c:
        c.ehlo("client.test")
        c.mail("sender@src.test")
        return c.rcpt(address)


def test_a_hard_bounced_address_is_refused_at_the_next_rcpt_and_removing_it_lets_it_through(
    engine_factory, sinks
):
    sink = sinks("127.0.12.11")
    sink.rcpt_reply = lambda a: (550, f"5.1.1 <{a}> no such user") if a.startswith("gone") else None
    engine = engine_factory(
        {
            "dns": {"bypass": [route("sup.test", sink)]},
            "server": {"local_domains": ["bounce.test"]},
        }
    )
    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as c:
        c.sendmail("sender@src.test", ["gone@sup.test"], MESSAGE)
        # A returning hard bounce for another address feeds the list too.
        c.sendmail(
            "<>",
            ["mailengine-bounce-left%sup.test@bounce.test"],
            b"Subject: Undelivered\r\n\r\n<left@sup.test>: 550 5.1.1 user unknown\r\n",
        )
    engine.wait_log("suppression list: 1 address(es) added (gone@sup.test)", timeout=30)
    engine.wait_log("suppression list: 1 address(es) added (left@sup.test)", timeout=30)
    code, text = rcpt(engine, "Gone@sup.test")
    assert code == 550
    assert text.startswith(b"5.1.1 <Gone@sup.test> is suppressed (bad mailbox: 550 5.1.1")
    assert b", since 20" in text
    assert rcpt(engine, "left@sup.test")[0] == 550
    assert rcpt(engine, "other@sup.test")[0] == 250
    listed = run_cli("suppress", "list", "--root", engine.root)
    assert b"gone@sup.test\t" in listed.stdout and b"\tdelivery\tengine\t" in listed.stdout
    removed = run_cli("suppress", "remove", "gone@sup.test", "--root", engine.root)
    assert removed.returncode == 0, removed.stderr
    assert rcpt(engine, "gone@sup.test")[0] == 250
    sink.rcpt_reply = lambda a: None  # the mailbox exists again
    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as c:
        c.sendmail("sender@src.test", ["gone@sup.test"], MESSAGE)
    wait_for(lambda: sink.received(), what="delivery to the unsuppressed address")


def test_drop_accepts_a_suppressed_recipient_and_records_a_suppressed_event(engine_factory, sinks):
    sink = sinks("127.0.12.12")
    engine = engine_factory(
        {
            "dns": {"bypass": [route("drop.test", sink)]},
            "suppression": {"action": "drop"},
        }
    )
    added = run_cli(
        "suppress", "add", "quiet@drop.test", "--reason", "asked to stop", "--root", engine.root
    )
    assert added.returncode == 0, added.stderr
    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as c:
        c.sendmail("sender@src.test", ["quiet@drop.test", "loud@drop.test"], MESSAGE)
        c.sendmail("sender@src.test", ["quiet@drop.test"], MESSAGE)  # nothing left to send
    wait_for(lambda: sink.received(), what="the other recipient's delivery")
    engine.stop()
    assert sink.rcpts_received() == ["loud@drop.test"]
    events = events_of(engine.root)
    dropped = [e for e in events if e["event"] == "suppressed"]
    assert [e["recipient"] for e in dropped] == ["quiet@drop.test"] * 2
    assert {e["detail"] for e in dropped} == {"asked to stop"}
    received = [e["recipient"] for e in events if e["event"] == "received"]
    assert sorted(received) == ["loud@drop.test", "quiet@drop.test", "quiet@drop.test"]
    assert glob.glob(os.path.join(engine.mailq, "*", "*.inf")) == []


def test_with_suppression_disabled_a_listed_address_is_relayed(engine_factory, sinks):
    sink = sinks("127.0.12.13")
    engine = engine_factory(
        {
            "dns": {"bypass": [route("off.test", sink)]},
            "suppression": {"enabled": False},
        }
    )
    run_cli("suppress", "add", "x@off.test", "--root", engine.root)
    assert rcpt(engine, "x@off.test")[0] == 250
