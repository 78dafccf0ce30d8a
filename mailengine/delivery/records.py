"""What an attempt writes to the event log and the failure categories it carries (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mailengine.delivery.outcome import AttemptSummary, RecipientResult
from mailengine.observe import events
from mailengine.queue.envelope import Envelope
from mailengine.reports.categories import Pattern, categorize

# (MX host, its IP, our IP, TLS version) of the session a recipient was tried in.
Via = tuple[str, str, str, str]
NO_VIA: Via = ("", "", "", "")


def categorize_failures(summary: AttemptSummary, patterns: Sequence[Pattern]) -> None:
    """Set ``category`` on every failed or deferred recipient of the attempt."""
    for r in (*summary.hard, *summary.soft_final, *summary.soft_retry):
        r.category = categorize(r.reply, patterns, r.status, r.code)


def attempt_events(
    envelope: Envelope,
    summary: AttemptSummary,
    *,
    now: float,
    size: int,
    via: Mapping[str, Via],
) -> list[dict[str, Any]]:
    """One event per recipient tried: delivered, failed, expired or deferred."""
    out = []
    waited = round(now - envelope.time_created, 3)
    groups: tuple[tuple[str, list[RecipientResult]], ...] = (
        (events.DELIVERED, summary.sent),
        (events.FAILED, summary.hard),
        (events.EXPIRED, summary.soft_final),
        (events.DEFERRED, summary.soft_retry),
    )
    for name, results in groups:
        for r in results:
            mx_host, mx_ip, egress_ip, tls = via.get(r.address.lower(), NO_VIA)
            out.append(
                events.record(
                    name,
                    now,
                    message_id=envelope.message_id,
                    sender=envelope.mail_from,
                    recipient=r.address,
                    size=size,
                    attempt=summary.tries,
                    mx_host=mx_host or r.remote_mta or None,
                    mx_ip=mx_ip or None,
                    egress_ip=egress_ip or None,
                    tls=tls or None,
                    reply=events.reply_fields(r.reply, r.code),
                    category=r.category or None,
                    queue_seconds=waited,
                    by="engine",
                )
            )
    return out
