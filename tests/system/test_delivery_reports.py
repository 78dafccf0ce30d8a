"""Failure reporting through the real engine: DSNs, delivery reports, admin notices,
the .inf after each attempt and done/ (manual §3-§5, §7)."""

import email
import os
import re

import pytest

from mailengine.observe.timestamps import parse_retry, parse_stamp
from mailengine.queue.inf import parse_inf
from tests.dnsserver import DNSServerProcess
from tests.harness import read_text, run_cli, undeliverable_addresses, wait_for
from tests.sinks import route
from tests.system.test_delivery import send

pytestmark = pytest.mark.system


def queued(engine, what):
    """How many mails of a kind ("DSN", "delivery report", "admin notice") the engine made."""
    return len(re.findall(rf" {what} \S+ to .* queued", engine.console()))


def infs(directory):
    """The fields of every .inf in ``directory``."""
    names = sorted(n for n in os.listdir(directory) if n.endswith(".inf"))
    return [parse_inf(read_text(os.path.join(directory, n))) for n in names]


def delivery_status(message):
    """{recipient: its RFC 3464 fields} of a DSN."""
    human, status, headers = message.get_payload()
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    return {b["Final-Recipient"].split(";")[1].strip(): b for b in blocks[1:]}


# -- DSN ------------------------------------------------------------------------------


def test_no_dsn_goes_to_the_null_sender_nor_for_a_dsn_that_fails_itself(engine_factory, sinks):
    target, home = sinks("127.0.2.1"), sinks("127.0.2.2")
    target.rcpt_reply = lambda rcpt: (550, "5.1.1 no such user")
    home.rcpt_reply = lambda rcpt: (550, "5.1.1 the sender is gone too")
    engine = engine_factory(
        {
            "dns": {"bypass": [route("d1.test", target), route("home.test", home)]},
            "queue": {"use_dsn": True},
        }
    )
    send(engine, ["a@d1.test"], sender="")  # a bounce: never answered with a DSN
    send(engine, ["b@d1.test"], sender="gone@home.test")
    hard = os.path.join(engine.root, "hard-undeliverable.txt")
    wait_for(lambda: "gone@home.test" in read_text(hard), what="the DSN to fail")
    assert sorted(undeliverable_addresses(hard)) == ["a@d1.test", "b@d1.test", "gone@home.test"]
    assert home.commands("RCPT") == ["RCPT TO:<gone@home.test>"]  # the one DSN, from <>
    assert all(c.startswith("MAIL FROM:<> ") for c in home.commands("MAIL"))
    assert queued(engine, "DSN") == 1


DNS_ZONE = """\
test          300 SOA 60
broken.test   SERVFAIL
"""


def test_dns_failures_fail_hard_or_soft_and_the_dsn_quotes_the_resolver(
    engine_factory, sinks, tmp_path
):
    home = sinks("127.0.2.3")
    zone = tmp_path / "zone.txt"
    zone.write_text(DNS_ZONE)
    with DNSServerProcess(str(zone)) as dns:
        engine = engine_factory(
            {
                "dns": {"servers": [dns.spec], "bypass": [route("home.test", home)]},
                "queue": {"use_dsn": True, "retry_intervals_minutes": [0]},
            }
        )
        send(engine, ["a@nowhere.test", "b@broken.test"], sender="me@home.test")
        wait_for(lambda: home.received(), what="the DSN")
    [dsn] = home.received()
    status = delivery_status(email.message_from_bytes(dsn.data))
    nowhere, broken = status["a@nowhere.test"], status["b@broken.test"]
    assert nowhere["Status"] == "5.1.2" and broken["Status"] == "4.4.3"
    assert "nowhere.test does not exist" in nowhere["X-MailEngine-Reason"]
    assert broken["X-MailEngine-Reason"].startswith("DNS lookup failed")
    assert "Remote-MTA" not in nowhere and "Remote-MTA" not in broken  # no server was asked
    text = dsn.data.decode()
    assert "<-- " + nowhere["X-MailEngine-Reason"] in text  # the transcript quotes it too
    root = engine.root
    assert undeliverable_addresses(os.path.join(root, "hard-undeliverable.txt")) == [
        "a@nowhere.test"
    ]
    assert undeliverable_addresses(os.path.join(root, "soft-undeliverable.txt")) == [
        "b@broken.test"
    ]


# -- delivery reports -------------------------------------------------------------------


def report_attempt(message):
    return int(re.search(rb"Send attempt (\d+)", message.data).group(1))


@pytest.mark.parametrize(
    ("kind", "attempts"), [("e", [1, 2, 3]), ("f", [1]), ("l", [3]), ("x", [1, 3])]
)
def test_delivery_reports_follow_their_type_and_name_only_addresses_matching_the_patterns(
    kind, attempts, engine_factory, sinks
):
    target, ops = sinks("127.0.2.4"), sinks("127.0.2.5")
    replies = {"ok": None, "hard": (550, "5.1.1 unknown user")}
    target.rcpt_reply = lambda rcpt: replies.get(rcpt.split("@")[0], (451, "4.2.1 mailbox busy"))
    engine = engine_factory(
        {
            "dns": {
                "bypass": [
                    route("aol.test", target),
                    route("other.test", target),
                    route("ops.test", ops),
                ]
            },
            "queue": {"retry_intervals_minutes": [0.005, 0.005], "save_done": True},
            "reports": {"type": kind, "recipients": ["ops@ops.test"], "domains": ["aol.test"]},
        }
    )
    send(engine, ["ok@aol.test", "hard@aol.test", "bob@aol.test", "joe@other.test"])
    send(engine, ["ann@other.test"])  # fails only where no pattern matches: never reported
    done = os.path.join(engine.mailq, "done")
    wait_for(
        lambda: len([f for f in infs(done) if f["mailfrom"]]) == 2,  # not the reports
        what="both messages in done/",
    )
    assert queued(engine, "delivery report") == len(attempts)
    wait_for(lambda: len(ops.received()) == len(attempts), what="the reports")
    reports = sorted(ops.received(), key=report_attempt)
    assert [report_attempt(r) for r in reports] == attempts
    for report in reports:
        text = report.data.decode()
        assert report.mail_from == "" and report.rcpts == ["ops@ops.test"]
        assert "bob@aol.test: " in text and "mailbox busy" in text
        assert "other.test" not in text and "ok@aol.test:" not in text
        assert "Recipients: 4; delivered so far: 1;" in text
        # the last report names every undelivered address, also those failed earlier
        attempt = report_attempt(report)
        assert ("hard@aol.test: failed: 550" in text) == (attempt == 1)
        assert ("hard@aol.test: failed in an earlier attempt" in text) == (attempt == 3)


