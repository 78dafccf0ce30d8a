"""MailResolver's decisions with a Clock and a fake wire: cache, coalescing, bypass, preload."""

import random

import pytest
from twisted.internet import defer, task
from twisted.logger import capturedLogs, formatEvent

from mailengine.config.model import Config
from mailengine.dns.answer import Destination, DNSFailure, Target
from mailengine.dns.cache import AnswerCache
from mailengine.dns.preload import PreloadService
from mailengine.dns.records import Answer, Record
from mailengine.dns.resolver import MailResolver

DEFAULT = [("127.0.0.1", 53)]


class FakeWire:
    """Stands in for every Nameservers the resolver makes: answers from ``table``
    (NXDOMAIN when absent), or holds queries until ``release()`` when ``hold``."""

    def __init__(self):
        self.table = {}
        self.asked = []  # (servers, name, kind)
        self.hold = False
        self.held = []
        self.closed = []

    def make(self, servers):
        return FakeNameservers(self, list(servers))

    def set(self, answer):
        self.table[(answer.name, answer.kind)] = answer

    def count(self, name=None, kind=None):
        return sum(1 for _, n, k in self.asked if name in (None, n) and kind in (None, k))

    def release(self):
        held, self.held = self.held, []
        for d, name, kind in held:
            d.callback(self.answer(name, kind))

    def answer(self, name, kind):
        return self.table.get((name, kind)) or Answer(name, kind, error="NXDOMAIN")


class FakeNameservers:
    def __init__(self, wire, servers):
        self.wire, self.servers = wire, servers

    def query(self, name, kind):
        self.wire.asked.append((self.servers, name, kind))
        if self.wire.hold:
            d = defer.Deferred()
            self.wire.held.append((d, name, kind))
            return d
        return defer.succeed(self.wire.answer(name, kind))

    def close(self):
        self.wire.closed.append(self.servers)


def mx(name, pref, host, ttl=300):
    return Record(name, "MX", ttl, host, pref)


def a(name, address, ttl=300):
    return Record(name, "AAAA" if ":" in address else "A", ttl, address)


@pytest.fixture
def clock():
    c = task.Clock()
    c.advance(1_000_000)
    return c


@pytest.fixture
def wire():
    w = FakeWire()
    w.set(Answer("a.test", "MX", (mx("a.test", 10, "mx.a.test", ttl=60),)))
    w.set(Answer("mx.a.test", "A", (a("mx.a.test", "127.0.0.2", ttl=600),)))
    w.set(Answer("mx.a.test", "AAAA", ()))
    return w


@pytest.fixture
def config():
    return Config.defaults()


@pytest.fixture
def resolver(config, clock, wire):
    return MailResolver(
        config, None, DEFAULT, clock=clock, rng=random.Random(3), make_nameservers=wire.make
    )


def resolved(d):
    """The result of an already-fired Deferred."""
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


# -- cache ------------------------------------------------------------------------------


def test_an_answer_is_reused_until_its_ttl_runs_out(resolver, wire, clock):
    first = resolved(resolver.resolve("a.test"))
    assert first == Destination("a.test", (Target(10, "mx.a.test", ("127.0.0.2",)),), "dns")
    assert wire.count("a.test", "MX") == 1 and wire.count("mx.a.test") == 2  # A and AAAA
    clock.advance(59)
    assert resolved(resolver.resolve("A.Test.")) == first
    assert wire.count("a.test", "MX") == 1
    clock.advance(1)
    assert resolved(resolver.resolve("a.test")) == first
    assert wire.count("a.test", "MX") == 2
    assert wire.count("mx.a.test") == 2  # the host's 600 s answers are still good


