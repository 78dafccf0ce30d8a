"""Delivery reports to ``[reports] recipients`` after send attempts (pure).

Manual §4: type "e" after every attempt, "f" after the first, "l" after the
last, "x" after the first and the last; only undelivered addresses containing
one of ``[reports] domains`` (blank: all); each with its SMTP transaction, and
the counts (recipients, delivered so far).
"""

from __future__ import annotations

from collections.abc import Sequence

from mailengine.observe.timestamps import format_stamp
from mailengine.queue.envelope import Envelope
from mailengine.queue.results import HARD, SOFT, AttemptSummary, RecipientResult
from mailengine.reports.mail import finish, header_block, postmaster


def is_report_due(report_type: str, tries: int, finished: bool) -> bool:
    """Whether an attempt numbered ``tries`` (finished or not) gets a report."""
    first, last = tries == 1, finished
    return {
        "e": True,
        "f": first,
        "l": last,
        "x": first or last,
    }.get(report_type, False)


def matches(address: str, patterns: Sequence[str]) -> bool:
    """Does ``address`` contain one of ``patterns`` (blank list: every address)?"""
    if not patterns:
        return True
    low = address.lower()
    return any(p.lower() in low for p in patterns if p)


EARLIER = "failed in an earlier attempt"


def failed_soft_for_good(envelope: Envelope) -> list[str]:
    """Recipients whose retries ran out: soft failures no longer waiting for a retry."""
    waiting = {a.lower() for a in envelope.rcpt_to_send}
    ended = {a.lower() for a in (*envelope.rcpt_sent, *envelope.rcpt_failed)}
    return [a for a in envelope.rcpt_transient if a.lower() not in waiting | ended]


def undelivered(
    summary: AttemptSummary, patterns: Sequence[str], envelope: Envelope
) -> list[RecipientResult]:
    """The addresses to report: this attempt's failures; after the last attempt also
    those that failed in earlier ones (so an "l" report lists every undelivered one)."""
    results = [*summary.hard, *summary.soft_final, *summary.soft_retry]
    if summary.done:
        now_failed = {r.address.lower() for r in summary.final_failures}
        earlier = [*envelope.rcpt_failed, *failed_soft_for_good(envelope)]
        results += [
            RecipientResult(a, HARD if a in envelope.rcpt_failed else SOFT, reply=EARLIER)
            for a in earlier
            if a.lower() not in now_failed
        ]
    return [r for r in results if matches(r.address, patterns)]


def _state(r: RecipientResult, summary: AttemptSummary, envelope: Envelope) -> str:
    if r in summary.soft_retry and envelope.retry_time is not None:
        return f"will retry at {format_stamp(envelope.retry_time)}"
    if r in summary.soft_final:
        return "failed after the last retry"
    return "failed"


def build_report(
    envelope: Envelope,
    summary: AttemptSummary,
    reported: Sequence[RecipientResult],
    *,
    to: Sequence[str],
    hostname: str,
    now: float,
    report_id: str,
) -> bytes:
    total = len(
        {
            a.lower()
            for a in (
                *envelope.rcpt_sent,
                *envelope.rcpt_failed,
                *envelope.rcpt_transient,
                *envelope.rcpt_to_send,
            )
        }
    )
    lines = [
        f"Delivery report for message {envelope.message_id}",
        f"Send attempt {summary.tries}" + (", now done sending" if summary.done else ""),
        f"MAIL FROM: <{envelope.mail_from}>",
        f"Recipients: {total}; delivered so far: {len(envelope.rcpt_sent)}; "
        f"failed: {len(envelope.rcpt_failed) + len(failed_soft_for_good(envelope))}; "
        "waiting for a retry: "
        f"{len(envelope.rcpt_to_send)}",
        "",
        "Undelivered addresses:",
    ]
    for r in reported:
        if r.reply == EARLIER:
            lines.append(f"  {r.address}: {EARLIER}")
        else:
            lines.append(f"  {r.address}: {_state(r, summary, envelope)}: {r.reply}")
    lines.append("")
    lines.append("SMTP transactions:")
    seen: set[int] = set()
    for r in reported:
        if id(r.transcript) in seen or r.reply == EARLIER:
            continue
        seen.add(id(r.transcript))
        lines.append("")
        lines.extend(r.transcript or [f"<-- {r.reply}"])
    text = (
        header_block(
            sender=postmaster(hostname),
            to=", ".join(to),
            subject=(
                f"Delivery report: {envelope.message_id}: sent to "
                f"{len(envelope.rcpt_sent)} of {total} recipients"
            ),
            now=now,
            message_id=report_id,
            extra="Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n",
        )
        + "\n"
        + "\n".join(lines)
        + "\n"
    )
    return finish(text)
