"""A small authoritative DNS server for tests: a zone of MX/A/AAAA/CNAME records with
TTLs, names that fail on purpose, and a count of every query it was asked.

In-process (pytest-twisted):  the ``dns_server`` fixture, or ``DNSTestServer(zone).start()``.
As a subprocess (system tests):  ``python -m tests.dnsserver --zone FILE [--port 0]``
prints ``listening on 127.0.0.1:PORT`` and then ``query NAME KIND`` per query;
``DNSServerProcess`` starts it, waits for readiness and reads the queries back.
The zone file is re-read when it changes, so a test can change answers mid-run.

Zone text, one record per line (``#`` starts a comment; names without the final dot)::

    example.test      300 MX    10 mx1.example.test
    mx1.example.test  300 A     127.0.0.5
    mx1.example.test  300 AAAA  ::1
    alias.test        300 CNAME example.test
    nullmx.test       300 MX    0 .
    s1._domainkey.example.test 300 TXT v=DKIM1; k=ed25519; p=...   # the rest of the line
    example.test      300 SOA   60        # negative answers under example.test: TTL min(300, 60)
    broken.test       SERVFAIL            # also REFUSED, and SILENT (never answers)
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import attrs
import pytest_twisted
from twisted.internet import defer, protocol
from twisted.internet.error import CannotListenError
from twisted.names import dns, server

from tests.harness import REPO, subprocess_env, wait_for

FAILURES = ("SERVFAIL", "REFUSED", "SILENT")
_RCODES = {"OK": dns.OK, "NXDOMAIN": dns.ENAME, "SERVFAIL": dns.ESERVER, "REFUSED": dns.EREFUSED}
UDP_PAYLOAD_BYTES = 512  # RFC 1035 §4.2.1: larger answers are truncated; the client retries on TCP


@attrs.frozen
class ZoneRecord:
    name: str
    kind: str  # MX, A, AAAA, CNAME, SOA, TXT
    ttl: int
    data: str  # MX: exchange ("" = null MX); A/AAAA: address; CNAME: target; TXT: text; SOA: ""
    number: int = 0  # MX: preference; SOA: minimum


@attrs.frozen
class Reply:
    rcode: str  # OK, NXDOMAIN, SERVFAIL, REFUSED, SILENT
    answers: tuple[ZoneRecord, ...] = ()
    authority: tuple[ZoneRecord, ...] = ()
    additional: tuple[ZoneRecord, ...] = ()


def _name(text: str) -> str:
    return text.rstrip(".").lower()


class Zone:
    """Records by owner name; answers as an authoritative server would."""

    def __init__(self, *, with_additional: bool = True, chase_cnames: bool = True) -> None:
        self.records: dict[str, list[ZoneRecord]] = {}
        self.failures: dict[str, str] = {}
        self.with_additional = with_additional
        self.chase_cnames = chase_cnames
        self.queries: list[tuple[str, str]] = []

    # -- filling -----------------------------------------------------------------

    def add(self, record: ZoneRecord) -> Zone:
        self.records.setdefault(record.name, []).append(record)
        return self

    def mx(self, name: str, preference: int, host: str, ttl: int = 300) -> Zone:
        return self.add(ZoneRecord(_name(name), "MX", ttl, _name(host), preference))

    def address(self, name: str, *addresses: str, ttl: int = 300) -> Zone:
        for a in addresses:
            kind = "AAAA" if ipaddress.ip_address(a).version == 6 else "A"
            self.add(ZoneRecord(_name(name), kind, ttl, a))
        return self

    def cname(self, name: str, target: str, ttl: int = 300) -> Zone:
        return self.add(ZoneRecord(_name(name), "CNAME", ttl, _name(target)))

    def txt(self, name: str, text: str, ttl: int = 300) -> Zone:
        return self.add(ZoneRecord(_name(name), "TXT", ttl, text))

    def soa(self, name: str, minimum: int, ttl: int = 300) -> Zone:
        return self.add(ZoneRecord(_name(name), "SOA", ttl, "", minimum))

    def fail(self, name: str, how: str) -> Zone:
        assert how in FAILURES, how
        self.failures[_name(name)] = how
        return self

    def clear(self) -> None:
        self.records.clear()
        self.failures.clear()

    def load_text(self, text: str) -> Zone:
        for number, line in enumerate(text.splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            try:
                if len(fields) > 3 and fields[2].upper() == "TXT":
                    # The text is the rest of the line, spaces and all.
                    text = line.split("#", 1)[0].split(None, 3)[3].strip()
                    self.txt(fields[0], text, int(fields[1]))
                    continue
                self._load_line(fields)
            except (ValueError, IndexError, AssertionError):
                raise ValueError(f"zone line {number}: cannot read {line!r}") from None
        return self

    def _load_line(self, fields: list[str]) -> None:
        name = fields[0]
        if len(fields) == 2:
            self.fail(name, fields[1].upper())
            return
        ttl, kind, rest = int(fields[1]), fields[2].upper(), fields[3:]
        if kind == "MX":
            self.mx(name, int(rest[0]), "" if rest[1] == "." else rest[1], ttl)
        elif kind in ("A", "AAAA"):
            self.address(name, rest[0], ttl=ttl)
        elif kind == "CNAME":
            self.cname(name, rest[0], ttl)
        elif kind == "SOA":
            self.soa(name, int(rest[-1]), ttl)
        else:
            raise ValueError(kind)

    # -- counting ----------------------------------------------------------------

    def count(self, name: str | None = None, kind: str | None = None) -> int:
        return sum(
            1
            for n, k in self.queries
            if (name is None or n == _name(name)) and (kind is None or k == kind)
        )

    # -- answering ---------------------------------------------------------------

    def _soa_for(self, name: str) -> tuple[ZoneRecord, ...]:
        labels = name.split(".")
        for i in range(len(labels)):
            found = [r for r in self.records.get(".".join(labels[i:]), []) if r.kind == "SOA"]
            if found:
                return (found[0],)
        return ()

    def _additional(self, answers: list[ZoneRecord]) -> tuple[ZoneRecord, ...]:
        if not self.with_additional:
            return ()
        hosts = [r.data for r in answers if r.kind == "MX" and r.data]
        return tuple(r for h in hosts for r in self.records.get(h, []) if r.kind in ("A", "AAAA"))

    def reply(self, name: str, kind: str) -> Reply:
        answers: list[ZoneRecord] = []
        current = name
        for _ in range(16):
            if current in self.failures:
                return Reply(self.failures[current])
            records = self.records.get(current)
            if not records:
                return Reply("NXDOMAIN", tuple(answers), self._soa_for(current))
            cnames = [r for r in records if r.kind == "CNAME"]
            if cnames and kind != "CNAME":
                answers.append(cnames[0])
                if not self.chase_cnames:
                    return Reply("OK", tuple(answers))
                current = cnames[0].data
                continue
            matching = [r for r in records if r.kind == kind]
            answers.extend(matching)
            if not matching:
                return Reply("OK", tuple(answers), self._soa_for(current))
            return Reply("OK", tuple(answers), (), self._additional(matching))
        return Reply("SERVFAIL")


def _rr(record: ZoneRecord) -> dns.RRHeader:
    payload: Any
    if record.kind == "MX":
        payload = dns.Record_MX(record.number, record.data.encode(), ttl=record.ttl)
    elif record.kind == "A":
        payload = dns.Record_A(record.data, ttl=record.ttl)
    elif record.kind == "AAAA":
        payload = dns.Record_AAAA(record.data, ttl=record.ttl)
    elif record.kind == "CNAME":
        payload = dns.Record_CNAME(record.data.encode(), ttl=record.ttl)
    elif record.kind == "TXT":
        # One TXT record of several strings of at most 255 bytes (RFC 1035 §3.3.14),
        # as a DKIM RSA-2048 key must be published.
        text = record.data.encode()
        payload = dns.Record_TXT(
            *[text[i : i + 255] for i in range(0, len(text), 255)], ttl=record.ttl
        )
    else:
        payload = dns.Record_SOA(
            mname=b"ns." + record.name.encode(),
            rname=b"hostmaster." + record.name.encode(),
            minimum=record.number,
            ttl=record.ttl,
        )
    return dns.RRHeader(record.name.encode(), payload.TYPE, dns.IN, record.ttl, payload, auth=True)


class ZoneServerFactory(server.DNSServerFactory):
    """Answers from a Zone; counts queries; truncates big UDP answers like real servers."""

    def __init__(self, zone: Zone, on_query: Callable[[str, str], None] | None = None) -> None:
        super().__init__()
        self.zone = zone
        self.on_query = on_query

    def handleQuery(self, message: dns.Message, protocol: Any, address: Any) -> None:
        query = message.queries[0]
        name = _name(query.name.name.decode("ascii", "replace"))
        kind = dns.QUERY_TYPES.get(query.type, str(query.type))
        self.zone.queries.append((name, kind))
        if self.on_query is not None:
            self.on_query(name, kind)
        reply = self.zone.reply(name, kind)
        if reply.rcode == "SILENT":
            return
        response = self._responseFromMessage(
            message=message,
            rCode=_RCODES[reply.rcode],
            answers=[_rr(r) for r in reply.answers],
            authority=[_rr(r) for r in reply.authority],
            additional=[_rr(r) for r in reply.additional],
        )
        if address is not None and len(response.toStr()) > UDP_PAYLOAD_BYTES:
            response.answers, response.authority, response.additional = [], [], []
            response.trunc = 1
        self.sendReply(protocol, response, address)


class DNSTestServer:
    """UDP and TCP on one loopback port, answering from ``zone``."""

    def __init__(
        self,
        zone: Zone | None = None,
        host: str = "127.0.0.1",
        on_query: Callable[[str, str], None] | None = None,
    ) -> None:
        self.zone = zone if zone is not None else Zone()
        self.host = host
        self.factory = ZoneServerFactory(self.zone, on_query)
        self.factory.noisy = False
        self.port = 0
        self._listening: list[Any] = []

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def spec(self) -> str:
        """As ``[dns] servers`` spells it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self, port: int = 0) -> DNSTestServer:
        from twisted.internet import reactor

        for _ in range(50):  # the TCP twin of a random UDP port is almost always free
            udp = reactor.listenUDP(  # type: ignore[attr-defined]
                port, dns.DNSDatagramProtocol(self.factory), interface=self.host
            )
            try:
                tcp = reactor.listenTCP(  # type: ignore[attr-defined]
                    udp.getHost().port, self.factory, interface=self.host
                )
            except CannotListenError:
                udp.stopListening()
                if port:
                    raise
                continue
            self._listening = [udp, tcp]
            self.port = udp.getHost().port
            return self
        raise RuntimeError("no free UDP+TCP port pair")

    def stop(self) -> defer.Deferred[Any]:
        for proto in list(self.factory.connections):
            proto.transport.loseConnection()
        listening, self._listening = self._listening, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in listening])


