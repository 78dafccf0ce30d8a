"""Traffic-shaping benchmark: 1,000 destinations, 10 of them slow (issue 10).

    python bench/slow_destinations.py [--messages 10000] [--slow-messages 600]

990 healthy domains are routed to Postfix's smtp-sink on 127.0.1.1-5; 10 slow ones to a
sink that waits 2 s before each reply. The slow domains' mail is injected first, then the
healthy mail; the healthy destinations' end-to-end rate is reported, and the same run
without slow mail for comparison (they should be close: no head-of-line blocking).
Loopback only; every run is bounded in count and time.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import sys
import tempfile
import threading
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.relay import RUN_LIMIT_SECONDS, Sinks  # noqa: E402
from tests.harness import EngineProcess, wait_for  # noqa: E402
from tests.sinks import SinkServer  # noqa: E402

HEALTHY = [f"h{i}.shape.test" for i in range(990)]
SLOW = [f"s{i}.slow.test" for i in range(10)]
THREADS = 8


def inject(port: int, domains: list[str], messages: int) -> None:
    """``messages`` of 4 KB round-robin over ``domains``, from THREADS SMTP sessions."""
    body = b"Subject: bench\r\n\r\n" + b"x" * 4000 + b"\r\n"

    def worker(offset: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            for i in range(offset, messages, THREADS):
                client.sendmail("bench@src.test", [f"u@{domains[i % len(domains)]}"], body)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(RUN_LIMIT_SECONDS)


def run(workdir: str, sinks: Sinks, slow: SinkServer, messages: int, slow_messages: int) -> Any:
    bypass = [f"{d},mx.{d},MX,{':'.join(map(str, sinks.route(i)))}" for i, d in enumerate(HEALTHY)]
    bypass += [f"{d},mx.slow.test,MX,{slow.host}:{slow.port}" for d in SLOW]
    root = tempfile.mkdtemp(prefix="me-", dir=workdir)
    engine = EngineProcess(
        root,
        {
            "dns": {"bypass": bypass},
            "queue": {"use_disk_for_relay": False},
            "smtp_in": {"max_connections": 1000},
            "server": {"stop_timeout_seconds": 1},
            "logs": {"stats_interval_seconds": 0, "retention_days": 0},
        },
        web=False,
    )
    engine.start()
    try:
        if slow_messages:
            inject(engine.smtp_port, SLOW, slow_messages)
        base = sinks.delivered()
        t0 = time.monotonic()
        inject(engine.smtp_port, HEALTHY, messages)
        wait_for(
            lambda: sinks.delivered() - base >= messages,
            timeout=RUN_LIMIT_SECONDS,
            interval=0.05,
            what=f"{messages} healthy messages at the sinks",
        )
        seconds = time.monotonic() - t0
        return messages / seconds, len(slow.received())
    finally:
        engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--slow-messages", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-shape-") as workdir:
        sinks = Sinks(workdir)
        slow = SinkServer("127.0.1.9")
        slow.delay_seconds = 2.0
        try:
            print(
                f"{args.messages} messages of 4 KB over {len(HEALTHY)} healthy domains; "
                f"{args.slow_messages} queued first for {len(SLOW)} slow domains (2 s a reply)",
                flush=True,
            )
            alone, _ = run(workdir, sinks, slow, args.messages, 0)
            print(f"healthy alone:           {alone:8,.0f} msgs/s", flush=True)
            behind, slow_done = run(workdir, sinks, slow, args.messages, args.slow_messages)
            print(
                f"healthy behind slow ones: {behind:8,.0f} msgs/s "
                f"({behind / alone:.2f}x; {slow_done} slow messages delivered meanwhile)",
                flush=True,
            )
        finally:
            slow.close()
            sinks.close()


if __name__ == "__main__":
    main()
