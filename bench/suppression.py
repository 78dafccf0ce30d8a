"""Suppression-list lookups at RCPT TO with a big list (issue 12: 10 million entries).

    python bench/suppression.py [--entries 10000000] [--lookups 200000] [--keep DIR]

Builds ``suppression.sqlite`` with ``--entries`` addresses (the engine's own
schema and writer), then measures on this (one) thread, as the reactor runs
them: ``SuppressionList.lookup`` alone (half hits, half misses, random order),
and whole ``RCPT TO`` commands through the engine's SMTP protocol (in memory,
no sockets) with the list checked and with checking off. Prints lookups and
RCPTs per second and the database's size.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mailengine.queue.suppression import SuppressionList  # noqa: E402


def address(i: int) -> str:
    return f"user{i:09d}@d{i % 997}.bench.test"


def build(path: str, entries: int) -> float:
    """Fill the list through the engine's writer connection (schema, WAL) in big chunks."""
    listing = SuppressionList(path)
    listing.add("seed@bench.test", "seed", "bench", "bench", 0.0)  # schema and WAL
    started = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    chunk = 200_000
    for start in range(0, entries, chunk):
        db.execute("BEGIN")
        db.executemany(
            "INSERT OR IGNORE INTO suppression (address, reason, source, created, by) "
            "VALUES (?, 'bad mailbox: 550 5.1.1 no such user', 'delivery', ?, 'engine')",
            ((address(i), 1.7e9 + i) for i in range(start, min(entries, start + chunk))),
        )
        db.execute("COMMIT")
        print(f"\r  {min(entries, start + chunk):,} entries", end="", flush=True)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    print()
    return time.perf_counter() - started


def lookups_per_second(listing: SuppressionList, entries: int, lookups: int) -> tuple[float, int]:
    rng = random.Random(12)
    probes = [
        address(rng.randrange(entries)) if n % 2 else f"nobody{n}@d{n % 997}.bench.test"
        for n in range(lookups)
    ]
    hits = 0
    started = time.perf_counter()
    for probe in probes:
        if listing.lookup(probe) is not None:
            hits += 1
    return lookups / (time.perf_counter() - started), hits


def rcpts_per_second(root: str, path: str, entries: int, rcpts: int, checked: bool) -> float:
    """RCPT TO through the engine's inbound protocol on a StringTransport."""
    from twisted.internet import task
    from twisted.internet.testing import StringTransport

    from mailengine.config.model import Config
    from mailengine.inbound.server import InboundFactory
    from mailengine.service import build_engine

    config = Config.defaults(os.path.join(root, "config", "mailengine.toml"))
    config.override("suppression", "enabled", checked)
    config.override("smtp_in", "relay_ips", _ranges("127.0.0.1"))
    clock = task.Clock()
    clock.getThreadPool = lambda: None  # type: ignore[attr-defined]
    clock.suggestThreadPoolSize = lambda n: None  # type: ignore[attr-defined]
    engine = build_engine(root, config, clock)
    engine.suppression = SuppressionList(path)
    factory = InboundFactory(engine)
    proto = factory.buildProtocol(_Peer())
    transport = StringTransport(peerAddress=_Peer())
    proto.makeConnection(transport)
    proto.dataReceived(b"EHLO bench.test\r\nMAIL FROM:<s@src.test>\r\n")
    rng = random.Random(7)
    lines = [
        b"RCPT TO:<%s>\r\n" % address(rng.randrange(entries)).encode()
        if n % 2
        else b"RCPT TO:<nobody%d@x.bench.test>\r\n" % n
        for n in range(rcpts)
    ]
    batch = 500  # the protocol takes at most 1000 recipients per transaction
    proto.dataReceived(b"".join(lines[:batch]) + b"RSET\r\nMAIL FROM:<s@src.test>\r\n")
    transport.clear()  # warm: lazy imports and first pages read happen before the clock
    started = time.perf_counter()
    for i in range(0, rcpts, batch):
        proto.dataReceived(b"".join(lines[i : i + batch]))
        proto.dataReceived(b"RSET\r\nMAIL FROM:<s@src.test>\r\n")
        transport.clear()
    elapsed = time.perf_counter() - started
    proto.transport.loseConnection()
    return rcpts / elapsed


def _ranges(text: str):
    from mailengine.policy.ipranges import parse_ip_ranges

    return parse_ip_ranges([text])


class _Peer:
    host = "127.0.0.1"
    port = 40000
    type = "TCP"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--keep", metavar="DIR", help="build (or reuse) the database here")
    args = parser.parse_args()
    workdir = args.keep or tempfile.mkdtemp(prefix="bench-suppression-")
    os.makedirs(os.path.join(workdir, "config"), exist_ok=True)
    path = os.path.join(workdir, "suppression.sqlite")
    if not os.path.exists(path):
        print(f"building {args.entries:,} entries in {path}")
        seconds = build(path, args.entries)
        print(f"  built in {seconds:.0f} s")
    size = os.path.getsize(path) / 1e6
    print(f"database: {size:,.0f} MB")
    listing = SuppressionList(path)
    # The first pass reads the pages it needs from disk; the second finds them in the
    # page cache, as a running engine's lookups mostly do.
    for which in ("first pass", "again"):
        rate, hits = lookups_per_second(listing, args.entries, args.lookups)
        print(f"lookup(), {which}: {rate:>10,.0f} lookups/s ({hits:,} hits of {args.lookups:,})")
    best = {True: 0.0, False: 0.0}
    for checked in (False, True, False, True):  # alternated, best of two: a busy machine
        rate = rcpts_per_second(workdir, path, args.entries, args.lookups // 4, checked)
        best[checked] = max(best[checked], rate)
    for checked in (True, False):
        rate = best[checked]
        print(f"RCPT TO, list {'checked' if checked else 'off    '}: {rate:>10,.0f} RCPTs/s")
    if not args.keep:
        for name in os.listdir(workdir):
            if name.startswith("suppression.sqlite"):
                os.unlink(os.path.join(workdir, name))


if __name__ == "__main__":
    main()
