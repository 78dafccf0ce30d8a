import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailengine.dns.answer import Target
from mailengine.dns.cache import (
    MAX_ENTRIES,
    NEGATIVE_TTL_DEFAULT_SECONDS,
    TRANSIENT_FAILURE_SECONDS,
    TTL_CEILING_SECONDS,
    TTL_FLOOR_SECONDS,
    AnswerCache,
    clamp_ttl,
    refresh_plan,
    seconds_to_keep,
)
from mailengine.dns.records import (
    MAX_CNAME_HOPS,
    Answer,
    Record,
    addresses_of,
    describe_records,
    follow_cnames,
    negative_ttl,
)
from mailengine.dns.resolvconf import parse_resolv_conf
from mailengine.dns.targets import (
    BadDomain,
    address_literal,
    is_null_mx,
    mail_hosts,
    no_usable_host,
    normalise_domain,
    order_targets,
)


def mx(name, pref, host, ttl=300):
    return Record(name, "MX", ttl, host, pref)


# -- ordering ---------------------------------------------------------------------


def test_targets_go_lowest_preference_first():
    targets = [Target(30, "c", ()), Target(10, "a", ()), Target(20, "b", ())]
    assert [t.host for t in order_targets(targets, random.Random(1))] == ["a", "b", "c"]


def test_equal_preferences_are_shuffled_by_the_injected_random_source():
    targets = [Target(10, h, ()) for h in "abcd"] + [Target(5, "first", ())]
    seen = Counter(order_targets(targets, random.Random(seed))[1].host for seed in range(400))
    assert set(seen) == set("abcd")  # every equal host gets to go first sometimes
    assert all(n > 50 for n in seen.values())
    for seed in range(20):
        ordered = order_targets(targets, random.Random(seed))
        assert ordered[0].host == "first" and sorted(t.host for t in ordered[1:]) == list("abcd")
    assert order_targets(targets, random.Random(7)) == order_targets(targets, random.Random(7))


@given(st.lists(st.integers(0, 5), max_size=12), st.integers())
def test_ordering_keeps_every_target_and_sorts_preferences(prefs, seed):
    targets = [Target(p, f"h{i}", ()) for i, p in enumerate(prefs)]
    ordered = order_targets(targets, random.Random(seed))
    assert sorted(ordered, key=lambda t: t.host) == sorted(targets, key=lambda t: t.host)
    assert [t.preference for t in ordered] == sorted(prefs)


def test_null_mx_is_a_single_dot_and_mail_hosts_skip_it_and_repeats():
    assert is_null_mx([mx("a.test", 0, "")])
    assert not is_null_mx([])
    assert not is_null_mx([mx("a.test", 0, ""), mx("a.test", 10, "mx.a.test")])
    records = [mx("a.test", 0, ""), mx("a.test", 10, "mx.a.test"), mx("a.test", 10, "mx.a.test")]
    assert mail_hosts(records) == [(10, "mx.a.test")]


# -- names --------------------------------------------------------------------------


def test_domains_are_lower_case_without_the_root_dot_and_idna_encoded():
    assert normalise_domain(" Example.TEST. ") == "example.test"
    assert normalise_domain("bücher.example") == "xn--bcher-kva.example"
    for bad in ("", "a b.test", "a..test", "-a.test", "a" * 64 + ".test", "x@y.test"):
        with pytest.raises(BadDomain):
            normalise_domain(bad)


def test_address_literals_name_their_ip():
    assert address_literal("[192.0.2.1]") == "192.0.2.1"
    assert address_literal("[IPv6:2001:db8::1]") == "2001:db8::1"
    assert address_literal("[not-ip]") is None
    assert address_literal("example.test") is None


def test_resolv_conf_gives_its_nameservers_in_order_or_the_local_machine():
    text = """# comment
    search example.test
    nameserver 10.0.0.1
    nameserver   2001:db8::53   # v6
    nameserver fe80::1%eth0
    nameserver not-an-ip
    ;nameserver 10.9.9.9
    options ndots:2
    """
    assert parse_resolv_conf(text) == [("10.0.0.1", 53), ("2001:db8::53", 53), ("fe80::1", 53)]
    assert parse_resolv_conf("") == [("127.0.0.1", 53)]


