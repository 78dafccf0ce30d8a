"""The DSN / delivery report / notice texts."""

import email
from email import policy

from mailengine.delivery.outcome import HARD, SENT, SOFT, RecipientResult, apply_attempt
from mailengine.queue.envelope import Envelope
from mailengine.reports import delivery_report, dsn
from mailengine.reports.notices import NoticeGate, build_notice, disk_space_is_low
from tests.unit.test_outbound_session import converse, ready

NOW = 1_700_000_000.0


# -- DSN and reports ---------------------------------------------------------------


def failed_envelope():
    env = Envelope(
        message_id="P1T2C3@h",
        mail_from="sender@src.test",
        rcpt_to_send=["john@d.test"],
        time_created=NOW,
    )
    transcript = [
        "--> Sending email to: john@d.test",
        "<-- DNS lookup succeeded, found 1 acceptable mail servers for d.test",
        "--> RCPT TO:<john@d.test>",
        "<-- 550 5.1.1 no such user",
    ]
    result = RecipientResult(
        "john@d.test", HARD, 550, "550 5.1.1 no such user", transcript, remote_mta="mx.d.test"
    )
    summary = apply_attempt(env, [result], now=NOW, intervals_minutes=(30,))
    return env, summary


def make_dsn(env, failures, original=b"Subject: s\r\n\r\nx\r\n"):
    return dsn.build_dsn(
        env, failures, original, hostname="mx.me", now=NOW, dsn_id="D1@mx.me", boundary="B"
    )


def test_a_dsn_has_the_manuals_text_and_an_rfc3464_delivery_status_part():
    env, summary = failed_envelope()
    original = b"Subject: hello\r\nTo: john@d.test\r\n\r\nthe text\r\n"
    raw = make_dsn(env, summary.final_failures, original)
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["To"] == "sender@src.test" and msg["From"] == "MAILER-DAEMON@mx.me"
    human, status, headers = msg.iter_parts()
    text = human.get_content()
    assert "Your message (id P1T2C3@h) could not be delivered to" in text
    assert "A transcript of the session follows:" in text
    assert "<-- DNS lookup succeeded, found 1 acceptable mail servers for d.test" in text
    assert "A copy of your message is reproduced below:" in text and "the text" in text
    assert status.get_content_type() == "message/delivery-status"
    status_text = raw.decode()
    assert "Final-Recipient: rfc822; john@d.test" in status_text
    assert "Status: 5.1.1" in status_text and "Diagnostic-Code: smtp; 550 5.1.1" in status_text
    [per_message, recipient] = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mx.me" and per_message["Arrival-Date"]
    assert recipient["Remote-MTA"] == "dns; mx.d.test" and recipient["Last-Attempt-Date"]
    assert headers.get_content_type() == "text/rfc822-headers"
    assert b"\r\n" in raw and b"\n\n" not in raw.replace(b"\r\n", b"")


def test_a_failure_no_server_answered_has_the_engines_status_and_no_remote_mta():
    env, _ = failed_envelope()
    dns_failure = RecipientResult(
        "x@nowhere.test", HARD, reply="DNS lookup failed: no such domain", status="5.1.2"
    )
    raw = make_dsn(env, [dns_failure]).decode()
    block = raw.split("Final-Recipient: rfc822; x@nowhere.test\r\n")[1].split("\r\n\r\n")[0]
    fields = [tuple(line.split(": ", 1)) for line in block.split("\r\n")]
    # RFC 3464 §2.3 order, the extension field last; no Remote-MTA: no server was asked
    assert [name for name, _ in fields] == [
        "Action",
        "Status",
        "Last-Attempt-Date",
        "X-MailEngine-Reason",
    ]
    assert fields[1][1] == "5.1.2" and fields[3][1] == "DNS lookup failed: no such domain"
    assert dsn.status_code(RecipientResult("a@b", SOFT, reply="no server answered")) == "4.4.7"


def test_failed_recipients_name_the_server_of_the_session_and_sent_ones_carry_nothing():
    session = ready()
    txn = converse(session, ["a@d.test", "b@d.test"], b"250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n")
    converse(session, None, b"250 queued\r\n")
    sent, failed = txn.results(["--> x"], remote_mta="mx.d.test")
    assert (sent.kind, sent.remote_mta, sent.transcript) == (SENT, "", ())
    assert (failed.kind, failed.remote_mta, failed.transcript) == (HARD, "mx.d.test", ["--> x"])


def test_no_dsn_goes_to_the_null_sender_or_a_mailer_daemon():
    env, _ = failed_envelope()
    assert dsn.should_send_dsn(env)
    env.mail_from = ""
    assert not dsn.should_send_dsn(env)
    env.mail_from = "MAILER-DAEMON@x.test"
    assert not dsn.should_send_dsn(env)


def test_no_dsn_answers_a_dsn_even_one_sent_with_a_sender():
    env, summary = failed_envelope()
    a_dsn = make_dsn(env, summary.final_failures)
    assert dsn.is_delivery_status_notification(a_dsn)
    assert not dsn.should_send_dsn(env, a_dsn)  # a broken MTA bouncing with a sender
    folded = (
        b"Subject: x\r\nContent-Type: multipart/report;\r\n"
        b"\treport-type=Delivery-Status;\r\n\tboundary=b\r\n\r\n"
    )
    assert dsn.is_delivery_status_notification(folded)
    other_report = b"Content-Type: multipart/report; report-type=disposition-notification\r\n\r\n"
    assert not dsn.is_delivery_status_notification(other_report)
    assert dsn.should_send_dsn(env, b"Subject: hello\r\n\r\nbody\r\n")


