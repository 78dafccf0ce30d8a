"""The manual's DNS bypass table: ``domain,host,MX|NS,ip[:port]`` lines (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import attrs


class BypassError(ValueError):
    """A bypass line that does not parse; the text quotes the line."""


@attrs.frozen
class BypassEntry:
    """One line: MX pins ``domain``'s mail to ``host``/``ip``; NS asks ``ip`` about it."""

    domain: str
    host: str
    kind: str  # "MX" or "NS"
    ip: str
    port: int | None  # None: MX -> the configured remote port; NS -> 53


def parse_bypass_line(line: str) -> BypassEntry:
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 4:
        raise BypassError(f"{line!r} does not have 4 comma-separated fields")
    domain, host, kind, address = parts
    domain = domain.lstrip("@").rstrip(".").lower()
    host = host.rstrip(".").lower()
    kind = kind.upper()
    if not domain or " " in domain:
        raise BypassError(f"{line!r}: bad domain")
    if not host or " " in host:
        raise BypassError(f"{line!r}: bad host name")
    if kind not in ("MX", "NS"):
        raise BypassError(f"{line!r}: type must be MX or NS, not {parts[2]!r}")
    port: int | None = None
    ip = address
    if address.startswith("["):
        ip, _, rest = address[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise BypassError(f"{line!r}: bad port")
            port = int(rest[1:])
    elif address.count(":") == 1:
        ip, _, p = address.partition(":")
        if not p.isdigit():
            raise BypassError(f"{line!r}: bad port {p!r}")
        port = int(p)
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise BypassError(f"{line!r}: {ip!r} is not an IP address") from None
    if port is not None and not 0 < port < 65536:
        raise BypassError(f"{line!r}: port {port} out of range")
    return BypassEntry(domain=domain, host=host, kind=kind, ip=ip, port=port)


@attrs.frozen
class BypassTable:
    """Lookups over parsed lines: MX pins by exact domain; NS by domain or parent."""

    entries: tuple[BypassEntry, ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[BypassEntry]) -> BypassTable:
        return cls(tuple(entries))

    def mx_for(self, domain: str) -> list[BypassEntry]:
        """MX lines for exactly this domain, in file order (several = several hosts)."""
        name = domain.rstrip(".").lower()
        return [e for e in self.entries if e.kind == "MX" and e.domain == name]

    def nameserver_for(self, name: str) -> BypassEntry | None:
        """The NS line covering ``name`` or its nearest parent domain, if any."""
        labels = name.rstrip(".").lower().split(".")
        for i in range(len(labels)):
            suffix = ".".join(labels[i:])
            for e in self.entries:
                if e.kind == "NS" and e.domain == suffix:
                    return e
        return None
