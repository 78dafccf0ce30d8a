"""From DNS facts to delivery targets: names, MX order, bypass answers, failure reasons (pure)."""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterable, Sequence
from itertools import groupby

from mailengine.dns.answer import Destination, DNSFailure, Target
from mailengine.dns.bypass import BypassEntry
from mailengine.dns.records import Record

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


class BadDomain(ValueError):
    """A name that cannot be asked about; the text says why."""


def normalise_domain(domain: str) -> str:
    """``Example.TEST.`` -> ``example.test``; U-labels become A-labels (IDNA)."""
    name = domain.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise BadDomain(f"{domain!r} is not a valid domain name") from None
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise BadDomain(f"{domain!r} is not a valid domain name")
    return name


def address_literal(domain: str) -> str | None:
    """The IP of an RFC 5321 §4.1.3 address literal (``[192.0.2.1]``, ``[IPv6:...]``)."""
    text = domain.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    inner = text[1:-1]
    if inner.lower().startswith("ipv6:"):
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None


def order_targets(targets: Iterable[Target], rng: random.Random) -> tuple[Target, ...]:
    """Lowest preference first; equal preferences in random order (RFC 5321 §5.1)."""
    ordered: list[Target] = []
    for _, group in groupby(sorted(targets, key=lambda t: t.preference), lambda t: t.preference):
        same = list(group)
        rng.shuffle(same)
        ordered.extend(same)
    return tuple(ordered)


def bypass_destination(domain: str, entries: Sequence[BypassEntry]) -> Destination:
    """MX bypass lines as targets, in file order; the port only when the line has one."""
    targets = tuple(
        Target(preference=i, host=e.host, addresses=(e.ip,), port=e.port)
        for i, e in enumerate(entries)
    )
    return Destination(domain, targets, source="bypass")


def literal_destination(domain: str, ip: str) -> Destination:
    return Destination(domain, (Target(0, domain, (ip,)),), source="literal")


def is_null_mx(mx: Sequence[Record]) -> bool:
    """RFC 7505: a single MX with exchange "." says the domain takes no mail."""
    return bool(mx) and all(r.data == "" for r in mx)


def mail_hosts(mx: Iterable[Record]) -> list[tuple[int, str]]:
    """(preference, host) of each MX, without repeats and without null exchanges."""
    return list(dict.fromkeys((r.preference, r.data) for r in mx if r.data))


def failed(domain: str, why: str, *, permanent: bool) -> DNSFailure:
    return DNSFailure(domain, permanent, f"DNS lookup failed: {why}")


def no_usable_host(domain: str, problems: Sequence[str]) -> DNSFailure:
    """Every MX host lacked addresses: transient (the hosts' DNS may be fixed)."""
    n, why = len(problems), "; ".join(problems)
    if n == 1:
        return failed(
            domain, f"the mail server of {domain} has no address ({why})", permanent=False
        )
    return failed(
        domain, f"none of the {n} mail servers of {domain} has an address ({why})", permanent=False
    )


def describe_destination(dest: Destination) -> str:
    """The manual's transcript words (§4): ``found 2 acceptable mail servers for ...``."""
    hosts = ", ".join(
        f"{t.preference} {t.host} [{' '.join(t.addresses)}]"
        + (f":{t.port}" if t.port is not None else "")
        for t in dest.targets
    )
    return (
        f"DNS lookup succeeded, found {len(dest.targets)} acceptable mail servers for "
        f"{dest.domain} ({dest.source}): {hosts}"
    )
