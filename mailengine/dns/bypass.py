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


def split_address(text: str) -> tuple[str, str | None]:
    """``ip``, ``ip:port``, ``[v6]`` or ``[v6]:port`` -> (address, port text or None).

    Only the shape is checked (ValueError for text after ``]`` that is no port);
    callers validate the address and the port with their own messages.
    """
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError(text)
        return host, rest[1:]
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port
    return text, None


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
    try:
        ip, port_text = split_address(address)
    except ValueError:
        raise BypassError(f"{line!r}: bad port") from None
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit():
            raise BypassError(f"{line!r}: bad port {port_text!r}")
        port = int(port_text)
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
