"""The per-recipient event log's records: names, the versioned field set, JSON lines (pure).

Every line of ``log/events-YYYY-MM-DD.jsonl`` is one object holding every field
of ``FIELDS`` (``null`` where it does not apply), so a consumer can rely on the
set; a field is only ever added together with a new ``SCHEMA_VERSION``.
README.rst ("Event log") documents the fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

SCHEMA_VERSION = 1

RECEIVED = "received"
DELIVERED = "delivered"
DEFERRED = "deferred"
FAILED = "failed"  # hard (5xx), final
EXPIRED = "expired"  # soft, out of retries, final
BOUNCE_RECEIVED = "bounce_received"
SUPPRESSED = "suppressed"
DSN_SENT = "dsn_sent"
HELD = "held"
RELEASED = "released"
DELETED = "deleted"
RETRIED = "retried"
EVENTS = (
    RECEIVED,
    DELIVERED,
    DEFERRED,
    FAILED,
    EXPIRED,
    BOUNCE_RECEIVED,
    SUPPRESSED,
    DSN_SENT,
    HELD,
    RELEASED,
    DELETED,
    RETRIED,
)
# The events that end a recipient's life in the queue.
FINAL_EVENTS = frozenset({DELIVERED, FAILED, EXPIRED, DELETED, SUPPRESSED})
# Operator queue actions (queue.actions names) and the event each records.
ACTION_EVENTS = {"hold": HELD, "release": RELEASED, "delete": DELETED, "retry-now": RETRIED}

FIELDS = (
    "v",
    "time",
    "event",
    "message_id",
    "sender",
    "recipient",
    "size",
    "attempt",
    "domain",
    "mx_host",
    "mx_ip",
    "egress_ip",
    "tls",
    "reply",  # {"code": 550, "enhanced": "5.1.1", "text": "..."} or null
    "category",  # a bounce category (reports.categories) for failures and bounces
    "queue_seconds",
    "by",  # who: "smtp" peer IP, "engine", "cli", "web:USER"
    "detail",  # free text: the DSN's id, a suppression's reason, ...
)
_EMPTY: dict[str, Any] = dict.fromkeys(FIELDS)
# The fallback for text orjson refuses (lone surrogates from undecodable input bytes).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_REPLY = re.compile(r"^\s*([2-5]\d\d)(?:[ -]+([245]\.\d{1,3}\.\d{1,3})\b)?[ -]*(.*)$", re.S)


def reply_fields(text: str, code: int = 0) -> dict[str, Any] | None:
    """``550 5.1.1 no such user`` -> ``{"code": 550, "enhanced": "5.1.1", "text": ...}``.

    A reason the engine wrote itself (a DNS failure, say) keeps ``code`` (0: none) and
    whatever enhanced code it quotes; no reply at all is ``None``.
    """
    if not text and not code:
        return None
    m = _REPLY.match(text)
    if m:
        return {"code": int(m.group(1)), "enhanced": m.group(2) or "", "text": m.group(3).strip()}
    enhanced = re.search(r"\b([245]\.\d{1,3}\.\d{1,3})\b", text)
    return {"code": code or None, "enhanced": enhanced.group(1) if enhanced else "", "text": text}


_second_cache: list[Any] = [None, ""]  # the last whole second formatted, and its text


def rfc3339(now: float) -> str:
    """``2026-12-04T16:41:11.250Z`` (UTC, milliseconds)."""
    second = int(now)
    if _second_cache[0] != second:  # most events share their second: format it once
        stamp = datetime.fromtimestamp(second, tz=UTC)
        _second_cache[:] = [second, stamp.strftime("%Y-%m-%dT%H:%M:%S.")]
    millis = min(999, int((now - second) * 1000))
    return f"{_second_cache[1]}{millis:03d}Z"


def utc_day(now: float) -> str:
    """The ``YYYY-MM-DD`` (UTC) of the file an event at ``now`` goes into."""
    return datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%d")


def domain_of(address: str) -> str:
    _, at, domain = address.rpartition("@")
    return domain.lower() if at else ""


def record(event: str, now: float, **fields: Any) -> dict[str, Any]:
    """One event with every field of ``FIELDS``; unknown field names are a bug."""
    out = dict(_EMPTY)
    out["v"] = SCHEMA_VERSION
    out["time"] = rfc3339(now)
    out["event"] = event
    out.update(fields)
    if len(out) != len(_EMPTY):
        unknown = sorted(set(fields) - set(_EMPTY))
        raise KeyError(f"{unknown} not event fields")
    if out["recipient"] and out["domain"] is None:
        out["domain"] = domain_of(out["recipient"])
    return out


def encode(event: dict[str, Any]) -> str:
    """One JSON line (UTF-8 text, no spaces, ending in a newline). U+2028/U+2029 are
    escaped: valid JSON raw, but line breaks to many line readers.

    orjson: the stdlib's encoder cost 8.8 us an event, orjson 0.8 us (issue 12: the
    event log may cost the relay at most 10 %)."""
    try:
        text = orjson.dumps(event).decode()
    except orjson.JSONEncodeError:
        text = _ENCODER.encode(event)
    if "\u2028" in text or "\u2029" in text:
        text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text + "\n"


def action_records(
    action: str,
    message_id: str,
    sender: str,
    recipients: Iterable[str],
    *,
    now: float,
    by: str,
    detail: str = "",
) -> list[dict[str, Any]]:
    """The events of one operator action on one message: one per recipient it touched."""
    name = ACTION_EVENTS[action]
    rcpts: list[str | None] = [*recipients] or [None]
    return [
        record(
            name,
            now,
            message_id=message_id,
            sender=sender,
            recipient=r,
            by=by,
            detail=detail or None,
        )
        for r in rcpts
    ]


def parse_lines(text: str) -> Iterator[dict[str, Any]]:
    """Events of a log file's text (tests, tools); a line that is not JSON raises."""
    for line in text.split("\n"):
        if line.strip():
            yield json.loads(line)