def test_a_domain_resolved_a_moment_ago_skips_the_chase_until_its_first_answer_expires(
    config, clock, wire
):
    class CountingCache(AnswerCache):
        gets = 0

        def get(self, *args, **kwargs):
            CountingCache.gets += 1
            return super().get(*args, **kwargs)

    resolver = MailResolver(
        config,
        clock,
        DEFAULT,
        clock=clock,
        rng=random.Random(1),
        cache=CountingCache(),
        make_nameservers=wire.make,
    )
    wire.set(Answer("f.test", "MX", (mx("f.test", 10, "mx.f.test", ttl=300),)))
    wire.set(Answer("mx.f.test", "A", (a("mx.f.test", "127.0.0.3", ttl=30),)))
    first = resolved(resolver.resolve("f.test"))
    asked, gets = len(wire.asked), CountingCache.gets
    clock.advance(29)
    assert resolved(resolver.resolve("f.test")) == first
    assert (len(wire.asked), CountingCache.gets) == (asked, gets)  # not even the cache asked
    # the host's address expires first (30 s), so the destination is chased again then
    wire.set(Answer("mx.f.test", "A", (a("mx.f.test", "127.0.0.4", ttl=30),)))
    clock.advance(1)
    again = resolved(resolver.resolve("f.test"))
    assert again.targets[0].addresses == ("127.0.0.4",)
    assert wire.count("f.test", "MX") == 1 and wire.count("mx.f.test", "A") == 2


def test_a_negative_answer_is_kept_for_the_soa_minimum(resolver, wire, clock):
    wire.set(Answer("gone.test", "MX", error="NXDOMAIN", negative_ttl=30))
    kept_until = clock.seconds() + 30  # the failure says how long it stands
    for _ in range(3):
        failure = resolved(resolver.resolve("gone.test"))
        assert failure == DNSFailure(
            "gone.test", True, "DNS lookup failed: gone.test does not exist (NXDOMAIN)"
        )
        assert failure.until == kept_until
    assert wire.count("gone.test") == 1
    clock.advance(30)
    resolved(resolver.resolve("gone.test"))
    assert wire.count("gone.test") == 2


def test_a_transient_failure_is_kept_briefly_and_then_asked_again(resolver, wire, clock):
    wire.set(Answer("slow.test", "MX", error="timeout"))
    failure = resolved(resolver.resolve("slow.test"))
    assert not failure.permanent and "timeout" in failure.reason
    assert failure.until == clock.seconds() + 30
    resolved(resolver.resolve("slow.test"))
    assert wire.count("slow.test") == 1
    clock.advance(30)
    resolved(resolver.resolve("slow.test"))
    assert wire.count("slow.test") == 2


def test_concurrent_resolves_of_one_domain_share_one_query(resolver, wire):
    wire.hold = True
    pending = [resolver.resolve("a.test") for _ in range(100)]
    assert wire.count("a.test", "MX") == 1
    wire.release()  # the MX answer; now A and AAAA of the host, once each
    assert wire.count("mx.a.test", "A") == 1 and wire.count("mx.a.test", "AAAA") == 1
    wire.release()
    assert {resolved(d).targets[0].host for d in pending} == {"mx.a.test"}
    assert len(wire.asked) == 3


def test_an_mx_host_shared_by_many_domains_is_asked_about_once(resolver, wire):
    for d in ("b.test", "c.test", "d.test"):
        wire.set(Answer(d, "MX", (mx(d, 10, "mx.a.test"),)))
        assert resolved(resolver.resolve(d)).targets[0].addresses == ("127.0.0.2",)
    assert wire.count("mx.a.test", "A") == 1


def test_each_resolve_shuffles_equal_preferences_afresh(resolver, wire):
    hosts = [f"mx{i}.e.test" for i in range(4)]
    wire.set(Answer("e.test", "MX", tuple(mx("e.test", 10, h) for h in hosts)))
    for h in hosts:
        wire.set(Answer(h, "A", (a(h, "127.0.0.9"),)))
    firsts = {resolved(resolver.resolve("e.test")).targets[0].host for _ in range(40)}
    assert firsts == set(hosts)
    assert wire.count("e.test") == 1


