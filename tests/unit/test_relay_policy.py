"""Where each recipient goes, including every classic open-relay trick (policy.relay)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailengine.policy.ipranges import parse_ip_ranges
from mailengine.policy.relay import (
    RelayRules,
    Route,
    has_routing_syntax,
    is_local_domain,
    is_rejected_sender,
    is_storable_address,
    is_trusted_peer,
    route_recipient,
)

RULES = RelayRules(
    local_domains=("local.test", "bounce.test"),
    relay_domains=("backup.test",),
    relay_ips=parse_ip_ranges(["127.0.0.1", "10.0.0.0/24", "192.168.1.10-192.168.1.20"]),
)
TRUSTED = "10.0.0.7"
STRANGER = "203.0.113.9"


def route(address, peer=STRANGER, rules=RULES, authenticated=False):
    local, _, domain = address.rpartition("@")
    return route_recipient(local, domain, rules, peer_ip=peer, authenticated=authenticated)


@pytest.mark.parametrize("domain", ["local.test", "LOCAL.Test", "local.test."])
def test_a_local_domain_is_incoming_from_anyone_in_any_case(domain):
    assert route(f"joe@{domain}").route is Route.INCOMING


@pytest.mark.parametrize("everything", ["@", "."])
def test_at_or_dot_makes_every_address_local(everything):
    rules = RelayRules(local_domains=(everything,))
    assert route("joe@anywhere.example", rules=rules).route is Route.INCOMING
    assert is_local_domain("x.y.z", (everything,))


def test_a_subdomain_of_a_local_domain_is_not_local():
    assert route("joe@sub.local.test", peer=STRANGER).route is Route.DENIED


@pytest.mark.parametrize("peer", ["127.0.0.1", "10.0.0.200", "192.168.1.15"])
def test_a_peer_in_relay_ips_may_relay_anywhere(peer):
    assert route("joe@remote.example", peer=peer).route is Route.RELAY


@pytest.mark.parametrize("peer", ["203.0.113.9", "10.0.1.1", "192.168.1.21", "::1", "nonsense"])
def test_a_peer_outside_relay_ips_gets_relay_denied(peer):
    assert route("joe@remote.example", peer=peer).route is Route.DENIED


def test_relay_ips_zero_lets_everyone_relay():
    rules = RelayRules(relay_ips=parse_ip_ranges(["0"]))
    assert route("joe@remote.example", rules=rules).route is Route.RELAY
    assert is_trusted_peer("198.51.100.1", rules.relay_ips, authenticated=False)


def test_an_ipv4_mapped_ipv6_peer_matches_its_ipv4_relay_entry():
    assert route("joe@remote.example", peer="::ffff:10.0.0.7").route is Route.RELAY


def test_an_authenticated_session_may_relay_from_anywhere():
    assert route("joe@remote.example", authenticated=True).route is Route.RELAY


def test_a_relay_domain_is_accepted_from_anyone():
    assert route("joe@backup.test").route is Route.RELAY
    assert route("joe@BACKUP.test.").route is Route.RELAY


def test_a_subdomain_of_a_relay_domain_is_not_a_relay_domain():
    assert route("joe@x.backup.test").route is Route.DENIED


def test_a_bounce_address_at_a_local_host_goes_to_bounce_intake():
    verdict = route("mailengine-bounce-joe%example.com@bounce.test")
    assert verdict.route is Route.BOUNCE
    assert verdict.bounce_for == "joe@example.com"


def test_a_bounce_address_at_a_foreign_host_is_just_relay_mail():
    assert route("mailengine-bounce-joe%example.com@remote.example").route is Route.DENIED
    verdict = route("mailengine-bounce-joe%example.com@remote.example", peer=TRUSTED)
    assert verdict.route is Route.RELAY and verdict.bounce_for == ""


def test_a_malformed_bounce_address_at_a_local_host_is_plain_incoming():
    assert route("mailengine-bounce-nodomain@local.test").route is Route.INCOMING


@pytest.mark.parametrize(
    "address",
    [
        "user%remote.example@local.test",  # percent hack
        "remote.example!user@local.test",  # bang path
        "user@remote.example@local.test",  # as a quoted local part would arrive
        '"user@remote.example"@local.test',
        '"user%remote.example"@local.test',
        "user%remote.example%local.test@local.test",
    ],
)
def test_routing_syntax_at_a_local_domain_stays_local_and_never_relays(address):
    assert route(address).route is Route.INCOMING
    assert route(address, peer=TRUSTED).route is Route.INCOMING


@pytest.mark.parametrize(
    "local",
    ["user%remote.example", "remote.example!user", '"user@remote.example"', "a\\@b", "x:y"],
)
def test_routing_syntax_towards_a_relay_domain_is_denied_to_strangers(local):
    assert route(f"{local}@backup.test").route is Route.DENIED
    assert route(f"{local}@backup.test", peer=TRUSTED).route is Route.RELAY
    assert has_routing_syntax(local)


def test_the_domain_after_the_last_at_decides_a_foreign_destination():
    # A source route @a,@b:u@c arrives already stripped to u@c (RFC 5321 §C).
    assert route("u@remote.example").route is Route.DENIED
    assert route("user@local.test@remote.example").route is Route.DENIED


def test_an_unqualified_postmaster_is_accepted_and_other_unqualified_names_are_invalid():
    assert route_recipient("postmaster", "", RULES, peer_ip=STRANGER).route is Route.INCOMING
    assert route_recipient("Postmaster", "", RULES, peer_ip=STRANGER).route is Route.INCOMING
    assert route_recipient("joe", "", RULES, peer_ip=TRUSTED).route is Route.INVALID
    assert route_recipient("", "local.test", RULES, peer_ip=TRUSTED).route is Route.INVALID


def test_accepted_routes_are_incoming_bounce_and_relay_only():
    assert route("joe@local.test").is_accepted
    assert route("joe@backup.test").is_accepted
    assert not route("joe@remote.example").is_accepted


@given(
    local=st.text(alphabet=st.sampled_from('abc%!@".:\\-_+'), min_size=1, max_size=12),
    domain=st.sampled_from(["remote.example", "x.test", "backup.test", "local.test.evil"]),
)
def test_a_stranger_relays_only_plain_local_parts_to_relay_domains(local, domain):
    verdict = route_recipient(local, domain, RULES, peer_ip=STRANGER)
    if verdict.route is Route.RELAY:
        assert domain == "backup.test"
        assert not has_routing_syntax(local)


@pytest.mark.parametrize(
    ("sender", "rejected"),
    [
        ("bob@spammer.com", True),
        ("bob@SPAMMER.COM", True),
        ("makemoneyfast@x.test", True),
        ("alice@example.com", False),
        ("", False),
    ],
)
def test_reject_mail_from_matches_substrings_case_insensitively(sender, rejected):
    assert is_rejected_sender(sender, ("spammer.com", "MakeMoneyFast")) is rejected


def test_no_reject_mail_from_entries_rejects_nobody():
    assert not is_rejected_sender("bob@spammer.com", ())


@pytest.mark.parametrize(
    ("address", "storable"),
    [
        ("joe@example.com", True),
        ('"odd.name"@example.com', True),
        ("", True),  # the null sender
        ('"a, b"@example.com', False),  # would split in rcpttosend=
        ('"a b"@example.com', False),
        ('"a\nretrytime=0"@example.com', False),  # .inf injection
        ("jö@example.com", False),
    ],
)
def test_only_addresses_the_inf_lists_can_hold_are_storable(address, storable):
    assert is_storable_address(address) is storable
