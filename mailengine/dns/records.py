"""DNS answers reduced to what mail routing needs, and what they mean (pure).

The shell (``nameservers.py``) turns twisted.names messages into these values;
everything here is plain data and decisions on it.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

# A CNAME chain longer than this is treated as broken (RFC 1034 §3.6.2 chains
# are short; resolvers commonly stop at 8 to 16 hops).
MAX_CNAME_HOPS = 8

ADDRESS_KINDS = ("A", "AAAA")

# Answer.error values, and the words a DSN quotes for them.
NXDOMAIN = "NXDOMAIN"
TIMEOUT = "timeout"
CNAME_LOOP = "CNAME loop"
_ERROR_TEXT = {
    CNAME_LOOP: f"a CNAME chain longer than {MAX_CNAME_HOPS} or looping",
    NXDOMAIN: "does not exist (NXDOMAIN)",
    TIMEOUT: "no answer from the DNS server (timeout)",
    "SERVFAIL": "the DNS server failed (SERVFAIL)",
    "REFUSED": "the DNS server refused the query (REFUSED)",
    "FORMERR": "the DNS server could not parse the query (FORMERR)",
    "NOTIMP": "the DNS server does not implement the query (NOTIMP)",
}


@attrs.frozen
class Record:
    """One resource record: MX (``preference``, ``data`` = exchange), A/AAAA
    (``data`` = address text) or CNAME (``data`` = target). Names are lower case
    without the trailing dot; a null MX has ``data == ""``."""

    name: str
    kind: str
    ttl: int
    data: str
    preference: int = 0


@attrs.frozen
class Answer:
    """What one query (name, kind) got back: records, or why not.

    ``records`` is the answer section (CNAMEs included), ``additional`` the
    A/AAAA records of the additional section. ``error`` is "" for an answer
    (NODATA when no record fits), ``NXDOMAIN``, a transient rcode name or
    ``timeout``. ``negative_ttl`` comes from the SOA of a negative answer.
    """

    name: str
    kind: str
    records: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    error: str = ""
    negative_ttl: int | None = None

    @property
    def is_permanent_failure(self) -> bool:
        return self.error == NXDOMAIN

    @property
    def is_transient_failure(self) -> bool:
        return bool(self.error) and self.error != NXDOMAIN

    def describe_error(self) -> str:
        """``example.test does not exist (NXDOMAIN)``: fit for a DSN."""
        text = _ERROR_TEXT.get(self.error, f"DNS error {self.error}")
        if self.error == NXDOMAIN:
            return f"{self.name} {text}"
        return f"{text} for {self.name} {self.kind}"


def negative_ttl(soa_ttl: int, soa_minimum: int) -> int:
    """RFC 2308 §5: a negative answer lives min(SOA TTL, SOA MINIMUM)."""
    return min(soa_ttl, soa_minimum)


@attrs.frozen
class Chase:
    """Where a CNAME chain inside one answer ends, and the wanted records there."""

    name: str
    records: tuple[Record, ...]
    hops: int = 0  # CNAMEs followed so far, this answer's and earlier ones
    is_broken: bool = False  # a loop or more than MAX_CNAME_HOPS


def follow_cnames(answer: Answer, name: str, kind: str, hops: int = 0) -> Chase:
    """Follow CNAMEs from ``name`` through ``answer``'s records (RFC 1034 §3.6.2).

    ``hops`` counts the CNAMEs already followed in earlier answers, so a chain
    split across re-queries stays bounded too.
    """
    cnames = {r.name: r.data for r in answer.records if r.kind == "CNAME"}
    seen = {name}
    while name in cnames:
        name = cnames[name]
        hops += 1
        if name in seen or hops > MAX_CNAME_HOPS:
            return Chase(name, (), hops, is_broken=True)
        seen.add(name)
    wanted = tuple(r for r in answer.records if r.kind == kind and r.name == name)
    return Chase(name, wanted, hops)


def addresses_of(host: str, records: Iterable[Record]) -> tuple[str, ...]:
    """``host``'s A addresses, then its AAAA addresses, without repeats."""
    found = [r for r in records if r.name == host and r.kind in ADDRESS_KINDS]
    found.sort(key=lambda r: ADDRESS_KINDS.index(r.kind))
    return tuple(dict.fromkeys(r.data for r in found))


def describe_records(answer: Answer) -> str:
    """One line for the DNS debug log: ``10 mx1.example.test (300 s), ...``."""
    if answer.error:
        return answer.error
    parts = []
    for r in answer.records:
        shown = f"{r.preference} {r.data or '.'}" if r.kind == "MX" else r.data
        if r.kind != answer.kind:
            shown = f"{r.kind} {shown}"
        parts.append(f"{shown} ({r.ttl} s)")
    if answer.additional:
        extra = ", ".join(f"{r.name} {r.kind} {r.data}" for r in answer.additional)
        parts.append(f"additional: {extra}")
    return ", ".join(parts) or "no records (NODATA)"
