"""MailResolver against a real DNS server on a loopback address and an ephemeral port."""

import random

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.logger import capturedLogs, formatEvent

from mailengine.config.model import Config
from mailengine.dns.answer import Destination, DNSFailure, Target
from mailengine.dns.resolver import MailResolver
from tests.dnsserver import DNSTestServer, SilentServer, Zone

# Short retransmission timers: a lost query fails in half a second, not 14 s.
TIMEOUT = (0.5,)  # for silent servers; answering ones get SLOW_MACHINE (no retransmits)
SLOW_MACHINE = (5.0,)


@pytest.fixture
def config():
    return Config.defaults()


@pytest.fixture
def make_resolver(config):
    from twisted.internet import reactor

    made = []

    def make(*servers, clock=None, timeout=SLOW_MACHINE):
        resolver = MailResolver(
            config, reactor, list(servers), clock=clock, rng=random.Random(1), timeout=timeout
        )
        made.append(resolver)
        return resolver

    yield make
    for resolver in made:
        resolver.close()


@pytest.fixture
def zone(dns_server):
    z = dns_server.zone
    z.mx("example.test", 20, "mx2.example.test").mx("example.test", 10, "mx1.example.test")
    z.mx("example.test", 30, "mx3.example.test")
    z.address("mx1.example.test", "127.0.0.11").address("mx2.example.test", "127.0.0.12")
    z.address("mx3.example.test", "::1")
    z.soa("example.test", minimum=20, ttl=3600)
    return z


EXAMPLE = Destination(
    "example.test",
    (
        Target(10, "mx1.example.test", ("127.0.0.11",)),
        Target(20, "mx2.example.test", ("127.0.0.12",)),
        Target(30, "mx3.example.test", ("::1",)),
    ),
    "dns",
)


@pytest_twisted.ensureDeferred
async def test_mx_hosts_come_in_preference_order_as_a_fallback_list(
    dns_server, zone, make_resolver
):
    resolver = make_resolver(dns_server.address)
    assert await resolver.resolve("example.test") == EXAMPLE
    assert zone.queries == [("example.test", "MX")]  # addresses came in the additional section


@pytest_twisted.ensureDeferred
async def test_without_an_additional_section_each_host_is_asked_for_a_and_aaaa(
    dns_server, zone, make_resolver
):
    zone.with_additional = False
    resolver = make_resolver(dns_server.address)
    assert await resolver.resolve("example.test") == EXAMPLE
    assert zone.count("example.test") == 1
    assert zone.count("mx1.example.test", "A") == 1 and zone.count("mx1.example.test", "AAAA") == 1
    assert len(zone.queries) == 7


@pytest_twisted.ensureDeferred
async def test_a_domain_without_mx_is_its_own_mail_server(dns_server, zone, make_resolver):
    zone.address("plain.test", "127.0.0.8", "::1")
    resolver = make_resolver(dns_server.address)
    assert await resolver.resolve("plain.test") == Destination(
        "plain.test", (Target(0, "plain.test", ("127.0.0.8", "::1")),), "implicit"
    )


@pytest_twisted.ensureDeferred
async def test_a_null_mx_fails_permanently(dns_server, zone, make_resolver):
    zone.mx("nomail.test", 0, "").address("nomail.test", "127.0.0.8")
    resolver = make_resolver(dns_server.address)
    assert await resolver.resolve("nomail.test") == DNSFailure(
        "nomail.test",
        True,
        "DNS lookup failed: nomail.test does not accept mail (null MX, RFC 7505)",
    )


@pytest_twisted.ensureDeferred
async def test_nxdomain_fails_permanently_with_a_reason_a_dsn_can_quote(
    dns_server, zone, make_resolver
):
    resolver = make_resolver(dns_server.address)
    assert await resolver.resolve("nope.example.test") == DNSFailure(
        "nope.example.test", True, "DNS lookup failed: nope.example.test does not exist (NXDOMAIN)"
    )


@pytest_twisted.ensureDeferred
async def test_a_name_with_neither_mx_nor_addresses_fails_permanently(
    dns_server, zone, make_resolver
):
    zone.soa("empty.test", minimum=60)
    resolver = make_resolver(dns_server.address)
    assert await resolver.resolve("empty.test") == DNSFailure(
        "empty.test", True, "DNS lookup failed: empty.test has no MX and no A or AAAA records"
    )


@pytest_twisted.ensureDeferred
async def test_a_server_that_never_answers_is_a_transient_timeout(make_resolver):
    silent = SilentServer()
    try:
        resolver = make_resolver(silent.address, timeout=TIMEOUT)
        assert await resolver.resolve("example.test") == DNSFailure(
            "example.test",
            False,
            "DNS lookup failed: no answer from the DNS server (timeout) for example.test MX",
        )
    finally:
        await silent.stop()