# -- CNAMEs and addresses ---------------------------------------------------------------


def test_cnames_are_followed_to_the_records_at_the_end_of_the_chain():
    answer = Answer(
        "alias.test",
        "MX",
        (
            Record("alias.test", "CNAME", 60, "middle.test"),
            Record("middle.test", "CNAME", 60, "real.test"),
            mx("real.test", 10, "mx.real.test"),
            mx("elsewhere.test", 10, "mx.elsewhere.test"),
        ),
    )
    chase = follow_cnames(answer, "alias.test", "MX")
    assert chase.name == "real.test" and chase.hops == 2 and not chase.is_broken
    assert chase.records == (mx("real.test", 10, "mx.real.test"),)


def test_a_cname_loop_or_an_overlong_chain_is_broken():
    loop = Answer(
        "a.test",
        "A",
        (Record("a.test", "CNAME", 60, "b.test"), Record("b.test", "CNAME", 60, "a.test")),
    )
    assert follow_cnames(loop, "a.test", "A").is_broken
    chain = tuple(
        Record(f"n{i}.test", "CNAME", 60, f"n{i + 1}.test") for i in range(MAX_CNAME_HOPS + 1)
    )
    assert follow_cnames(Answer("n0.test", "A", chain), "n0.test", "A").is_broken
    # hops already spent in earlier answers count too
    short = Answer("x.test", "A", (Record("x.test", "CNAME", 60, "y.test"),))
    assert follow_cnames(short, "x.test", "A", hops=MAX_CNAME_HOPS).is_broken


def test_a_host_has_its_a_addresses_then_its_aaaa_addresses():
    records = [
        Record("mx.test", "AAAA", 60, "::1"),
        Record("mx.test", "A", 60, "127.0.0.2"),
        Record("other.test", "A", 60, "127.0.0.3"),
        Record("mx.test", "A", 60, "127.0.0.2"),
    ]
    assert addresses_of("mx.test", records) == ("127.0.0.2", "::1")
    assert addresses_of("none.test", records) == ()


# -- reasons a DSN can quote ------------------------------------------------------------


def test_failure_reasons_read_as_sentences():
    assert (
        Answer("nope.test", "MX", error="NXDOMAIN").describe_error()
        == "nope.test does not exist (NXDOMAIN)"
    )
    assert (
        Answer("x.test", "MX", error="timeout").describe_error()
        == "no answer from the DNS server (timeout) for x.test MX"
    )
    assert "(SERVFAIL) for x.test A" in Answer("x.test", "A", error="SERVFAIL").describe_error()
    assert "(REFUSED)" in Answer("x.test", "A", error="REFUSED").describe_error()
    failure = no_usable_host("a.test", ["mx1.a.test has no A or AAAA records", "mx2: timeout"])
    assert not failure.permanent
    assert failure.reason == (
        "DNS lookup failed: none of the 2 mail servers of a.test has an address "
        "(mx1.a.test has no A or AAAA records; mx2: timeout)"
    )


def test_the_debug_line_lists_records_with_their_ttls():
    answer = Answer(
        "a.test",
        "MX",
        (Record("a.test", "CNAME", 5, "b.test"), mx("b.test", 10, "mx.b.test", 60)),
        (Record("mx.b.test", "A", 60, "127.0.0.2"),),
    )
    assert describe_records(answer) == (
        "CNAME b.test (5 s), 10 mx.b.test (60 s), additional: mx.b.test A 127.0.0.2"
    )
    assert describe_records(Answer("a.test", "MX")) == "no records (NODATA)"
    assert describe_records(Answer("a.test", "MX", error="NXDOMAIN")) == "NXDOMAIN"


# -- how long answers are kept -------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "kept"),
    [(0, TTL_FLOOR_SECONDS), (3, TTL_FLOOR_SECONDS), (60, 60), (10**9, TTL_CEILING_SECONDS)],
)
def test_ttls_are_clamped_between_floor_and_ceiling(ttl, kept):
    assert clamp_ttl(ttl) == kept


