"""Asking one set of DNS servers, through twisted.names ``client.Resolver`` (shell).

Not ``client.createResolver`` (it appends resolv.conf's servers and has no
working cache) and not ``getHostByName`` (it sends ANY): TWISTED.md §0.10, §0.11.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.internet import base, defer, udp
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.names import client, dns, error
from twisted.python.failure import Failure

from mailengine.dns.records import (
    NXDOMAIN,
    TIMEOUT,
    Answer,
    Record,
    describe_records,
    negative_ttl,
)
from mailengine.dns.resolvconf import parse_resolv_conf

# Seconds to wait for each round over all servers before asking again; after
# the last the lookup is a timeout (a transient failure). 14 s per server.
QUERY_TIMEOUT_SECONDS = (2.0, 4.0, 8.0)

log = Logger(namespace="mailengine.dns")

QUERY_TYPES = {"MX": dns.MX, "A": dns.A, "AAAA": dns.AAAA, "CNAME": dns.CNAME}

_RCODE_ERRORS: dict[type[Exception], str] = {
    error.DNSNameError: NXDOMAIN,
    error.DNSServerError: "SERVFAIL",
    error.DNSQueryRefusedError: "REFUSED",
    error.DNSFormatError: "FORMERR",
    error.DNSNotImplementedError: "NOTIMP",
}


def system_nameservers(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """The nameservers of resolv.conf, read once (an empty ``[dns] servers``)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        text = ""
    return parse_resolv_conf(text)


def _text(name: bytes) -> str:
    return name.decode("ascii", "replace").rstrip(".").lower()


def record_from(rr: dns.RRHeader) -> Record | None:
    """Our Record for an MX, A, AAAA or CNAME resource record; None for others."""
    owner, payload = _text(rr.name.name), cast(Any, rr.payload)
    if rr.type == dns.MX:
        return Record(owner, "MX", rr.ttl, _text(payload.name.name), payload.preference)
    if rr.type == dns.A:
        return Record(owner, "A", rr.ttl, payload.dottedQuad())
    if rr.type == dns.AAAA:
        return Record(owner, "AAAA", rr.ttl, socket.inet_ntop(socket.AF_INET6, payload.address))
    if rr.type == dns.CNAME:
        return Record(owner, "CNAME", rr.ttl, _text(payload.name.name))
    return None


def _records(rrs: Sequence[dns.RRHeader], kinds: Sequence[str]) -> tuple[Record, ...]:
    found = (record_from(rr) for rr in rrs)
    return tuple(r for r in found if r is not None and r.kind in kinds)


def _negative_ttl(authority: Sequence[dns.RRHeader]) -> int | None:
    for rr in authority:
        if rr.type == dns.SOA:
            return negative_ttl(rr.ttl, cast(Any, rr.payload).minimum)
    return None


def answer_from_sections(name: str, kind: str, sections: Any) -> Answer:
    answers, authority, additional = sections
    return Answer(
        name,
        kind,
        records=_records(answers, (kind, "CNAME")),
        additional=_records(additional, ("A", "AAAA")),
        negative_ttl=_negative_ttl(authority),
    )


def answer_from_failure(name: str, kind: str, failure: Failure) -> Answer:
    """An rcode or a timeout as an Answer; anything else is our bug and re-raised."""
    if failure.check(defer.TimeoutError, error.DNSQueryTimeoutError):
        return Answer(name, kind, error=TIMEOUT)
    # twisted.names raises these with the response Message as the first argument.
    args: Any = getattr(failure.value, "args", ())
    message = args[0] if args else None
    for exc_type, code in _RCODE_ERRORS.items():
        if failure.check(exc_type):
            authority = getattr(message, "authority", [])
            return Answer(name, kind, error=code, negative_ttl=_negative_ttl(authority))
    if failure.check(error.DNSUnknownError):
        return Answer(name, kind, error=f"rcode {getattr(message, 'rCode', '?')}")
    failure.raiseException()
    raise AssertionError("unreachable")


class _QuietUDPPort(udp.Port):
    """udp.Port without its unconditional "starting on N" / "(UDP Port N Closed)"
    log lines: twisted.names opens one socket per query (a random source port,
    RFC 5452), which would put four lines of noise in the log per DNS query."""

    def _bindSocket(self) -> None:
        try:
            skt = self.createInternetSocket()
            skt.bind((self.interface, self.port))
        except OSError as exc:
            raise CannotListenError(self.interface, self.port, exc) from exc
        self._realPortNumber = skt.getsockname()[1]
        self.connected = 1
        self.socket = skt
        self.fileno = skt.fileno  # type: ignore[method-assign]

    def connectionLost(self, reason: Any = None) -> None:
        self._realPortNumber = None
        self.maxThroughput = -1
        base.BasePort.connectionLost(self, reason)
        self.protocol.doStop()
        self.socket.close()
        del self.socket
        del self.fileno


class _QuietReactor:
    """The reactor as client.Resolver sees it: its per-query UDP sockets are quiet."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> udp.Port:
        protocol.noisy = False  # no "Starting protocol" / "Stopping protocol" either
        listening = _QuietUDPPort(port, protocol, interface, maxPacketSize, self._reactor)
        listening.startListening()
        return listening


class Nameservers:
    """One list of DNS servers (``[dns] servers`` or an NS bypass line), asked in order."""

    def __init__(
        self,
        servers: Sequence[tuple[str, int]],
        reactor: Any,
        timeout: Sequence[float] = QUERY_TIMEOUT_SECONDS,
        is_debug: Callable[[], bool] = lambda: False,
    ) -> None:
        self.servers = list(servers)
        self.label = ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.servers)
        self._is_debug = is_debug
        # resolv=None: exactly these servers, no resolv.conf, no re-read timer.
        if hasattr(reactor, "addReader"):  # a real reactor (tests may pass a fake)
            reactor = _QuietReactor(reactor)
        self._client = client.Resolver(
            servers=self.servers, timeout=tuple(timeout), reactor=reactor
        )

    def query(self, name: str, kind: str) -> defer.Deferred[Answer]:
        """Fires with an Answer (errors included); errbacks only on our own bugs."""
        if self._is_debug():
            log.info(
                "DNS query {name} {kind} to {servers}", name=name, kind=kind, servers=self.label
            )
        d = self._client.query(dns.Query(name, QUERY_TYPES[kind]))
        d.addCallbacks(
            lambda sections: answer_from_sections(name, kind, sections),
            lambda failure: answer_from_failure(name, kind, failure),
        )
        d.addCallback(self._answered)
        return d

    def _answered(self, answer: Answer) -> Answer:
        if self._is_debug():
            log.info(
                "DNS answer {name} {kind} from {servers}: {records}",
                name=answer.name,
                kind=answer.kind,
                servers=self.label,
                records=describe_records(answer),
            )
        return answer

    def close(self) -> None:
        """Close TCP connections left open by truncated answers (UDP ports close per query)."""
        for protocol in list(self._client.connections):
            protocol.transport.loseConnection()