@pytest_twisted.ensureDeferred
async def test_when_the_first_server_is_silent_the_next_one_answers(
    dns_server, zone, make_resolver
):
    silent = SilentServer()
    try:
        resolver = make_resolver(silent.address, dns_server.address, timeout=TIMEOUT)
        assert await resolver.resolve("example.test") == EXAMPLE
    finally:
        await silent.stop()


@pytest_twisted.ensureDeferred
async def test_servfail_and_refused_are_transient(dns_server, zone, make_resolver):
    zone.fail("broken.test", "SERVFAIL").fail("closed.test", "REFUSED")
    resolver = make_resolver(dns_server.address)
    broken = await resolver.resolve("broken.test")
    closed = await resolver.resolve("closed.test")
    assert not broken.permanent and "(SERVFAIL) for broken.test MX" in broken.reason
    assert not closed.permanent and "refused the query (REFUSED)" in closed.reason


@pytest_twisted.ensureDeferred
async def test_a_domain_that_is_a_cname_gets_its_targets_mail_servers(
    dns_server, zone, make_resolver
):
    zone.cname("alias.test", "example.test")
    resolver = make_resolver(dns_server.address)
    result = await resolver.resolve("alias.test")
    assert result == Destination("alias.test", EXAMPLE.targets, "dns")
    assert zone.queries == [("alias.test", "MX")]


@pytest_twisted.ensureDeferred
async def test_when_the_server_stops_at_the_cname_the_target_is_asked(
    dns_server, zone, make_resolver
):
    zone.chase_cnames = False
    zone.cname("alias.test", "example.test")
    zone.mx("hosted.test", 10, "mxalias.test").cname("mxalias.test", "mx1.example.test")
    resolver = make_resolver(dns_server.address)
    assert (await resolver.resolve("alias.test")).targets == EXAMPLE.targets
    assert zone.queries == [("alias.test", "MX"), ("example.test", "MX")]
    hosted = await resolver.resolve("hosted.test")  # an MX host that is an alias (RFC 2181 §10.3)
    assert hosted.targets == (Target(10, "mxalias.test", ("127.0.0.11",)),)


@pytest_twisted.ensureDeferred
async def test_a_cname_loop_is_a_transient_failure(dns_server, zone, make_resolver):
    zone.chase_cnames = False
    zone.cname("loop1.test", "loop2.test").cname("loop2.test", "loop1.test")
    resolver = make_resolver(dns_server.address)
    result = await resolver.resolve("loop1.test")
    assert not result.permanent and "CNAME chain longer than 8 or looping" in result.reason


@pytest_twisted.ensureDeferred
async def test_an_mx_host_without_addresses_is_skipped(dns_server, zone, make_resolver):
    zone.mx("partial.test", 10, "ghost.partial.test").mx("partial.test", 20, "mx1.example.test")
    resolver = make_resolver(dns_server.address)
    assert (await resolver.resolve("partial.test")).targets == (
        Target(20, "mx1.example.test", ("127.0.0.11",)),
    )


@pytest_twisted.ensureDeferred
async def test_when_no_mx_host_has_an_address_the_failure_is_transient_and_says_why(
    dns_server, zone, make_resolver
):
    zone.soa("hollow.test", 60).mx("hollow.test", 10, "ghost.hollow.test")
    zone.mx("hollow.test", 20, "slow.hollow.test").fail("slow.hollow.test", "SERVFAIL")
    resolver = make_resolver(dns_server.address)
    assert await resolver.resolve("hollow.test") == DNSFailure(
        "hollow.test",
        False,
        "DNS lookup failed: none of the 2 mail servers of hollow.test has an address "
        "(ghost.hollow.test does not exist (NXDOMAIN); "
        "the DNS server failed (SERVFAIL) for slow.hollow.test A)",
    )


@pytest_twisted.ensureDeferred
async def test_an_mx_bypass_line_answers_with_its_port_and_asks_no_dns(
    dns_server, zone, make_resolver, config
):
    config.apply(
        "dns",
        "bypass",
        ["example.test,pinned.example.test,MX,127.0.0.21:2525", "example.test,b,MX,127.0.0.22"],
    )
    resolver = make_resolver(dns_server.address)
    assert await resolver.resolve("example.test") == Destination(
        "example.test",
        (
            Target(0, "pinned.example.test", ("127.0.0.21",), 2525),
            Target(1, "b", ("127.0.0.22",), None),
        ),
        "bypass",
    )
    assert zone.queries == []