# -- the .inf after each attempt, done/ ---------------------------------------------------


def test_each_attempt_updates_the_inf_as_the_manual_says_and_save_done_keeps_the_result(
    engine_factory, sinks
):
    sink = sinks("127.0.2.6")
    replies = {"ok": None, "hard": (550, "5.1.1 unknown user")}
    sink.rcpt_reply = lambda rcpt: replies.get(rcpt.split("@")[0], (451, "4.3.0 later"))
    engine = engine_factory(
        {
            "dns": {"bypass": [route("d2.test", sink)]},
            "queue": {
                "retry_intervals_minutes": [60, 60],
                "save_done": True,
                "check_interval_seconds": 1,
            },
        }
    )
    send(engine, ["ok@d2.test", "hard@d2.test", "soft@d2.test"])
    retry, done = os.path.join(engine.mailq, "retry"), os.path.join(engine.mailq, "done")

    def after_attempt(n, directory=retry):
        found = wait_for(
            lambda: [f for f in infs(directory) if f["sendtries"] == str(n)],
            what=f"attempt {n} in {os.path.basename(directory)}/",
        )
        return found[0]

    first = after_attempt(1)
    assert first["rcptsent"].strip(",") == "ok@d2.test"
    assert first["rcptfailed"].strip(",") == "hard@d2.test"
    assert first["rcpttransient"].strip(",") == "soft@d2.test"
    assert first["rcpttosend"].strip(",") == "soft@d2.test"
    assert first["priority"] == "1"
    finished = parse_stamp(first["timefinished"])
    assert parse_retry(first["retrytime"]) - finished == 3600  # the first interval
    assert first["log"].rstrip("|").endswith(": Finished send attempt 1, sent to 1 of 3 recipients")
    message_id = first["messageid"]
    run_cli("queue", "retry-now", message_id, "--root", engine.root)
    second = after_attempt(2)
    assert second["priority"] == "2" and second["rcpttosend"].strip(",") == "soft@d2.test"
    assert second["log"].count("Finished send attempt") == 2
    assert second["log"].rstrip("|").endswith("Finished send attempt 2, sent to 1 of 3 recipients")
    run_cli("queue", "retry-now", message_id, "--root", engine.root)
    last = after_attempt(3, done)
    assert last["status"] == "done" and last["rcpttosend"] == ""
    assert last["rcptsent"].strip(",") == "ok@d2.test"
    assert last["rcpttransient"].strip(",") == "soft@d2.test"
    assert (
        last["log"]
        .rstrip("|")
        .endswith("Finished send attempt 3, sent to 1 of 3 recipients, now done sending")
    )
    assert os.path.exists(os.path.join(done, message_id + ".dat"))
    assert not infs(retry) and undeliverable_addresses(
        os.path.join(engine.root, "soft-undeliverable.txt")
    ) == ["soft@d2.test"]


# -- admin notices ----------------------------------------------------------------------


def test_low_free_disk_space_is_mailed_to_the_admin_through_the_engine(engine_factory, sinks):
    admin = sinks("127.0.2.7")
    engine = engine_factory(
        {
            "dns": {"bypass": [route("ops.test", admin)]},
            "server": {"admin_email": "admin@ops.test", "low_disk_space_mb": 10**9},
        }
    )
    wait_for(lambda: admin.received(), what="the admin notice")
    [notice] = admin.received()
    assert notice.mail_from == "" and notice.rcpts == ["admin@ops.test"]
    message = email.message_from_bytes(notice.data)
    assert message["Subject"].endswith(": low free disk space")
    assert "MB are free on the file system of" in notice.data.decode()
    assert queued(engine, "admin notice") == 1
    engine.wait_log("low free disk space under")


def test_running_out_of_file_descriptors_is_mailed_to_the_admin_once(
    engine_factory, sinks, monkeypatch
):
    import tests.harness

    sink = sinks("127.0.2.8")
    domains = [f"d{i}.test" for i in range(80)]
    # 64 open files: the 80 connections this message wants cannot all be made.
    monkeypatch.setattr(
        tests.harness, "TWISTD", ["prlimit", "--nofile=64:64", "--", *tests.harness.TWISTD]
    )
    engine = engine_factory(
        {
            "dns": {"bypass": [route(d, sink) for d in [*domains, "ops.test"]]},
            "server": {"admin_email": "admin@ops.test"},
            "smtp_out": {"max_connections_per_host": 100},
        }
    )
    engine.wait_log("Warning: you are out of file descriptors.")  # at start: caps vs limit
    send(engine, [f"u@{d}" for d in domains])
    wait_for(lambda: "admin@ops.test" in sink.rcpts_received(), what="the admin notice")
    wait_for(lambda: len(sink.rcpts_received()) == 81, timeout=20, what="every recipient")
    assert queued(engine, "admin notice") == 1
