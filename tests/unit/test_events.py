"""Event records, bounce categories and the .inf's last replies (pure)."""

import json

from mailengine.observe.events import (
    FIELDS,
    action_records,
    encode,
    parse_lines,
    record,
    reply_fields,
    rfc3339,
)
from mailengine.queue.envelope import Envelope, parse_envelope
from mailengine.queue.lastreply import last_replies, last_reply_of, update_last_replies
from mailengine.reports.bouncepatterns import shipped_patterns
from mailengine.reports.categories import (
    CATEGORIES,
    PatternError,
    categorize,
    category_of_status,
    parse_patterns,
)


def test_a_record_has_every_field_in_order_and_round_trips_as_one_json_line():
    r = record("delivered", 1_700_000_000.25, recipient="A@Example.COM", size=10)
    assert tuple(r) == FIELDS
    assert r["time"] == "2023-11-14T22:13:20.250Z" and r["domain"] == "example.com"
    line = encode(r)
    assert line.endswith("\n") and line.count("\n") == 1
    assert list(parse_lines(line + line)) == [r, r]


def test_a_field_outside_the_schema_is_a_bug():
    try:
        record("delivered", 0, colour="red")
    except KeyError:
        return
    raise AssertionError("accepted an unknown field")


def test_replies_split_into_code_enhanced_code_and_text():
    assert reply_fields("550 5.1.1 <a@b> no such user") == {
        "code": 550,
        "enhanced": "5.1.1",
        "text": "<a@b> no such user",
    }
    assert reply_fields("421-busy") == {"code": 421, "enhanced": "", "text": "busy"}
    assert reply_fields("DNS says 5.1.2 no domain") == {
        "code": None,
        "enhanced": "5.1.2",
        "text": "DNS says 5.1.2 no domain",
    }
    assert reply_fields("", 0) is None


def test_rfc3339_keeps_milliseconds_across_seconds():
    assert rfc3339(0.999) == "1970-01-01T00:00:00.999Z"
    assert rfc3339(1.0) == "1970-01-01T00:00:01.000Z"


def test_operator_actions_record_one_event_per_recipient_touched():
    events = action_records("delete", "M1", "s@x", ["a@y", "b@z"], now=5, by="cli")
    assert [(e["event"], e["recipient"], e["by"]) for e in events] == [
        ("deleted", "a@y", "cli"),
        ("deleted", "b@z", "cli"),
    ]
    [held] = action_records("hold", "M1", "s@x", [], now=5, by="web:admin")
    assert held["event"] == "held" and held["recipient"] is None


def test_the_enhanced_code_decides_before_the_text():
    patterns = shipped_patterns()
    assert categorize("550 5.1.1 mailbox full", patterns) == "bad_mailbox"
    assert categorize("552 5.2.2 over quota", patterns) == "mailbox_full"
    assert categorize("550 5.7.1 message rejected as spam", patterns) == "policy"
    assert categorize("554 5.7.11 encryption required", patterns) == "tls"
    assert categorize("421 4.4.5 congestion", patterns) == "rate_limited"
    assert category_of_status("5.0.0") == ""


def test_without_a_telling_code_the_shipped_patterns_decide():
    patterns = shipped_patterns()
    assert categorize("550 User unknown in virtual mailbox table", patterns) == "bad_mailbox"
    assert categorize("452 mailbox is full", patterns) == "mailbox_full"
    assert categorize("550 5.0.0 blocked using zen.spamhaus.org", patterns) == "policy"
    assert categorize("552 message size exceeds fixed limit", patterns) == "message_too_big"
    assert categorize("421 too many connections from your IP", patterns) == "rate_limited"
    assert categorize("TLS failed: certificate verify failed", patterns) == "tls"
    assert categorize("DNS lookup failed for x.test: timeout", patterns) == "dns"
    assert categorize("500 5.5.2 syntax error", patterns) == "protocol"
    assert categorize("connection lost", patterns) == "other"
    assert categorize("", patterns, status="5.1.2") == "bad_domain"


def test_an_operators_pattern_comes_first_and_bad_lines_are_named():
    own = parse_patterns("# mine\nbad_mailbox   mailbox is full\n", "own")
    assert categorize("452 mailbox is full", own + shipped_patterns()) == "bad_mailbox"
    for bad in ("nonsense foo", "policy (unclosed"):
        try:
            parse_patterns(bad, "own.txt")
        except PatternError as exc:
            assert "own.txt line 1" in str(exc)
        else:
            raise AssertionError(bad)
    assert {p.category for p in shipped_patterns()} <= set(CATEGORIES)


