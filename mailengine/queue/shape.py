"""The queue's shape per destination domain, like Postfix's qshape (pure).

Queued recipients and the oldest message's age per domain, with recipients
counted into age buckets, so an operator sees at a glance which destination
is stuck and since when.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import attrs

from mailengine.queue.envelope import Envelope

# qshape's default buckets: minutes, each twice the one before; the last is "older".
AGE_BUCKETS_MINUTES: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320, 640, 1280)


def format_age(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 12 min``, ``2 d 5 h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    minutes = s // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower()


_BUCKET_LIMITS_SECONDS = [m * 60 for m in AGE_BUCKETS_MINUTES]


def bucket_index(age_seconds: float) -> int:
    """Index into AGE_BUCKETS_MINUTES, or len(...) for older than the last bucket."""
    return bisect.bisect_right(_BUCKET_LIMITS_SECONDS, age_seconds)


@attrs.frozen
class DomainShape:
    """One destination domain: recipients still to send, oldest age, and the latest note."""

    domain: str
    recipients: int
    messages: int
    oldest_seconds: float
    buckets: tuple[int, ...]  # recipients per age bucket (len(AGE_BUCKETS_MINUTES) + 1)
    last_note: str = ""  # the last log entry of the latest attempt, e.g. a 4xx reply


@attrs.define
class _Tally:
    recipients: int = 0
    messages: int = 0
    oldest_created: float = float("inf")
    buckets: list[int] = attrs.field(factory=lambda: [0] * (len(AGE_BUCKETS_MINUTES) + 1))
    last_tried: float = float("-inf")
    last_note: str = ""


def queue_shape(envelopes: Iterable[Envelope], now: float) -> list[DomainShape]:
    """Per-domain shape of ``rcpt_to_send``, most queued recipients first.

    Runs over the whole queue index (hundreds of thousands of messages), so
    the loop is kept plain (bench/web_dashboard.py measures it).
    """
    tallies: dict[str, _Tally] = {}
    limits = _BUCKET_LIMITS_SECONDS
    for envelope in envelopes:
        created = envelope.time_created
        bucket = bisect.bisect_right(limits, now - created)
        seen: set[str] = set()
        for address in envelope.rcpt_to_send:
            domain = address[address.rfind("@") + 1 :].lower()
            tally = tallies.get(domain)
            if tally is None:
                tally = tallies[domain] = _Tally()
            tally.recipients += 1
            tally.buckets[bucket] += 1
            if domain in seen:
                continue
            seen.add(domain)
            tally.messages += 1
            if created < tally.oldest_created:
                tally.oldest_created = created
            tried = envelope.time_finished
            if tried is not None and tried > tally.last_tried and envelope.log:
                tally.last_tried = tried
                tally.last_note = envelope.log[-1]
    shapes = [
        DomainShape(
            domain=domain,
            recipients=t.recipients,
            messages=t.messages,
            oldest_seconds=max(0.0, now - t.oldest_created),
            buckets=tuple(t.buckets),
            last_note=t.last_note,
        )
        for domain, t in tallies.items()
    ]
    shapes.sort(key=lambda s: (-s.recipients, -s.oldest_seconds, s.domain))
    return shapes


def bucket_labels() -> list[str]:
    """Column titles: ``<5m``, ``<10m`` ... ``1280m+``."""
    return [f"<{m}m" for m in AGE_BUCKETS_MINUTES] + [f"{AGE_BUCKETS_MINUTES[-1]}m+"]