@pytest_twisted.ensureDeferred
async def test_an_ns_bypass_line_sends_the_domains_queries_to_that_server(
    dns_server, zone, make_resolver, config
):
    corp = Zone().mx("corp.test", 5, "mail.corp.test").address("mail.corp.test", "127.0.0.31")
    corp.with_additional = False  # so the host's own queries must go there too
    private = DNSTestServer(corp, host="127.0.0.2").start()
    try:
        config.apply("dns", "bypass", [f"corp.test,ns.corp.test,NS,127.0.0.2:{private.port}"])
        resolver = make_resolver(dns_server.address)
        assert (await resolver.resolve("corp.test")).targets == (
            Target(5, "mail.corp.test", ("127.0.0.31",)),
        )
        assert await resolver.resolve("example.test") == EXAMPLE
        assert sorted(corp.queries) == [
            ("corp.test", "MX"),
            ("mail.corp.test", "A"),
            ("mail.corp.test", "AAAA"),
        ]
        assert zone.queries == [("example.test", "MX")]
    finally:
        await private.stop()


@pytest_twisted.ensureDeferred
async def test_an_answer_is_used_until_its_ttl_expires(dns_server, make_resolver):
    zone = dns_server.zone
    zone.mx("ttl.test", 10, "old.ttl.test", ttl=30).address("old.ttl.test", "127.0.0.41", ttl=30)
    zone.address("new.ttl.test", "127.0.0.42")
    clock = task.Clock()
    resolver = make_resolver(dns_server.address, clock=clock)
    assert (await resolver.resolve("ttl.test")).targets[0].host == "old.ttl.test"
    zone.records["ttl.test"] = []
    zone.mx("ttl.test", 10, "new.ttl.test")
    clock.advance(29)
    assert (await resolver.resolve("ttl.test")).targets[0].host == "old.ttl.test"
    assert zone.count("ttl.test") == 1
    clock.advance(1)
    assert (await resolver.resolve("ttl.test")).targets[0].host == "new.ttl.test"
    assert zone.count("ttl.test") == 2


@pytest_twisted.ensureDeferred
async def test_a_negative_answer_is_kept_for_the_soa_minimum(dns_server, zone, make_resolver):
    clock = task.Clock()
    resolver = make_resolver(dns_server.address, clock=clock)
    assert (await resolver.resolve("late.example.test")).permanent
    zone.mx("late.example.test", 10, "mx1.example.test")
    clock.advance(19)
    assert (await resolver.resolve("late.example.test")).permanent  # still the cached NXDOMAIN
    assert zone.count("late.example.test") == 1
    clock.advance(1)  # the SOA said 20 s (minimum 20, SOA TTL 3600)
    assert (await resolver.resolve("late.example.test")).targets[0].host == "mx1.example.test"
    assert zone.count("late.example.test") == 2


@pytest_twisted.ensureDeferred
async def test_a_thousand_concurrent_lookups_of_one_domain_send_one_query(
    dns_server, zone, make_resolver
):
    resolver = make_resolver(dns_server.address)
    results = await defer.gatherResults([resolver.resolve("example.test") for _ in range(1000)])
    assert len(zone.queries) == 1
    assert all(r == EXAMPLE for r in results)


@pytest_twisted.ensureDeferred
async def test_without_additional_records_concurrent_lookups_ask_each_name_once(
    dns_server, zone, make_resolver
):
    zone.with_additional = False
    resolver = make_resolver(dns_server.address)
    results = await defer.gatherResults([resolver.resolve("example.test") for _ in range(1000)])
    assert all(r == EXAMPLE for r in results)
    assert sorted(set(zone.queries)) == sorted(zone.queries)  # no name and type asked twice
    assert len(zone.queries) == 7  # the MX, then A and AAAA of three hosts


@pytest_twisted.ensureDeferred
async def test_an_answer_too_big_for_udp_is_fetched_over_tcp(dns_server, make_resolver):
    zone = dns_server.zone
    for i in range(40):
        zone.mx("big.test", i, f"mx{i}.big.test").address(f"mx{i}.big.test", f"127.0.1.{i}")
    resolver = make_resolver(dns_server.address)
    result = await resolver.resolve("big.test")
    assert [t.host for t in result.targets] == [f"mx{i}.big.test" for i in range(40)]
    assert zone.queries == [("big.test", "MX"), ("big.test", "MX")]  # UDP (truncated), TCP


@pytest_twisted.ensureDeferred
async def test_debug_dns_logs_each_query_and_answer_and_the_quiet_default_logs_nothing(
    dns_server, zone, make_resolver, config
):
    resolver = make_resolver(dns_server.address)
    with capturedLogs() as events:
        await resolver.resolve("example.test")
    assert [formatEvent(e) for e in events] == []  # not even Twisted's per-socket chatter
    config.apply("logs", "debug_dns", True)
    with capturedLogs() as events:
        await resolver.resolve("nope.example.test")
    server = dns_server.spec
    assert [formatEvent(e) for e in events] == [
        f"DNS query nope.example.test MX to {server}",
        f"DNS answer nope.example.test MX from {server}: NXDOMAIN",
        "DNS lookup failed: nope.example.test does not exist (NXDOMAIN) (permanent)",
    ]
    assert {e["log_namespace"] for e in events} == {"mailengine.dns"}
