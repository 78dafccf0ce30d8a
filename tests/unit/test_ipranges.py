import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailengine.policy.ipranges import IPRangeError, parse_ip_ranges


def test_single_range_cidr_and_ipv6():
    r = parse_ip_ranges(["1.2.3.5", "1.2.3.10-1.2.3.12", "10.0.0.0/8", "::1", "2001:db8::/32"])
    assert "1.2.3.5" in r and "1.2.3.11" in r and "10.9.9.9" in r
    assert "1.2.3.6" not in r and "1.2.3.13" not in r and "11.0.0.0" not in r
    assert "::1" in r and "2001:db8::5" in r and "2001:db9::" not in r
    assert "::ffff:10.1.1.1" in r  # IPv4-mapped peers on a dual-stack socket
    assert "not-an-ip" not in r and None not in r


def test_zero_is_recorded_not_interpreted():
    r = parse_ip_ranges(["0"])
    assert r.has_zero and "1.2.3.4" not in r


@pytest.mark.parametrize("bad", ["1.2.3", "1.2.3.4-1.2.3.1", "1.2.3.4-::1", "1.2.3.4/40", "x"])
def test_bad_entries_are_named(bad):
    with pytest.raises(IPRangeError) as info:
        parse_ip_ranges([bad])
    assert repr(bad) in str(info.value) or bad in str(info.value)


def test_ranges_expand_into_listen_addresses():
    assert parse_ip_ranges(["127.0.1.1-127.0.1.3"]).addresses() == [
        "127.0.1.1",
        "127.0.1.2",
        "127.0.1.3",
    ]
    with pytest.raises(IPRangeError):
        parse_ip_ranges(["10.0.0.0/8"]).addresses()


@given(
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 255)), max_size=8),
    st.integers(0, 2**32 - 1),
)
def test_membership_matches_a_naive_check(spans, probe):
    entries, naive = [], []
    for start, width in spans:
        end = min(start + width, 2**32 - 1)
        entries.append(f"{ipaddress.IPv4Address(start)}-{ipaddress.IPv4Address(end)}")
        naive.append((start, end))
    r = parse_ip_ranges(entries)
    expected = any(a <= probe <= b for a, b in naive)
    assert (str(ipaddress.IPv4Address(probe)) in r) == expected


def test_answers_kept_for_repeated_peers_stay_right_and_do_not_touch_equality():
    a = parse_ip_ranges(["10.0.0.0/8"])
    b = parse_ip_ranges(["10.0.0.0/8"])
    for _ in range(2):
        assert "10.1.2.3" in a and "11.1.2.3" not in a and "bogus" not in a
    assert a == b and hash(a) == hash(b)
    assert "11.1.2.3" not in parse_ip_ranges(["10.0.0.0/8"])
    assert "11.1.2.3" in parse_ip_ranges(["11.0.0.0/8"])  # one list's answers stay its own
