import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailengine.observe.timestamps import format_retry, format_stamp, parse_retry, parse_stamp
from mailengine.queue import inf
from mailengine.queue.content import (
    build_message,
    dot_stuff,
    dot_unstuff,
    has_bare_line_ends,
    to_canonical,
)
from mailengine.queue.envelope import Envelope, parse_envelope
from mailengine.queue.ids import MessageIdFactory

MANUAL_SAMPLE = """\
log=2000/12/22 16:29:00: Finished send attempt 1, sent to 1 of 1 recipients, now done sending|
mailfrom=tmiddleton@lyris.com
messageid=P1576T1800C3@tom.lyris.com
priority=6
rcptsent=dwebster@lyris.com,
retrytime=20001222165900
sendtries=1
status=done
timecreated=2000/12/22 16:29:00
timefinished=2000/12/22 16:29:00
"""


def test_the_manuals_sample_inf_parses():
    env = parse_envelope(
        MANUAL_SAMPLE, "P1576T1800C3@tom.lyris.com", now=0, require_recipients=False
    )
    assert env.mail_from == "tmiddleton@lyris.com"
    assert env.rcpt_sent == ["dwebster@lyris.com"]  # trailing comma tolerated
    assert env.priority == 6 and env.send_tries == 1 and env.status == "done"
    assert format_retry(env.retry_time) == "20001222165900"
    assert format_stamp(env.time_created) == "2000/12/22 16:29:00"
    assert env.log == [
        "2000/12/22 16:29:00: Finished send attempt 1, sent to 1 of 1 recipients, now done sending"
    ]


def test_keys_are_read_case_insensitively_and_written_lowercase_unknown_keys_kept():
    text = "MailFrom=a@b.c\nRcptToSend=x@y.z, w@y.z\nX-Campaign=42\nHelo=h.example\n"
    env = parse_envelope(text, "id1", now=1_000_000_000)
    assert env.rcpt_to_send == ["x@y.z", "w@y.z"]
    out = env.to_inf()
    assert "mailfrom=a@b.c\n" in out and "x-campaign=42\n" in out and "helo=h.example\n" in out
    assert "rcpttosend=x@y.z,w@y.z\n" in out
    assert out == "".join(sorted(out.splitlines(keepends=True)))


@pytest.mark.parametrize(
    "text,why",
    [
        ("mailfrom=a@b\nrcpttosend=\n", "no recipient"),
        ("rcpttosend=x@y\n", "mailfrom"),
        ("mailfrom=a@b\nrcpttosend=x@y\npriority=high\n", "whole number"),
        ("mailfrom=a@b\nrcpttosend=x@y\nretrytime=2001-01-01\n", "YYYYMMDDHHMMSS"),
        ("this is not an inf file\n", "key=value"),
    ],
)
def test_invalid_inf_files_say_why(text, why):
    with pytest.raises(inf.InfError) as info:
        parse_envelope(text, "id", now=0)
    assert why in str(info.value)


addresses = st.lists(
    st.from_regex(r"[a-z0-9._+-]{1,10}@[a-z0-9-]{1,10}\.[a-z]{2,4}", fullmatch=True), max_size=5
)
safe_text = st.text(
    st.characters(blacklist_categories=["Cc", "Cs"], blacklist_characters="|"), max_size=30
).map(str.strip)


@given(
    sender=st.one_of(st.just(""), addresses.map(lambda a: a[0] if a else "")),
    to_send=addresses.filter(bool),
    sent=addresses,
    failed=addresses,
    transient=addresses,
    priority=st.integers(0, 99),
    tries=st.integers(0, 50),
    created=st.integers(946684800, 4102444800),
    retry=st.none() | st.integers(946684800, 4102444800),
    log=st.lists(safe_text.filter(bool), max_size=3),
    extra=st.dictionaries(st.from_regex(r"x-[a-z]{1,8}", fullmatch=True), safe_text, max_size=3),
)
def test_inf_round_trips(
    sender, to_send, sent, failed, transient, priority, tries, created, retry, log, extra
):
    env = Envelope(
        message_id="P1T2C3@h",
        mail_from=sender,
        rcpt_to_send=to_send,
        time_created=created,
        rcpt_sent=sent,
        rcpt_failed=failed,
        rcpt_transient=transient,
        priority=priority,
        send_tries=tries,
        retry_time=retry,
        log=log,
        other=extra,
    )
    back = parse_envelope(env.to_inf(), "P1T2C3@h", now=0)
    assert back.to_inf() == env.to_inf()
    assert back.rcpt_to_send == to_send and back.mail_from == sender
    assert back.other == extra and back.log == log
    assert back.time_created == created and back.retry_time == retry


