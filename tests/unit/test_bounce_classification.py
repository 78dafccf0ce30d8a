"""Returning bounces classified hard or soft (reports.bounces) and CRAM-MD5 secrets."""

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailengine.config.crammd5 import (
    cram_md5_digest,
    cram_md5_secret,
    is_cram_md5_secret,
    verify_cram_md5,
)
from mailengine.reports.bounces import BounceKind, classify_bounce, kind_of_status


def dsn(action: str, status: str, text: str = "Your message could not be delivered.") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example\r\n"
        "To: mailengine-bounce-joe%example.com@bounce.test\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n"
        "--B\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        f"{text}\r\n"
        "--B\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; mx.example\r\n"
        "\r\n"
        "Final-Recipient: rfc822; joe@example.com\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <joe@example.com>: Recipient address rejected\r\n"
        "\r\n"
        "--B\r\n"
        "Content-Type: message/rfc822\r\n"
        "\r\n"
        "Subject: original\r\n"
        "\r\n"
        "quoted text mentioning 4.2.2 and 550 5.7.1 must not count\r\n"
        "--B--\r\n"
    ).encode()


def plain(body: str) -> bytes:
    return f"From: postmaster@x\r\nSubject: failure\r\n\r\n{body}\r\n".encode()


def test_an_rfc3464_failed_5xx_status_is_hard():
    found = classify_bounce(dsn("failed", "5.1.1", "it said 4.2.2 mailbox full"))
    assert found.kind is BounceKind.HARD
    assert (found.status, found.source, found.file_name) == (
        "5.1.1",
        "delivery-status",
        "hard-bounces.txt",
    )


def test_an_rfc3464_delayed_4xx_status_is_soft():
    found = classify_bounce(dsn("delayed", "4.4.1"))
    assert found.kind is BounceKind.SOFT and found.file_name == "soft-bounces.txt"


def test_an_rfc3464_delivered_notice_is_not_a_bounce():
    found = classify_bounce(dsn("delivered", "2.0.0"))
    assert found.kind is None and found.file_name == ""


def test_a_bounce_without_any_status_goes_to_the_unclassified_file():
    found = classify_bounce(b"Subject: Undeliverable\r\n\r\nYour mail could not be delivered.\r\n")
    assert found.kind is None and found.file_name == "unclassified-bounces.txt"


@pytest.mark.parametrize(
    ("body", "kind", "status"),
    [
        ("<joe@example.com>: host mx said: 550 5.1.1 User unknown", BounceKind.HARD, "5.1.1"),
        ("Status: 4.2.2 (mailbox full)", BounceKind.SOFT, "4.2.2"),
        ("first 4.4.1 timeout, then 5.4.7 expired", BounceKind.HARD, "5.4.7"),
        ("550 Requested action not taken: mailbox unavailable", BounceKind.HARD, "5.0.0"),
        ("   host mx.example.com[192.0.2.1] said: 452 Too many", BounceKind.SOFT, "4.0.0"),
    ],
)
def test_without_a_delivery_status_part_the_codes_in_the_text_decide(body, kind, status):
    found = classify_bounce(plain(body))
    assert (found.kind, found.status, found.source) == (kind, status, "text")


@pytest.mark.parametrize(
    "body",
    [
        "I am on vacation until Monday.",
        "Running Postfix 3.5.6 on port 25, sent 550 bytes",
        "version 12.4.1.2 released",
    ],
)
def test_a_message_without_any_status_is_not_recorded(body):
    assert classify_bounce(plain(body)).kind is None


def test_a_quoted_original_message_does_not_decide_the_class():
    data = dsn("failed", "", "no codes here").replace(b"Status: \r\n", b"")
    assert classify_bounce(data).kind is None


def test_kind_of_status_reads_the_class_digit():
    assert kind_of_status("5.7.1") is BounceKind.HARD
    assert kind_of_status(" 4.0.0") is BounceKind.SOFT
    assert kind_of_status("2.0.0") is None


@given(st.binary(max_size=300))
def test_classifying_never_fails_on_garbage(data):
    assert classify_bounce(data).kind in (None, BounceKind.HARD, BounceKind.SOFT)


@given(password=st.text(max_size=100), challenge=st.binary(max_size=200))
def test_cram_md5_from_stored_midstates_equals_hmac_md5_of_the_password(password, challenge):
    stored = cram_md5_secret(password)
    want = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
    assert is_cram_md5_secret(stored)
    assert cram_md5_digest(stored, challenge) == want
    assert verify_cram_md5(stored, challenge, want.encode())
    assert not verify_cram_md5(stored, challenge + b"x", want.encode())


def test_the_stored_cram_md5_secret_does_not_contain_the_password():
    stored = cram_md5_secret("hunter2hunter2")
    assert "hunter2" not in stored and stored.startswith("cram-md5$")
    assert not is_cram_md5_secret("scrypt$1$2")
    assert not verify_cram_md5("cram-md5$zz", b"c", b"00")
