"""mailq/destinations.json: what the engine writes, what the CLI reads (pure)."""

from mailengine.queue.destination_states import (
    MAX_LISTED,
    STALE_SECONDS,
    DestinationLine,
    decode,
    encode,
    state_words,
)

SUSPENDED = DestinationLine("a.test", "suspended", "suspended", "421 TSS04 later", 500.0)
FAILING = DestinationLine("b.test", "dns_failing", "DNS failing", "DNS lookup failed", 130.0)


def test_states_written_are_read_back_while_fresh():
    data = encode([SUSPENDED, FAILING], 100.0)
    assert decode(data, 100.0 + STALE_SECONDS) == {"a.test": SUSPENDED, "b.test": FAILING}


def test_a_stale_or_broken_file_means_no_engine():
    assert decode(encode([SUSPENDED], 100.0), 100.1 + STALE_SECONDS) is None
    assert decode(b"{not json", 0.0) is None
    assert decode(b'{"written": 0, "destinations": [{"domain": "x"}]}', 0.0) is None


def test_the_file_is_bounded():
    many = (DestinationLine(f"d{i}.test", "suspended", "suspended") for i in range(MAX_LISTED + 5))
    assert len(decode(encode(many, 0.0), 0.0) or {}) == MAX_LISTED


def test_state_words_give_the_time_where_there_is_one():
    clock = "T{:g}".format
    assert state_words("suspended", "suspended", 500.0, clock) == "suspended until T500"
    words = state_words("dns_failing", "DNS failing", 130.0, clock)
    assert words == "DNS failing (next lookup after T130)"
    assert state_words("dns_failing", "DNS failing", 0.0, clock) == "DNS failing"
    assert state_words("throttled", "throttled to 5/min", 0.0, clock) == "throttled to 5/min"