def test_a_positive_answer_lives_as_long_as_its_shortest_record_additional_included():
    answer = Answer(
        "a.test",
        "MX",
        (mx("a.test", 10, "mx.a.test", ttl=3600),),
        (Record("mx.a.test", "A", 120, "127.0.0.2"),),
    )
    assert seconds_to_keep(answer) == 120


def test_a_negative_answer_lives_by_its_soa_minimum_or_a_default():
    assert negative_ttl(soa_ttl=3600, soa_minimum=60) == 60
    assert negative_ttl(soa_ttl=30, soa_minimum=60) == 30
    assert seconds_to_keep(Answer("a.test", "MX", error="NXDOMAIN", negative_ttl=60)) == 60
    assert seconds_to_keep(Answer("a.test", "MX", negative_ttl=1)) == TTL_FLOOR_SECONDS  # NODATA
    assert seconds_to_keep(Answer("a.test", "MX", error="NXDOMAIN")) == (
        NEGATIVE_TTL_DEFAULT_SECONDS
    )


def test_a_transient_failure_is_kept_briefly():
    for error in ("timeout", "SERVFAIL", "REFUSED"):
        assert seconds_to_keep(Answer("a.test", "MX", error=error)) == TRANSIENT_FAILURE_SECONDS


def test_the_cache_serves_an_answer_until_it_expires():
    cache = AnswerCache()
    answer = Answer("a.test", "MX", (mx("a.test", 10, "mx.a.test", ttl=60),))
    assert cache.put(answer, now=1000.0) == 1060.0
    assert cache.get("a.test", "MX", now=1059.9) is answer
    assert cache.get("a.test", "A", now=1000.0) is None
    assert cache.get("a.test", "MX", now=1060.0) is None
    assert cache.expires_at("a.test", "MX") == 1060.0


def test_asking_for_freshness_treats_soon_expiring_answers_as_missing():
    cache = AnswerCache()
    cache.put(Answer("a.test", "MX", (mx("a.test", 10, "mx", ttl=60),)), now=0.0)
    assert cache.get("a.test", "MX", now=50.0, fresh_for=5.0) is not None
    assert cache.get("a.test", "MX", now=56.0, fresh_for=5.0) is None


def test_expired_answers_are_dropped_as_new_ones_arrive():
    cache = AnswerCache()
    cache.put(Answer("old.test", "MX", (mx("old.test", 1, "h", ttl=10),)), now=0.0)
    cache.put(Answer("again.test", "MX", (mx("again.test", 1, "h", ttl=10),)), now=0.0)
    cache.put(Answer("again.test", "MX", (mx("again.test", 1, "h", ttl=100),)), now=5.0)
    assert len(cache) == 2
    cache.put(Answer("new.test", "MX", (mx("new.test", 1, "h", ttl=10),)), now=20.0)
    assert len(cache) == 2 and cache.get("again.test", "MX", now=20.0) is not None


def test_a_full_cache_drops_the_answers_closest_to_expiry():
    cache = AnswerCache(max_entries=3)
    for i, ttl in enumerate([50, 10, 40, 30]):
        cache.put(Answer(f"d{i}.test", "MX", (mx(f"d{i}.test", 1, "h", ttl=ttl),)), now=0.0)
    assert len(cache) == 3 and cache.expires_at("d1.test", "MX") is None
    assert MAX_ENTRIES >= 100_000


def test_keep_warm_refreshes_shortly_before_expiry_and_never_in_the_past():
    plan = refresh_plan(now=0.0, expires_at=300.0)
    assert plan.delay == 290.0 and plan.fresh_for == 20.0
    short = refresh_plan(now=0.0, expires_at=5.0)
    assert short.delay == 4.0 and short.fresh_for == 2.0
    late = refresh_plan(now=10.0, expires_at=5.0)
    assert late.delay == 0.0 and late.fresh_for == 0.0
