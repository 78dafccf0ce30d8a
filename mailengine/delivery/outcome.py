"""What became of each recipient, and how an attempt updates the ``.inf`` (pure).

Manual §3: 2xx sent; 5xx failed (hard); 4xx, timeouts, refused connections and
transient DNS errors are soft and retried per ``retry_intervals_minutes``.
Manual §5 names the keys an attempt changes: ``rcptsent``, ``rcptfailed``,
``rcpttransient``, ``rcpttosend``, ``sendtries``, ``priority``, ``retrytime``,
``timefinished`` and a ``log`` entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mailengine.queue.envelope import Envelope
from mailengine.queue.lastreply import update_last_replies
from mailengine.queue.results import (  # noqa: F401 (the delivery engine's names for them)
    HARD,
    SENT,
    SOFT,
    UNTRIED,
    AttemptSummary,
    RecipientResult,
    kind_of_code,
)
from mailengine.scheduler.retry import priority_after_retry, retry_delay_seconds


def _remove(items: list[str], gone: set[str]) -> list[str]:
    return [a for a in items if a.lower() not in gone] if gone else items


def apply_attempt(
    envelope: Envelope,
    results: Iterable[RecipientResult],
    *,
    now: float,
    intervals_minutes: Sequence[float],
    should_log: bool = True,
) -> AttemptSummary:
    """Update ``envelope`` after an attempt; returns what happened to whom.

    ``should_log=False`` skips the ``log`` entry (and its time formatting) when
    the ``.inf`` is about to be discarded anyway.
    """
    results = list(results)
    tried = [r for r in results if r.kind != UNTRIED]
    untried = [r.address for r in results if r.kind == UNTRIED]
    if not tried:
        # Engine stopping before anything went out: the message is due again at once.
        # No recipient at all (nothing to try): it is done, not due again forever.
        envelope.retry_time = now
        return AttemptSummary(
            tries=envelope.send_tries,
            untried=untried,
            done=not envelope.rcpt_to_send,
            counted=False,
        )
    tries = envelope.send_tries + 1
    envelope.send_tries = tries
    envelope.time_finished = now
    delay = retry_delay_seconds(intervals_minutes, tries)
    summary = AttemptSummary(tries=tries, untried=untried)
    finished: set[str] = set()
    transient_now: set[str] = set()
    for r in tried:
        key = r.address.lower()
        if r.kind == SENT:
            summary.sent.append(r)
            envelope.rcpt_sent.append(r.address)
            finished.add(key)
        elif r.kind == HARD:
            summary.hard.append(r)
            envelope.rcpt_failed.append(r.address)
            finished.add(key)
        elif delay is None:
            summary.soft_final.append(r)
            finished.add(key)
            transient_now.add(key)
        else:
            summary.soft_retry.append(r)
            transient_now.add(key)
    envelope.rcpt_to_send = _remove(envelope.rcpt_to_send, finished)
    kept = _remove(envelope.rcpt_transient, finished - transient_now)
    known = {a.lower() for a in kept}
    for r in summary.soft_retry + summary.soft_final:
        if r.address.lower() not in known:
            kept.append(r.address)
            known.add(r.address.lower())
    envelope.rcpt_transient = kept
    update_last_replies(
        envelope,
        [(r.address, r.reply or str(r.code or "no reply")) for r in tried if r.kind != SENT],
        [r.address for r in summary.sent],
    )
    summary.done = not envelope.rcpt_to_send
    if summary.done:
        envelope.retry_time = None
    else:
        envelope.priority = priority_after_retry(envelope.priority)
        # Untried recipients (engine stopping) are due again at once.
        wait = delay if summary.soft_retry and delay is not None else 0.0
        envelope.retry_time = now + wait
    if should_log:
        envelope.add_log(now, attempt_log_text(envelope, tries, summary.done))
    return summary


def attempt_log_text(envelope: Envelope, tries: int, done: bool) -> str:
    """``Finished send attempt 2, sent to 3 of 5 recipients[, now done sending]``."""
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
    text = f"Finished send attempt {tries}, sent to {len(envelope.rcpt_sent)} of {total} recipients"
    return text + (", now done sending" if done else "")
