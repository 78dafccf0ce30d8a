"""What the resolver answers, and the one small interface the delivery engine uses (pure).

The resolver knows nothing of SMTP; the delivery engine knows nothing of DNS
beyond this file. Tests of the delivery engine use ``StaticResolver``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import attrs
from twisted.internet import defer


@attrs.frozen
class Target:
    """One mail server of a domain: MX preference, host name, its addresses, port.

    ``port`` is None unless a bypass line named one; the delivery engine then
    dials ``[smtp_out] remote_port``.
    """

    preference: int
    host: str
    addresses: tuple[str, ...]
    port: int | None = None


@attrs.frozen
class Destination:
    """Where mail for ``domain`` goes: targets in the order to try them."""

    domain: str
    targets: tuple[Target, ...]
    # "dns", "implicit" (no MX: the domain's A/AAAA), "bypass", "literal" ([192.0.2.1])
    source: str = "dns"


@attrs.frozen
class DNSFailure:
    """No usable answer; ``permanent`` (NXDOMAIN, null MX) or transient (timeout,
    SERVFAIL, refused). ``reason`` is fit to quote in a DSN."""

    domain: str
    permanent: bool
    reason: str
    # When the answers behind it leave the cache: a lookup before then gets the same
    # failure (None: not known, e.g. a bypass entry or a fake resolver). Not part of
    # what the failure is: the same failure asked later is kept until the same time.
    until: float | None = attrs.field(default=None, eq=False)


Resolution = Destination | DNSFailure


class MXResolver(Protocol):
    """``resolve(domain)`` fires with a Resolution; it never errbacks."""

    def resolve(self, domain: str) -> defer.Deferred[Resolution]: ...


class StaticResolver:
    """A fake MXResolver over a fixed table (tests of the delivery engine)."""

    def __init__(self, table: Mapping[str, Resolution]) -> None:
        self.table = dict(table)
        self.queries: list[str] = []

    def resolve(self, domain: str) -> defer.Deferred[Resolution]:
        self.queries.append(domain)
        answer = self.table.get(domain.lower())
        if answer is None:
            answer = DNSFailure(domain, True, f"DNS lookup failed: {domain} does not exist")
        return defer.succeed(answer)
