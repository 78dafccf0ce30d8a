"""What DNS publishes for a DKIM key, and whether it is the key we sign with.

The lookup asks the engine's own resolvers (``[dns] servers``, else the
nameservers of /etc/resolv.conf, as the engine does) with dnspython, which
dkimpy already brings: this runs in the ``mailengine dkim check`` command, not
in the reactor.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
from dkim.util import InvalidTagValueList, parse_tag_value

from mailengine.signing.keys import DkimKey

TIMEOUT_SECONDS = 5.0


@attrs.frozen
class Published:
    """The TXT strings found at a name (each record's strings joined), or why none."""

    records: tuple[str, ...] = ()
    problem: str = ""


@attrs.frozen
class Verdict:
    is_match: bool
    text: str


def lookup_txt(name: str, servers: Sequence[tuple[str, int]]) -> Published:
    """TXT records of ``name`` from the first server that answers (UDP, then TCP if cut)."""
    if not servers:
        return Published(
            problem="no DNS servers ([dns] servers is empty and resolv.conf names none)"
        )
    query = dns.message.make_query(name, dns.rdatatype.TXT)
    problems: list[str] = []
    for host, port in servers:
        try:
            response, _ = dns.query.udp_with_fallback(query, host, TIMEOUT_SECONDS, port)
        except (OSError, dns.exception.DNSException) as exc:
            problems.append(f"{host}:{port}: {exc or type(exc).__name__}")
            continue
        rcode = response.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            return Published(problem=f"{name} does not exist (NXDOMAIN)")
        if rcode != dns.rcode.NOERROR:
            problems.append(f"{host}:{port}: {dns.rcode.to_text(rcode)}")
            continue
        records = tuple(
            b"".join(rdata.strings).decode("utf-8", "replace")
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.TXT
            for rdata in rrset
        )
        if not records:
            return Published(problem=f"{name} has no TXT record")
        return Published(records)
    return Published(problem="no answer: " + "; ".join(problems))


def compare(key: DkimKey, published: Published) -> Verdict:
    """Does DNS publish ``key``'s public half (RFC 6376 §3.6.1 tags k= and p=)?"""
    where = key.dns_name
    if published.problem:
        return Verdict(False, f"{where}: {published.problem}")
    dkim_records = [r for r in published.records if "p=" in r]
    if len(dkim_records) != 1:
        return Verdict(False, f"{where}: {len(dkim_records)} DKIM key records; need exactly one")
    try:
        tags = parse_tag_value(dkim_records[0].encode("utf-8"))
    except InvalidTagValueList as exc:
        return Verdict(False, f"{where}: the record cannot be read ({exc})")
    kind = tags.get(b"k", b"rsa").decode("ascii", "replace")
    value = b"".join(tags.get(b"p", b"").split()).decode("ascii", "replace")
    if not value:
        return Verdict(False, f"{where}: the key is revoked (empty p=)")
    if kind != key.algorithm:
        return Verdict(
            False, f"{where}: publishes a k={kind} key, the key file holds {key.algorithm}"
        )
    if value != key.public_value():
        return Verdict(False, f"{where}: the published key does NOT match {key.path}")
    return Verdict(True, f"{where}: the published {kind} key matches {key.path}")
