"""IP lists as the manual writes them: single addresses, ``a-b`` ranges, CIDR, and ``0``."""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Iterator

import attrs

# Expanding a range into listen addresses is only sane for small ranges.
MAX_EXPANDED_ADDRESSES = 1024
MAX_REMEMBERED_ADDRESSES = 4096  # answers kept per list (peers asked about again)


class IPRangeError(ValueError):
    """An entry of an IP list that is not an address, a range, CIDR or ``0``."""


@attrs.frozen
class IPRanges:
    """A parsed IP list; ``has_zero`` records the manual's special entry ``0``.

    What ``0`` means depends on the setting (relay IPs: everyone; web
    interface IP: web admin off), so the list only records that it was there.
    """

    entries: tuple[str, ...] = ()
    has_zero: bool = False
    _starts: tuple[tuple[int, int], ...] = ()
    _ends: tuple[tuple[int, int], ...] = ()
    # address -> in the list: a session's peer is asked about at every RCPT TO
    _seen: dict[str, bool] = attrs.field(factory=dict, init=False, eq=False, repr=False)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str) or not self._starts:
            return False
        seen = self._seen.get(address)
        if seen is None:
            if len(self._seen) >= MAX_REMEMBERED_ADDRESSES:
                self._seen.clear()
            seen = self._seen[address] = self._contains(address)
        return seen

    def _contains(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        key = (ip.version, int(ip))
        i = bisect.bisect_right(self._starts, key) - 1
        return i >= 0 and key <= self._ends[i]

    def __bool__(self) -> bool:
        return bool(self.entries)

    def addresses(self) -> list[str]:
        """Every address the list names (for listening); ranges are expanded."""
        out: list[str] = []
        for start, end in zip(self._starts, self._ends, strict=True):
            if end[1] - start[1] >= MAX_EXPANDED_ADDRESSES:
                raise IPRangeError("range too large to listen on each address")
            make = ipaddress.IPv4Address if start[0] == 4 else ipaddress.IPv6Address
            out.extend(str(make(n)) for n in range(start[1], end[1] + 1))
        return out


def _parse_one(entry: str) -> tuple[tuple[int, int], tuple[int, int]]:
    text = entry.strip()
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            return (net.version, int(net.network_address)), (
                net.version,
                int(net.broadcast_address),
            )
        if "-" in text:
            first, _, last = text.partition("-")
            a = ipaddress.ip_address(first.strip())
            b = ipaddress.ip_address(last.strip())
            if a.version != b.version:
                raise IPRangeError(f"{entry!r}: range mixes IPv4 and IPv6")
            if int(b) < int(a):
                raise IPRangeError(f"{entry!r}: range ends before it starts")
            return (a.version, int(a)), (b.version, int(b))
        ip = ipaddress.ip_address(text)
        return (ip.version, int(ip)), (ip.version, int(ip))
    except ValueError as exc:
        if isinstance(exc, IPRangeError):
            raise
        raise IPRangeError(
            f"{entry!r} is not an IP address, a range like 10.0.0.1-10.0.0.9, CIDR like "
            "10.0.0.0/24, or 0"
        ) from None


def parse_ip_ranges(entries: Iterable[str]) -> IPRanges:
    """Parse a list of entries; raises IPRangeError naming the first bad one."""
    kept: list[str] = []
    spans: list[tuple[tuple[int, int], tuple[int, int]]] = []
    has_zero = False
    for raw in entries:
        entry = str(raw).strip()
        if not entry:
            continue
        kept.append(entry)
        if entry == "0":
            has_zero = True
            continue
        spans.append(_parse_one(entry))
    spans.sort()
    merged: list[list[tuple[int, int]]] = []
    for start, end in spans:
        if merged and merged[-1][1][0] == start[0] and start[1] <= merged[-1][1][1] + 1:
            if end > merged[-1][1]:
                merged[-1][1] = end
        else:
            merged.append([start, end])
    return IPRanges(
        entries=tuple(kept),
        has_zero=has_zero,
        starts=tuple(m[0] for m in merged),
        ends=tuple(m[1] for m in merged),
    )


def iter_bad_entries(entries: Iterable[str]) -> Iterator[str]:
    """Yield one message per bad entry (for config validation, which reports all)."""
    for raw in entries:
        entry = str(raw).strip()
        if not entry or entry == "0":
            continue
        try:
            _parse_one(entry)
        except IPRangeError as exc:
            yield str(exc)
