from hypothesis import given
from hypothesis import strategies as st

from mailengine.queue.receipts import (
    Received,
    Settled,
    encode_message,
    encode_settled,
    iter_records,
    unsettled,
)


def test_records_round_trip_and_settled_messages_drop_out():
    blob = (
        encode_message("A@h", b"mailfrom=a\n", b"body A\r\n")
        + encode_message("B@h", b"mailfrom=b\n", b"")
        + encode_settled("A@h")
    )
    assert list(iter_records(blob)) == [
        Received("A@h", b"mailfrom=a\n", b"body A\r\n"),
        Received("B@h", b"mailfrom=b\n", b""),
        Settled("A@h"),
    ]
    assert [r.message_id for r in unsettled(blob)] == ["B@h"]


def test_a_damaged_record_is_skipped_and_the_records_after_it_are_read():
    good = encode_message("A@h", b"i\n", b"d")
    bad = bytearray(encode_message("B@h", b"i\n", b"data"))
    bad[-1] ^= 0xFF  # the checksum no longer matches
    torn = encode_message("T@h", b"i\n", b"x" * 50)[:30]
    later = encode_message("C@h", b"i\n", b"MEJ1 fake 1 1 0\nMEJD A@h 0\n")
    blob = good + bytes(bad) + torn + later
    assert [r.message_id for r in unsettled(blob)] == ["A@h", "C@h"]
    assert list(iter_records(b"garbage without a newline")) == []


def test_text_inside_a_message_never_passes_for_a_settle_record():
    inner = encode_settled("A@h")  # a message whose body quotes a real settle record
    blob = (
        encode_message("A@h", b"i\n", b"d")
        + b"junk\n"
        + encode_message("Q@h", b"i\n", b"\n" + inner)[:-2]
    )
    assert [r.message_id for r in unsettled(blob)] == ["A@h"]


@given(
    st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=200)), max_size=5),
    st.integers(min_value=0),
)
def test_any_torn_tail_keeps_exactly_the_whole_records_before_it(items, cut):
    records = [encode_message(f"M{i}@h", inf, data) for i, (inf, data) in enumerate(items)]
    blob = b"".join(records)
    cut = cut % (len(blob) + 1)
    whole = 0
    while whole < len(records) and sum(map(len, records[: whole + 1])) <= cut:
        whole += 1
    got = list(iter_records(blob[:cut]))
    assert [r.message_id for r in got] == [f"M{i}@h" for i in range(whole)]
