"""What a dashboard refresh and a /metrics scrape cost the reactor with a big queue index.

    python bench/web_dashboard.py [MESSAGES]

Fills a LiveQueue index with MESSAGES envelopes (default 200,000) spread over
1,000 domains and an hour of 10 s stats intervals, then times, on the reactor
thread's side: the per-domain shape of the index (what the dashboard computes
when no delivery engine reports destinations; cached 5 s), the snapshot, the
dashboard fragment and the /metrics text. The reference is one bare loop over
the same index, timed in the same run.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mailengine.queue.envelope import Envelope
from mailengine.queue.live import QueuedMessage
from mailengine.queue.location import Location
from mailengine.web.dashboard import dashboard_body
from mailengine.web.metrics import render_metrics
from mailengine.web.running import Running
from mailengine.web.snapshot import DeliveryView, count_dirs, shape_of, take_snapshot
from tests.twisted.web_harness import make_engine


def timed(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    engine, clock = make_engine(tempfile.mkdtemp(prefix="bench-web-"))
    now = clock.seconds()
    for i in range(n):
        env = Envelope(
            f"P1T1C{i}@bench",
            "list@example.org",
            [f"user{i}@d{i % 1000}.test", f"other{i}@d{(i * 7) % 1000}.test"],
            time_created=now - (i % 7200),
        )
        engine.queue.messages[env.message_id] = QueuedMessage(env, None, Location.RETRY)
    for _ in range(360):
        engine.counters.received("relay", 900)
        engine.counters.delivered(880)
        clock.advance(10)
        engine.counters.close_interval(clock.seconds())
    now = clock.seconds()

    ref, _ = timed(
        lambda: sum(len(m.envelope.rcpt_to_send) for m in engine.queue.messages.values())
    )
    envelopes = [m.envelope for m in engine.queue.messages.values()]
    copy_t, _ = timed(lambda: [m.envelope for m in engine.queue.messages.values()])
    shape_t, shape = timed(lambda: shape_of(envelopes, now))
    counts = count_dirs(engine.store)
    snap_t, snap = timed(
        lambda: take_snapshot(engine, now, counts, shape, DeliveryView(engine, Running()))
    )
    page_t, page = timed(lambda: dashboard_body(snap, "csrf"))
    metrics_t, text = timed(lambda: render_metrics(snap))
    print(f"index: {n:,} messages, {2 * n:,} recipients, 1,000 domains")
    print(f"reference loop over the index:   {ref * 1000:8.1f} ms")
    print(f"copy of the index (reactor):     {copy_t * 1000:8.1f} ms")
    print(f"per-domain shape (worker thread): {shape_t * 1000:7.1f} ms")
    print(f"snapshot (shape cached):         {snap_t * 1000:8.1f} ms")
    print(f"dashboard fragment ({len(page):,} B): {page_t * 1000:8.1f} ms")
    print(f"/metrics text ({len(text):,} B):      {metrics_t * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