def test_last_replies_are_kept_per_recipient_in_the_inf_and_sent_ones_forgotten():
    env = Envelope("M1", "s@x", ["a@y", "b@y"], 0.0)
    update_last_replies(env, [("a@y", "450 4.7.1 later"), ("b@y", "451 busy | retry")], [])
    update_last_replies(env, [("A@y", "452 full")], ["b@y"])
    again = parse_envelope(env.to_inf(), "M1", now=0)
    assert last_replies(again) == {"A@y": "452 full"}
    assert last_reply_of(again) == "452 full" and last_reply_of(again, "a@Y") == "452 full"
    assert "lastreply=A@y 452 full|" in env.to_inf()
    update_last_replies(again, [], ["a@y"])
    assert "lastreply" not in again.to_inf()
    assert json.dumps(last_replies(again)) == "{}"


def test_an_attempt_records_one_event_per_recipient_with_its_session_and_category():
    from mailengine.delivery.outcome import HARD, SENT, SOFT, RecipientResult, apply_attempt
    from mailengine.delivery.records import attempt_events, categorize_failures

    env = Envelope("M1", "s@x", ["a@y", "b@y", "c@z"], 100.0)
    results = [
        RecipientResult("a@y", SENT, 250),
        RecipientResult("b@y", HARD, 550, "550 5.1.1 no such user", remote_mta="mx.y"),
        RecipientResult("c@z", SOFT, 0, "connection refused"),
    ]
    summary = apply_attempt(env, results, now=160.0, intervals_minutes=())  # no retries
    categorize_failures(summary, shipped_patterns())
    via = {"a@y": ("mx.y", "192.0.2.1", "198.51.100.1", "TLSv1.3")}
    events = attempt_events(env, summary, now=160.0, size=42, via=via)
    assert [(e["event"], e["recipient"], e["category"]) for e in events] == [
        ("delivered", "a@y", None),
        ("failed", "b@y", "bad_mailbox"),
        ("expired", "c@z", "other"),
    ]
    delivered = events[0]
    assert (delivered["mx_ip"], delivered["egress_ip"], delivered["tls"]) == (
        "192.0.2.1",
        "198.51.100.1",
        "TLSv1.3",
    )
    assert delivered["queue_seconds"] == 60.0 and delivered["attempt"] == 1
    assert events[1]["mx_host"] == "mx.y" and events[1]["reply"]["enhanced"] == "5.1.1"
    assert events[2]["reply"] == {"code": None, "enhanced": "", "text": "connection refused"}


def test_the_dsn_names_each_failures_category():
    from mailengine.delivery.outcome import HARD, RecipientResult
    from mailengine.reports.dsn import build_dsn

    env = Envelope("M1", "s@x.test", [], 100.0)
    r = RecipientResult("b@y", HARD, 550, "550 5.1.1 no such user", category="bad_mailbox")
    text = build_dsn(
        env,
        [r],
        b"Subject: s\r\n\r\nbody\r\n",
        hostname="me.test",
        now=200.0,
        dsn_id="D1",
        boundary="B",
    ).decode()
    assert " b@y (bad mailbox)" in text and "X-MailEngine-Category: bad_mailbox" in text


def test_a_reply_with_control_characters_still_makes_a_valid_inf():
    env = Envelope("M1", "s@x", ["a@y"], 0.0)
    update_last_replies(env, [("a@y", "450 bad\x00\x85\r\nnext line\x7f" + "x" * 900)], [])
    again = parse_envelope(env.to_inf(), "M1", now=0)
    reply = last_replies(again)["a@y"]
    assert reply.startswith("450 bad next line x") and len(reply) == 500


def test_a_line_separator_in_a_reply_never_breaks_the_line():
    r = record("deferred", 0, detail="a\u2028b\u2029c\nd")
    line = encode(r)
    assert line.count("\n") == 1 and len(line.splitlines()) == 1
    assert next(parse_lines(line))["detail"] == "a\u2028b\u2029c\nd"


def test_text_orjson_refuses_is_still_written_as_one_json_line():
    # Undecodable input bytes reach us as lone surrogates (surrogateescape).
    r = record("received", 0, sender=b"caf\xe9@x.test".decode("utf-8", "surrogateescape"))
    line = encode(r)
    written = line.encode("utf-8", "replace")  # as the event log writes it
    assert written.count(b"\n") == 1
    assert next(parse_lines(written.decode()))["sender"] == "caf?@x.test"


def test_the_encoding_matches_the_standard_library_for_every_field_kind():
    r = record(
        "failed",
        1_700_000_000.5,
        recipient="ü@x.test",
        size=4096,
        reply=reply_fields('550 5.1.1 "no" \\ such\tuser'),
        queue_seconds=0.125,
        detail="line\nbreak",
    )
    assert json.loads(encode(r)) == json.loads(json.dumps(r))
    assert "ü" in encode(r)  # UTF-8, not \\u escapes
