"""DATA read in chunks: the end, dot-unstuffing, bare LF/CR, size limit (inbound.data)."""

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from mailengine.inbound.data import DataReader
from mailengine.inbound.received import (
    clean_helo,
    prepend_received,
    received_header,
    with_protocol,
)
from mailengine.inbound.replies import check_mail_parameters, format_reply, with_enhanced_code
from mailengine.queue.content import dot_unstuff as unstuff


def reference(stream: bytes) -> tuple[int, bytes] | None:
    """RFC 5321 read line by line: (bytes used, unstuffed content) or None if unfinished."""
    pos, out = 0, []
    while True:
        end = stream.find(b"\r\n", pos)
        if end < 0:
            return None
        line = stream[pos:end]
        pos = end + 2
        if line == b".":
            return pos, b"".join(out)
        out.append((line[1:] if line.startswith(b".") else line) + b"\r\n")


def feed_in_pieces(stream: bytes, cuts: list[int], max_size: int = 0):
    reader = DataReader(max_size)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    consumed = 0
    for start, stop in itertools.pairwise(points):
        used = reader.feed(stream[start:stop])
        if used >= 0:
            return consumed + used, reader
        consumed += stop - start
    return None, reader


def test_a_message_ends_at_crlf_dot_crlf_and_the_rest_is_commands():
    reader = DataReader()
    used = reader.feed(b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert used == len(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert reader.content() == b"Subject: x\r\n\r\nbody\r\n"


def test_a_dot_as_the_first_line_is_an_empty_message():
    reader = DataReader()
    assert reader.feed(b".\r\nNOOP\r\n") == 3
    assert reader.content() == b""


def test_leading_dots_are_unstuffed_on_every_line_including_the_first():
    reader = DataReader()
    reader.feed(b"..first\r\n..\r\n...three\r\n.\r\n")
    assert reader.content() == b".first\r\n.\r\n..three\r\n"


def test_a_bare_lf_dot_never_ends_data_and_bare_line_ends_become_crlf():
    reader = DataReader()
    assert reader.feed(b"a\n.\nMAIL FROM:<evil@x>\r\n") == -1
    assert reader.feed(b"b\r.\rc\r\n.\n") == -1
    assert reader.feed(b"\r\n.\r\n") >= 0
    assert reader.content() == (
        # ".\n" + CRLF is an SMTP line starting with a dot: unstuffed to a blank line.
        b"a\r\n.\r\nMAIL FROM:<evil@x>\r\nb\r\n.\r\nc\r\n\r\n\r\n"
    )


def test_crlf_dot_lf_is_not_the_end_either():
    reader = DataReader()
    assert reader.feed(b"x\r\n.\nRSET\r\n") == -1
    assert reader.feed(b".\r\n") == 3


def test_an_overlong_line_is_content_not_the_end_of_data():
    line = b"y" * 100_000
    reader = DataReader()
    assert reader.feed(line) == -1
    assert reader.feed(b"\r\nRSET\r\n.\r\n") >= 0
    assert reader.content() == line + b"\r\nRSET\r\n"


def test_past_the_size_limit_nothing_is_kept_but_the_end_is_still_found():
    reader = DataReader(max_size=1000)
    for _ in range(50):
        assert reader.feed(b"z" * 98 + b"\r\n") == -1
    assert reader.is_oversized and reader.raw() == b""
    assert reader.feed(b".\r\nQUIT\r\n") == 3
    assert reader.size == 5000


def test_exactly_the_limit_is_accepted():
    reader = DataReader(max_size=12)
    reader.feed(b"0123456789\r\n.\r\n")
    assert not reader.is_oversized and reader.size == 12


def test_a_terminator_split_across_reads_is_found_and_not_stored():
    body = b"hello\r\n.\r\n"
    for cut in range(1, len(body)):
        reader = DataReader()
        assert reader.feed(body[:cut]) == -1
        used = reader.feed(body[cut:] + b"NOOP\r\n")
        assert used == len(body) - cut
        assert reader.content() == b"hello\r\n", cut
        assert reader.size == len(b"hello\r\n")


def test_unstuff_and_canonical_helpers():
    assert unstuff(b".a\r\n..b\r\n") == b"a\r\n.b\r\n"
    assert unstuff(b"") == b""


SMTP_BYTES = st.lists(
    st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"a", b"Subject: x", b"\r\n.\r\n"]),
    max_size=40,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(body=SMTP_BYTES, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_chunked_reading_agrees_with_line_by_line_reading_however_the_reads_split(body, cuts):
    stream = body + b"\r\n.\r\n" + b"NEXT\r\n"
    want = reference(stream)
    assert want is not None
    used, reader = feed_in_pieces(stream, cuts)
    assert used == want[0]
    assert unstuff(reader.raw()) == want[1]


@settings(max_examples=100, deadline=None)
@given(body=SMTP_BYTES, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_the_size_limit_never_changes_where_data_ends(body, cuts):
    stream = body + b"\r\n.\r\nNEXT\r\n"
    used_free, free = feed_in_pieces(stream, cuts)
    used_capped, capped = feed_in_pieces(stream, cuts, max_size=5)
    assert used_free == used_capped
    assert capped.is_oversized == (free.size > 5)


def test_the_received_header_names_helo_peer_protocol_id_and_single_recipient():
    header = received_header(
        helo="client.test",
        peer_ip="192.0.2.1",
        host="mx.test",
        protocol=with_protocol(esmtp=True, tls=True, authenticated=True),
        message_id="P1T2C3@mx.test",
        recipients=["a@x.test"],
        date="Mon, 1 Jan 2001 00:00:00 +0000",
    )
    assert header == (
        b"Received: from client.test ([192.0.2.1])\r\n"
        b"\tby mx.test (MailEngine) with ESMTPSA id P1T2C3@mx.test\r\n"
        b"\tfor <a@x.test>;\r\n"
        b"\tMon, 1 Jan 2001 00:00:00 +0000\r\n"
    )
    two = received_header(
        helo="h",
        peer_ip="p",
        host="m",
        protocol="SMTP",
        message_id="i",
        recipients=["a@x", "b@y"],
        date="d",
    )
    assert b"for" not in two


def test_a_body_without_headers_gets_a_blank_line_after_received():
    assert prepend_received(b"R: x\r\n", b"hello\r\n") == b"R: x\r\n\r\nhello\r\n"
    assert prepend_received(b"R: x\r\n", b"Subject: s\r\n\r\nb\r\n").startswith(b"R: x\r\nSub")
    assert prepend_received(b"R: x\r\n", b"\r\nbody\r\n") == b"R: x\r\n\r\nbody\r\n"
    assert prepend_received(b"R: x\r\n", b"") == b"R: x\r\n"


def test_helo_text_cannot_inject_header_lines():
    assert clean_helo(b"evil\nX-Injected: 1") == "evil?X-Injected:?1"
    assert clean_helo(b"   ") == "unknown"
    assert len(clean_helo(b"a" * 1000)) == 255
    assert with_protocol(esmtp=False, tls=False, authenticated=False) == "SMTP"


def test_mail_parameters_size_body_auth_and_unknown_options():
    assert check_mail_parameters(None, 100) is None
    assert check_mail_parameters(b"SIZE=100 BODY=8BITMIME AUTH=<>", 100) is None
    assert check_mail_parameters(b"size=101", 100)[0] == 552
    assert check_mail_parameters(b"SIZE=10000000000", 0) is None  # 0: no limit
    assert check_mail_parameters(b"SIZE=ten", 100)[0] == 501
    assert check_mail_parameters(b"BODY=BINARYMIME", 100)[0] == 501
    assert check_mail_parameters(b"SMTPUTF8", 100) == (555, b"5.5.4 Unsupported option: SMTPUTF8")


def test_replies_get_enhanced_codes_except_greeting_354_and_334():
    assert with_enhanced_code(250, b"Ok") == b"2.0.0 Ok"
    assert with_enhanced_code(550, b"5.7.1 no") == b"5.7.1 no"
    assert with_enhanced_code(503, b"bad") == b"5.5.1 bad"
    assert with_enhanced_code(452, b"full") == b"4.0.0 full"
    assert with_enhanced_code(354, b"go on") == b"go on"
    assert format_reply(250, b"a\nb") == b"250-a\r\n250 b\r\n"
    assert format_reply(221, b"") == b"221 \r\n"