# -- bypass, read at use time ----------------------------------------------------------------


def test_an_mx_bypass_answers_without_asking_dns(resolver, wire, config):
    config.apply("dns", "bypass", ["a.test,pinned.a.test,MX,127.0.0.7:2525"])
    assert resolved(resolver.resolve("a.test")) == Destination(
        "a.test", (Target(0, "pinned.a.test", ("127.0.0.7",), 2525),), "bypass"
    )
    assert wire.asked == []


def test_a_live_edit_of_the_bypass_table_applies_to_the_next_resolve(resolver, wire, config):
    assert resolved(resolver.resolve("a.test")).source == "dns"
    config.apply("dns", "bypass", ["a.test,pinned.a.test,MX,127.0.0.7"])
    assert resolved(resolver.resolve("a.test")).source == "bypass"
    config.apply("dns", "bypass", [])
    assert resolved(resolver.resolve("a.test")).source == "dns"
    # a changed table drops cached answers: they may have come from another server
    assert wire.count("a.test", "MX") == 2


def test_an_unchanged_bypass_table_keeps_the_cache(resolver, wire, config):
    config.apply("dns", "bypass", ["z.test,mx.z.test,MX,127.0.0.7"])
    resolved(resolver.resolve("a.test"))
    config.apply("dns", "bypass", ["z.test,mx.z.test,MX,127.0.0.7"])  # same text again
    resolved(resolver.resolve("a.test"))
    assert wire.count("a.test", "MX") == 1


def test_an_ns_bypass_sends_the_domain_and_its_subdomains_to_its_own_server(resolver, wire, config):
    config.apply("dns", "bypass", ["a.test,ns.a.test,NS,127.0.0.53:5353"])
    resolved(resolver.resolve("a.test"))
    resolved(resolver.resolve("other.test"))
    servers = {(name, kind): tuple(s) for s, name, kind in wire.asked}
    ns = (("127.0.0.53", 5353),)
    assert servers[("a.test", "MX")] == ns
    assert servers[("mx.a.test", "A")] == ns  # a subdomain: the MX host
    assert servers[("other.test", "MX")] == tuple(DEFAULT)


def test_an_ns_bypass_without_a_port_asks_port_53(resolver, wire, config):
    config.apply("dns", "bypass", ["a.test,ns.a.test,NS,127.0.0.53"])
    resolved(resolver.resolve("a.test"))
    assert wire.asked[0][0] == [("127.0.0.53", 53)]


# -- logging and errors ----------------------------------------------------------------------


def test_debug_dns_is_read_at_use_time(resolver, config):
    with capturedLogs() as events:
        resolved(resolver.resolve("a.test"))
        config.apply("logs", "debug_dns", True)
        resolved(resolver.resolve("a.test"))
    lines = [formatEvent(e) for e in events]
    assert lines == [
        "DNS lookup succeeded, found 1 acceptable mail servers for a.test (dns): "
        "10 mx.a.test [127.0.0.2]"
    ]


def test_a_bug_below_resolve_becomes_a_transient_failure_and_one_logged_traceback(resolver, wire):
    def broken(name, kind):
        raise RuntimeError("boom")

    resolver.nameservers.query = broken
    with capturedLogs() as events:
        result = resolved(resolver.resolve("x.test"))
    assert result == DNSFailure("x.test", False, "DNS lookup failed: internal error (see the log)")
    assert len([e for e in events if "log_failure" in e]) == 1


def test_a_name_that_cannot_exist_fails_permanently_without_a_query(resolver, wire):
    result = resolved(resolver.resolve("bad name.test"))
    assert result.permanent and "is not a valid domain name" in result.reason
    assert wire.asked == []


def test_an_address_literal_goes_to_its_ip(resolver, wire):
    assert resolved(resolver.resolve("[127.0.0.9]")) == Destination(
        "[127.0.0.9]", (Target(0, "[127.0.0.9]", ("127.0.0.9",)),), "literal"
    )
    assert wire.asked == []


