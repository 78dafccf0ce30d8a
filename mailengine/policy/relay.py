"""Where a recipient's mail goes: incoming, bounce intake, relay, or refused (pure; manual §2).

Only the domain after the last ``@`` ever routes mail. Routing syntax inside
the local part (``user%remote@``, ``a!b@``, quoted ``"u@remote"@``) is never
honoured, so a local domain can never be made to relay (the classic open-relay
tests), and untrusted peers may not use it towards relay domains either.
"""

from __future__ import annotations

import enum

import attrs

from mailengine.policy.ipranges import IPRanges
from mailengine.policy.verp import decode_bounce_address

EVERY_ADDRESS = ("@", ".")
# Characters that route mail when some later MTA interprets the local part.
ROUTING_CHARACTERS = ("%", "!", "@", '"', ":", "\\")


class Route(enum.Enum):
    INCOMING = "incoming"  # a local domain: mailq/incoming/ or dropped
    BOUNCE = "bounce"  # mailengine-bounce-USER%DOMAIN@<local host>
    RELAY = "relay"  # queued for delivery to the domain's MX
    DENIED = "denied"  # 554 5.7.1 relay not approved
    INVALID = "invalid"  # not an address we can route (no domain)


@attrs.frozen
class RecipientVerdict:
    """The decision for one RCPT TO; ``bounce_for`` is USER@DOMAIN of a returning bounce."""

    route: Route
    domain: str
    bounce_for: str = ""

    @property
    def is_accepted(self) -> bool:
        return self.route in (Route.INCOMING, Route.BOUNCE, Route.RELAY)


@attrs.frozen
class RelayRules:
    """The settings the relay decision reads (``[server]`` and ``[smtp_in]``)."""

    local_domains: tuple[str, ...] = ()
    relay_domains: tuple[str, ...] = ()
    relay_ips: IPRanges = attrs.field(factory=IPRanges)


def normalise(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


def is_local_domain(domain: str, local_domains: tuple[str, ...]) -> bool:
    """``@`` or ``.`` in the list makes every domain local (the manual's speed-test setting)."""
    if any(entry in EVERY_ADDRESS for entry in local_domains):
        return True
    return normalise(domain) in local_domains


def has_routing_syntax(local_part: str) -> bool:
    """True for local parts a later MTA might treat as a route (``a%b``, ``a!b``, quotes)."""
    return any(ch in local_part for ch in ROUTING_CHARACTERS)


def is_trusted_peer(peer_ip: str, relay_ips: IPRanges, *, authenticated: bool) -> bool:
    """May this session relay anywhere? relay_ips (``0`` = everyone) or SMTP AUTH."""
    return authenticated or relay_ips.has_zero or peer_ip in relay_ips


def route_recipient(
    local_part: str,
    domain: str,
    rules: RelayRules,
    *,
    peer_ip: str,
    authenticated: bool = False,
) -> RecipientVerdict:
    """Decide one recipient ``local_part@domain`` (already stripped of any source route)."""
    domain = normalise(domain)
    if not domain or not local_part:
        if local_part.lower() == "postmaster":  # RFC 5321 §4.5.1: always accepted
            return RecipientVerdict(Route.INCOMING, domain)
        return RecipientVerdict(Route.INVALID, domain)
    if is_local_domain(domain, rules.local_domains):
        bounce = decode_bounce_address(f"{local_part}@{domain}")
        if bounce is not None:
            return RecipientVerdict(Route.BOUNCE, domain, bounce_for=bounce[0])
        return RecipientVerdict(Route.INCOMING, domain)
    if is_trusted_peer(peer_ip, rules.relay_ips, authenticated=authenticated):
        return RecipientVerdict(Route.RELAY, domain)
    if domain in rules.relay_domains and not has_routing_syntax(local_part):
        return RecipientVerdict(Route.RELAY, domain)
    return RecipientVerdict(Route.DENIED, domain)


def is_storable_address(address: str) -> bool:
    """Can the .inf address lists hold it? Printable ASCII without spaces or commas.

    RFC 5321 allows quoted local parts such as ``"a, b"@x``; the manual's
    comma-separated ``rcpttosend=`` cannot, so such addresses are refused.
    """
    return all("!" <= ch <= "~" and ch != "," for ch in address)


def is_rejected_sender(mail_from: str, substrings: tuple[str, ...]) -> bool:
    """``reject_mail_from``: the sender contains one of the substrings (case-insensitive)."""
    if not substrings:
        return False
    lowered = mail_from.lower()
    return any(s.lower() in lowered for s in substrings)