def test_report_types_pick_the_attempts_that_get_a_report():
    due = delivery_report.is_report_due
    assert due("e", 2, False) and due("f", 1, False) and not due("f", 2, True)
    assert due("l", 3, True) and not due("l", 1, False)
    assert due("x", 1, False) and due("x", 4, True) and not due("x", 2, False)
    assert not due("", 1, True)


def test_report_domain_patterns_are_substrings_of_the_address():
    assert delivery_report.matches("bob@aol.com", ["aol.com"])
    assert delivery_report.matches("li@mail.cn", [".cn"])
    assert not delivery_report.matches("bob@gmail.com", ["aol.com", ".cn"])
    assert delivery_report.matches("anyone@x.test", [])


def test_a_delivery_report_counts_recipients_and_shows_each_transaction():
    env, summary = failed_envelope()
    reported = delivery_report.undelivered(summary, [], env)
    raw = delivery_report.build_report(
        env, summary, reported, to=["ops@me.test"], hostname="mx.me", now=NOW, report_id="R@mx"
    ).decode()
    assert "Recipients: 1; delivered so far: 0; failed: 1" in raw
    assert "john@d.test: failed: 550 5.1.1 no such user" in raw
    assert "<-- 550 5.1.1 no such user" in raw


def test_the_report_after_the_last_attempt_also_names_addresses_that_failed_before():
    env = Envelope(
        message_id="M@h",
        mail_from="s@src.test",
        rcpt_to_send=["later@d.test"],
        time_created=NOW,
        rcpt_failed=["gone@d.test"],
        send_tries=1,
    )
    soft = RecipientResult("later@d.test", SOFT, 451, "451 busy", ["<-- 451 busy"])
    summary = apply_attempt(env, [soft], now=NOW, intervals_minutes=(30,))
    assert summary.done
    reported = delivery_report.undelivered(summary, ["d.test"], env)
    assert [(r.address, r.kind) for r in reported] == [
        ("later@d.test", SOFT),
        ("gone@d.test", HARD),
    ]
    raw = delivery_report.build_report(
        env, summary, reported, to=["ops@me.test"], hostname="mx.me", now=NOW, report_id="R@mx"
    ).decode()
    assert "later@d.test: failed after the last retry: 451 busy" in raw
    assert "gone@d.test: failed in an earlier attempt\r\n" in raw
    assert delivery_report.undelivered(summary, ["other.test"], env) == []


def test_notices_go_at_most_once_an_hour_per_kind():
    gate = NoticeGate()
    assert gate.may_send("disk", NOW) and not gate.may_send("disk", NOW + 3599)
    assert gate.may_send("descriptors", NOW + 10) and gate.may_send("disk", NOW + 3600)
    text = build_notice(
        to="a@b", subject="low disk", body="x", hostname="h", now=NOW, notice_id="n@h"
    )
    assert b"Subject: MailEngine on h: low disk" in text


def test_disk_space_is_low_under_the_configured_megabytes_and_never_with_zero():
    assert disk_space_is_low(50 * 2**20, 100) and not disk_space_is_low(100 * 2**20, 100)
    assert not disk_space_is_low(0, 0)


def test_a_delivery_report_counts_recipients_that_finally_failed_soft_as_failed():
    env = Envelope(
        message_id="M@h",
        mail_from="s@src.test",
        rcpt_to_send=["busy@d.test", "full@d.test"],
        time_created=NOW,
        rcpt_failed=["gone@d.test"],
        send_tries=1,
    )
    soft = RecipientResult("busy@d.test", SOFT, 451, "451 busy", ["<-- 451 busy"])
    full = RecipientResult("full@d.test", SOFT, 452, "452 full", ["<-- 452 full"])
    summary = apply_attempt(env, [soft, full], now=NOW, intervals_minutes=(30,))
    assert summary.done and len(summary.soft_final) == 2
    reported = delivery_report.undelivered(summary, [], env)
    raw = delivery_report.build_report(
        env, summary, reported, to=["ops@me.test"], hostname="mx.me", now=NOW, report_id="R@mx"
    ).decode()
    assert "Recipients: 3; delivered so far: 0; failed: 3; waiting for a retry: 0" in raw


def test_the_last_report_names_soft_failures_that_ended_in_an_earlier_attempt():
    env = Envelope(
        message_id="M@h",
        mail_from="s@src.test",
        rcpt_to_send=["later@d.test"],
        time_created=NOW,
        rcpt_transient=["tired@d.test"],  # ran out of retries before; not waiting
        send_tries=3,
    )
    ok = RecipientResult("later@d.test", SENT, 250, "250 ok", ["<-- 250 ok"])
    summary = apply_attempt(env, [ok], now=NOW, intervals_minutes=(30,))
    reported = delivery_report.undelivered(summary, [], env)
    assert [(r.address, r.kind) for r in reported] == [("tired@d.test", SOFT)]
    raw = delivery_report.build_report(
        env, summary, reported, to=["ops@me.test"], hostname="mx.me", now=NOW, report_id="R@mx"
    ).decode()
    assert "delivered so far: 1; failed: 1; waiting for a retry: 0" in raw