def test_timestamps_round_trip_and_short_retry_times_are_padded():
    assert format_stamp(parse_stamp("2001/01/23 16:47:56")) == "2001/01/23 16:47:56"
    assert format_retry(parse_retry("20010123171756")) == "20010123171756"
    assert format_retry(parse_retry("200101231717")) == "20010123171700"


def test_message_ids_are_unique_and_safe_file_names():
    f = MessageIdFactory(1576, 1800.5, "tom.lyris.com")
    a, b = f.next_id(), f.next_id()
    assert a == "P1576T1800500C1@tom.lyris.com" and a != b
    assert inf.is_valid_message_id(a)
    for bad in ("../x", "a/b", ".hidden", "", "x..y", "a b"):
        assert not inf.is_valid_message_id(bad)


def test_canonical_content_ends_lines_in_crlf():
    assert to_canonical(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd\r\n"
    assert has_bare_line_ends(b"a\nb") and not has_bare_line_ends(b"a\r\nb\r\n")
    assert to_canonical(b"a\r\n") == b"a\r\n"


@given(st.lists(st.text(st.sampled_from(".ab \t"), max_size=6), min_size=1, max_size=6))
def test_dot_stuffing_round_trips_and_never_makes_a_lone_dot_line(lines):
    data = "\r\n".join(lines).encode() + b"\r\n"
    stuffed = dot_stuff(data)
    assert dot_unstuff(stuffed) == data
    assert b"\r\n.\r\n" not in b"\r\n" + stuffed


def test_build_message_joins_headers_and_body_like_sendmessage():
    assert build_message("Subject: hi\n", "body\n") == b"Subject: hi\r\n\r\nbody\r\n"


def test_verp_round_trips_and_leaves_the_null_sender_alone():
    from mailengine.policy.verp import decode_bounce_address, encode_bounce_address

    verp = encode_bounce_address("joe@example.com", "bounce.example.net")
    assert verp == "mailengine-bounce-joe%example.com@bounce.example.net"
    assert decode_bounce_address(verp) == ("joe@example.com", "bounce.example.net")
    assert decode_bounce_address("Mailengine-Bounce-a%b.c@h") == ("a@b.c", "h")
    assert encode_bounce_address("", "bounce.example.net") == ""
    for not_verp in ("joe@example.com", "mailengine-bounce-nopercent@h", "x%y@h"):
        assert decode_bounce_address(not_verp) is None


@given(
    st.from_regex(r"[a-z0-9._%+-]{1,12}", fullmatch=True),
    st.from_regex(r"[a-z0-9-]{1,10}\.[a-z]{2,4}", fullmatch=True),
)
def test_verp_inverse_holds(user, domain):
    from mailengine.policy.verp import decode_bounce_address, encode_bounce_address

    sender = f"{user}@{domain}"
    assert decode_bounce_address(encode_bounce_address(sender, "b.test")) == (sender, "b.test")


def test_a_stamp_asked_for_again_within_its_second_is_the_same_and_the_next_second_moves_on():
    t = parse_stamp("2001/01/23 16:47:56")
    assert [format_stamp(x) for x in (t, t + 0.5, t + 0.999, t + 1, t + 0.2, t + 61)] == [
        "2001/01/23 16:47:56",
        "2001/01/23 16:47:56",
        "2001/01/23 16:47:56",
        "2001/01/23 16:47:57",
        "2001/01/23 16:47:56",
        "2001/01/23 16:48:57",
    ]
