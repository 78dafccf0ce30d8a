"""A big backlog is no stall: start the engine on a million deferred messages in retry/.

    python bench/backlog.py [--messages 1000000] [--keep]

Writes N deferred messages into retry/ of a temporary root, as the engine leaves
them after a failed attempt (``sendtries=1``, a log line, ``retrytime`` 2 to 48
hours ahead, and the ``.inf`` dated to its retry time: queue/store.py
``date_inf``), plus 1,000 due now for a sink that accepts everything. Then
starts ``twistd -n mailengine`` on loopback ports and, until the backlog is
indexed and 10 s more, opens an SMTP connection every 50 ms and times the
greeting; samples the engine's RSS from /proc meanwhile. Reports greeting
latency (max, 99th percentile, median), time until the first greeting, time
until the backlog was indexed (the first ``retry scan:`` line), time until the
due messages reached the sink, and the peak RSS. Targets: greeting < 200 ms
throughout, indexed < 60 s, RSS < 400 MB. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mailengine.observe.timestamps import format_retry, format_stamp  # noqa: E402
from tests.harness import EngineProcess  # noqa: E402
from tests.sinks import SinkServer, route  # noqa: E402

DUE_NOW = 1000
LINKS_PER_BODY = 50_000  # ext4 allows 65,000 links to one file
RUN_LIMIT_SECONDS = 900
BODY = (
    b"From: list@example.org\r\nTo: someone\r\nSubject: backlog\r\n\r\n"
    + b"A line of a message body that is deferred.\r\n" * 40
)


def inf_text(message_id: str, rcpt: str, now: float, due: float, tries: int) -> bytes:
    stamp = format_stamp(now - 3600)
    log = f"log={stamp}: Finished send attempt 1, sent to 0 of 1 recipients|\n" if tries else ""
    return (
        f"datasize={len(BODY)}\nhelo=client.example.org\n{log}mailfrom=list@example.org\n"
        f"messageid={message_id}\npeertcpip=127.0.0.1\npriority={tries}\n"
        f"rcpttosend={rcpt}\nrcpttransient={rcpt if tries else ''}\n"
        f"retrytime={format_retry(due)}\nsendtries={tries}\ntimecreated={stamp}\n"
    ).encode()


def write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def drop_backlog(retry: str, count: int, now: float) -> float:
    """``count`` deferred messages (``.dat`` then ``.inf``) and DUE_NOW due ones.

    Every ``.dat`` is a hard link to a body file (50,000 to each): the same bytes the engine would
    read, at a fraction of the writing time (the engine reads only ``.inf`` files of a
    backlog; a ``.dat`` is opened when its message is sent).
    """
    started = time.monotonic()
    bodies = os.path.dirname(os.path.dirname(retry))
    for i in range(count + DUE_NOW):
        body = os.path.join(bodies, f"body{i // LINKS_PER_BODY}.dat")
        if i % LINKS_PER_BODY == 0:
            write_file(body, BODY)
        message_id = f"P{i}T1700000000C{i}@backlog.example.org"
        deferred = i < count
        due = now + 7200 + (i * 7919) % (46 * 3600) if deferred else now - 1
        rcpt = f"user{i}@d{i % 500}.later.test" if deferred else f"user{i}@now.test"
        os.link(body, os.path.join(retry, message_id + ".dat"))
        inf = os.path.join(retry, message_id + ".inf")
        write_file(inf, inf_text(message_id, rcpt, now, due, 1 if deferred else 0))
        if deferred:
            os.utime(inf, (due, due))
        if i and i % 100_000 == 0:
            print(f"  {i} messages written ({time.monotonic() - started:.0f} s)", flush=True)
    return time.monotonic() - started


def greeting_ms(port: int) -> float | None:
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.settimeout(30)
            data = s.recv(512)
            if not data.startswith(b"220"):
                return None
            elapsed = (time.monotonic() - started) * 1000
            s.sendall(b"QUIT\r\n")
            return elapsed
    except OSError:
        return None


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            m = re.search(r"^VmRSS:\s+(\d+) kB", fh.read(), re.M)
    except OSError:
        return 0.0
    return int(m.group(1)) / 1024 if m else 0.0


def run(count: int, keep: bool) -> int:
    root = tempfile.mkdtemp(prefix="mailengine-backlog-")
    sink = SinkServer("127.0.4.1")
    try:
        retry = os.path.join(root, "mailq", "retry")
        os.makedirs(retry)
        now = time.time()
        print(f"writing {count:,} deferred + {DUE_NOW:,} due messages into {retry}")
        wrote = drop_backlog(retry, count, now)
        print(f"written in {wrote:.0f} s")
        engine = EngineProcess(
            root,
            {
                "logs": {"debug_program": True, "stats_interval_seconds": 0},
                "queue": {"check_interval_seconds": 600},
                "dns": {"bypass": [route("now.test", sink)]},
            },
        )
        started = time.monotonic()
        engine.start(wait=False)
        assert engine.proc is not None
        pid = engine.proc.pid
        greetings: list[float] = []
        first_greeting = indexed_at = delivered_at = None
        peak_rss = 0.0
        deadline = started + RUN_LIMIT_SECONDS
        while time.monotonic() < deadline:
            peak_rss = max(peak_rss, rss_mb(pid))
            if engine.proc.poll() is not None:
                print(engine.console()[-3000:])
                raise SystemExit("the engine exited")
            ms = greeting_ms(engine.smtp_port) if " started" in engine.console() else None
            if ms is not None:
                greetings.append(ms)
                if first_greeting is None:
                    first_greeting = time.monotonic() - started
            if indexed_at is None and "retry scan:" in engine.console():
                indexed_at = time.monotonic() - started
            if delivered_at is None and len(sink.received()) >= DUE_NOW:
                delivered_at = time.monotonic() - started
            if indexed_at is not None and time.monotonic() - started > indexed_at + 10:
                break
            time.sleep(0.05)
        scan_line = re.search(r"retry scan: .*", engine.console())
        engine.stop()
        print()
        print(f"backlog: {count:,} deferred messages + {DUE_NOW:,} due now in retry/")
        print(f"first greeting after start:  {first_greeting or float('nan'):.2f} s")
        if greetings:
            ordered = sorted(greetings)
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            print(
                f"greeting latency ({len(greetings)} connections): max {max(greetings):.0f} ms, "
                f"p99 {p99:.0f} ms, median {statistics.median(greetings):.1f} ms"
            )
        print(f"indexed (first retry scan done): {indexed_at or float('nan'):.1f} s")
        print(f"  {scan_line.group(0) if scan_line else 'no scan line'}")
        print(
            f"due messages delivered: {len(sink.received()):,} of {DUE_NOW:,}"
            + (f" after {delivered_at:.1f} s" if delivered_at else "")
        )
        print(f"peak RSS: {peak_rss:.0f} MB")
        return 0
    finally:
        sink.close()
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary root")
    args = parser.parse_args()
    return run(args.messages, args.keep)


if __name__ == "__main__":
    raise SystemExit(main())