class SilentServer:
    """A UDP socket that never answers: every query to it times out."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        from twisted.internet import reactor

        self.port_obj = reactor.listenUDP(  # type: ignore[attr-defined]
            0, protocol.DatagramProtocol(), interface=host
        )
        self.host = host
        self.port = self.port_obj.getHost().port

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def stop(self) -> defer.Deferred[Any]:
        return defer.maybeDeferred(self.port_obj.stopListening)


@pytest_twisted.async_yield_fixture()
async def dns_server() -> Any:
    """An in-process DNSTestServer with an empty zone (fill ``dns_server.zone``)."""
    started = DNSTestServer().start()
    yield started
    await started.stop()


# -- as a subprocess -------------------------------------------------------------


class DNSServerProcess:
    """``python -m tests.dnsserver`` for system tests; the zone is a file you may rewrite."""

    def __init__(self, zone_path: str, host: str = "127.0.0.1", *args: str) -> None:
        self.zone_path = str(zone_path)
        self.host = host
        self.args = args
        self.port = 0
        self.out_path = self.zone_path + ".out"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def spec(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def output(self) -> str:
        try:
            with open(self.out_path, encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def start(self) -> DNSServerProcess:
        argv = [sys.executable, "-m", "tests.dnsserver", "--zone", self.zone_path]
        argv += ["--host", self.host, *self.args]
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=subprocess_env(), cwd=REPO
            )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"dns server exited:\n{self.output()}")
            return "listening on " in self.output()

        wait_for(ready, what="the test DNS server to listen")
        first = self.output().split("listening on ", 1)[1].split()[0]
        self.port = int(first.rsplit(":", 1)[1])
        return self

    def queries(self) -> list[tuple[str, str]]:
        lines = [line.split() for line in self.output().splitlines()]
        return [(f[1], f[2]) for f in lines if len(f) == 3 and f[0] == "query"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def __enter__(self) -> DNSServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _ZoneFile:
    """Re-reads the zone file when its modification time changes."""

    def __init__(self, path: str, zone: Zone) -> None:
        self.path, self.zone, self.mtime = path, zone, -1

    def refresh(self) -> None:
        mtime = os.stat(self.path).st_mtime_ns
        if mtime != self.mtime:
            with open(self.path, encoding="utf-8") as fh:
                text = fh.read()
            self.zone.clear()
            self.zone.load_text(text)
            self.mtime = mtime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zone", required=True, help="zone text file (see the module doc)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--no-additional", action="store_true", help="empty additional section")
    parser.add_argument("--no-chase", action="store_true", help="answer CNAMEs without target")
    opts = parser.parse_args(argv)
    from twisted.internet import reactor

    zone = Zone(with_additional=not opts.no_additional, chase_cnames=not opts.no_chase)
    zone_file = _ZoneFile(opts.zone, zone)
    zone_file.refresh()

    def on_query(name: str, kind: str) -> None:
        zone_file.refresh()
        print(f"query {name} {kind}", flush=True)

    srv = DNSTestServer(zone, opts.host, on_query).start(opts.port)
    print(f"listening on {srv.spec}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
