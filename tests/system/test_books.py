"""The recipient books through the real engine: good, rejecting and deferring receivers,
local mail and the engine's own DSNs; every acknowledged recipient accounted for, across
a restart (issue 9, item 5)."""

import os
import smtplib

import pytest

from mailengine.queue.inf import parse_inf
from tests.harness import read_text, run_cli, wait_for
from tests.sinks import route

pytestmark = pytest.mark.system


def send(engine, sender, rcpts, n=1):
    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as client:
        for i in range(n):
            client.sendmail(sender, rcpts, f"Subject: books {i}\r\n\r\nhello\r\n".encode())


def books_line(engine):
    """The line a graceful stop logs: ``books: ... : balanced``."""
    return next(line for line in engine.console().splitlines() if "books: " in line)


def audit(engine):
    result = run_cli("queue", "audit", "--root", engine.root)
    return result.returncode, result.stdout.decode()


def undeliverable(root, kind):
    """The addresses of ``hard-`` / ``soft-undeliverable.txt`` (each line: address, reason)."""
    text = read_text(str(root / f"{kind}-undeliverable.txt"))
    return [line.split("\t")[0] for line in text.splitlines()]


def retry_recipients(engine):
    found = []
    for name in sorted(os.listdir(os.path.join(engine.mailq, "retry"))):
        if name.endswith(".inf"):
            fields = parse_inf(read_text(os.path.join(engine.mailq, "retry", name)))
            found += [a for a in fields.get("rcpttosend", "").split(",") if a]
    return found


@pytest.mark.parametrize("use_disk_for_relay", [False, True])
def test_every_acknowledged_recipient_is_sent_failed_local_or_queued_and_the_books_balance(
    engine_factory, sinks, tmp_path, use_disk_for_relay
):
    good, rejecting, deferring = sinks("127.0.3.1"), sinks("127.0.3.2"), sinks("127.0.3.3")
    rejecting.rcpt_reply = lambda rcpt: (550, "5.1.1 no such user")
    deferring.rcpt_reply = lambda rcpt: (451, "4.3.0 try again later")
    root = tmp_path / "books"
    settings = {
        "server": {"local_domains": ["local.test"]},
        "queue": {
            "use_disk_for_relay": use_disk_for_relay,
            "use_dsn": True,
            "check_interval_seconds": 1,
            # The second attempt comes after 1.2 s; the third would wait ten hours.
            "retry_intervals_minutes": [0.02, 600],
        },
        "dns": {
            "bypass": [
                route("good.test", good),
                route("src.test", good),  # where the DSNs go
                route("bad.test", rejecting),
                route("later.test", deferring),
            ]
        },
    }
    engine = engine_factory(settings, root=root)
    send(engine, "s@src.test", ["a@good.test", "b@good.test"], n=3)  # 6 sent
    send(engine, "s@src.test", ["x@bad.test", "y@good.test"], n=2)  # 2 failed hard, 2 sent
    send(engine, "s@src.test", ["z@later.test", "me@local.test"], n=2)  # 2 queued, 2 local
    # Two attempts at later.test, and a DSN (sent) for each message with a hard failure.
    wait_for(lambda: len(deferring.commands("RCPT")) == 4, timeout=30, what="the retry")
    wait_for(lambda: len(good.received()) == 3 + 2 + 2, timeout=30, what="sent mail and DSNs")
    assert engine.stop() in (0, -15, 143)
    line = books_line(engine)
    assert "7 received" not in line  # recipients, not messages
    assert "14 received + 2 generated + 0 found" in line
    assert "10 sent + 2 failed_hard + 0 failed_soft + 2 local + 0 removed + 2 queued" in line
    assert line.endswith(": balanced")
    assert sorted(retry_recipients(engine)) == ["z@later.test", "z@later.test"]
    # Each hard failure has its undeliverable line, and its DSN went to the sender.
    assert undeliverable(root, "hard") == ["x@bad.test"] * 2
    dsns = [m for m in good.received() if m.rcpts == ["s@src.test"]]
    assert len(dsns) == 2 and all(b"x@bad.test" in m.data for m in dsns)
    # The stats line's "sent" counts the clients' mail only, not the two DSNs.
    sent_lines = [ln for ln in engine.console().splitlines() if " sent (" in ln]
    assert sent_lines[-1].endswith(", 8 total)")
    code, text = audit(engine)
    assert code == 0, text
    assert "balanced" in text and "they agree" in text

    # The books of the next run open with what the last one left queued.
    settings["queue"]["retry_intervals_minutes"] = [0.02]  # no retry left: they fail soft
    made_due = run_cli(
        "queue", "retry-now", "--domain", "later.test", "--yes", "--root", engine.root
    )
    assert made_due.returncode == 0, made_due.stdout
    engine = engine_factory(settings, root=root)
    wait_for(lambda: len(deferring.commands("RCPT")) == 6, timeout=30, what="the last attempts")
    wait_for(lambda: len(good.received()) == 9, timeout=30, what="DSNs for the soft failures")
    assert engine.stop() in (0, -15, 143)
    line = books_line(engine)
    assert "0 received + 2 generated + 2 found" in line  # the DSNs of the soft failures
    assert "2 sent + 0 failed_hard + 2 failed_soft" in line
    assert undeliverable(root, "soft") == ["z@later.test"] * 2
    assert "0 queued" in line and line.endswith(": balanced")
    code, text = audit(engine)
    assert code == 0, text
