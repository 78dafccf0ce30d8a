"""The ``nameserver`` lines of resolv.conf(5), for an empty ``[dns] servers`` (pure)."""

from __future__ import annotations

import ipaddress

DNS_PORT = 53
# resolv.conf(5): with no nameserver line the resolver asks the local machine.
DEFAULT_NAMESERVER = ("127.0.0.1", DNS_PORT)


def parse_resolv_conf(text: str) -> list[tuple[str, int]]:
    """(ip, 53) for each valid ``nameserver`` line, in file order."""
    servers: list[tuple[str, int]] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        address = fields[1].split("%", 1)[0]  # fe80::1%eth0: the scope is for the kernel
        try:
            ipaddress.ip_address(address)
        except ValueError:
            continue
        servers.append((address, DNS_PORT))
    return servers or [DEFAULT_NAMESERVER]