# -- preload: warm at start, kept warm, quiet after stop ---------------------------------------


@pytest.fixture
def preload(resolver, config, clock):
    config.apply("dns", "preload_domains", ["a.test", "gone.test"])
    service = PreloadService(resolver, config, clock)
    yield service
    if service.running:
        service.stopService()


def test_preload_domains_are_resolved_at_start(preload, wire):
    preload.startService()
    assert wire.count("a.test", "MX") == 1 and wire.count("gone.test", "MX") == 1


def test_preloaded_answers_are_refreshed_before_they_expire(preload, resolver, wire, clock):
    preload.startService()
    for _ in range(10):  # a.test MX lives 60 s; NXDOMAIN gone.test 300 s
        clock.advance(10)
        resolved(resolver.resolve("a.test"))  # never finds the cache empty
    assert wire.count("a.test", "MX") == 3  # at start, then before each expiry
    assert wire.count("mx.a.test", "A") == 1  # still fresh (600 s): not asked again
    assert wire.count("gone.test") == 1


def test_stopping_preload_cancels_every_timer_and_closes_connections(preload, wire, clock):
    preload.startService()
    assert clock.getDelayedCalls()
    preload.stopService()
    assert clock.getDelayedCalls() == []
    assert wire.closed == [DEFAULT]
    clock.advance(1000)
    assert wire.count("a.test", "MX") == 1


def test_an_answer_arriving_after_stop_schedules_nothing(preload, wire, clock):
    wire.hold = True
    preload.startService()
    preload.stopService()
    wire.release()
    wire.release()
    assert clock.getDelayedCalls() == []


def test_a_live_edit_of_preload_domains_warms_the_new_list(preload, config, wire, clock):
    preload.startService()
    wire.set(Answer("new.test", "MX", (mx("new.test", 10, "mx.a.test"),)))
    config.apply("dns", "preload_domains", ["new.test"])
    assert wire.count("new.test", "MX") == 1
    assert len(clock.getDelayedCalls()) == 1  # only new.test is kept warm now


# -- which servers ---------------------------------------------------------------------------


def test_empty_servers_means_the_nameservers_of_resolv_conf(config, wire, tmp_path):
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("nameserver 10.1.2.3\nnameserver 10.1.2.4\n")
    resolver = MailResolver.from_config(
        config, None, resolv_conf=str(resolv_conf), make_nameservers=wire.make
    )
    assert resolver.nameservers.servers == [("10.1.2.3", 53), ("10.1.2.4", 53)]


def test_configured_servers_are_the_only_servers(wire, tmp_path):
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("nameserver 10.1.2.3\n")
    config = Config.defaults()
    config.apply("dns", "servers", ["127.0.0.1:5353", "[::1]:5354", "127.0.0.2"])
    resolver = MailResolver.from_config(
        config, None, resolv_conf=str(resolv_conf), make_nameservers=wire.make
    )
    assert resolver.nameservers.servers == [("127.0.0.1", 5353), ("::1", 5354), ("127.0.0.2", 53)]


def test_a_cached_answer_is_given_at_once_and_only_a_lookup_on_the_wire_waits(resolver, wire):
    # The delivery engine counts on it: a lookup not answered at once went out on the
    # wire, and only then does the shaper let in few of the destination's messages.
    wire.hold = True
    first = resolver.resolve("a.test")
    assert not first.called
    wire.release()
    wire.release()  # the host's addresses, asked once the MX came back
    assert isinstance(resolved(first), Destination)
    again = resolver.resolve("a.test")
    assert again.called and isinstance(resolved(again), Destination)
    failing = resolver.resolve("gone.test")  # NXDOMAIN from the wire, then the cache
    wire.release()
    assert isinstance(resolved(failing), DNSFailure)
    assert resolver.resolve("gone.test").called
