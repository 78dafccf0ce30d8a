"""``mailq/destinations.json``: the running engine's destination states for the CLI (pure).

``mailengine queue summary`` reads queue files offline, and no CLI command talks HTTP to
the engine (that would need the web port and the API token). So the delivery engine
rewrites this small file every few seconds with each destination that is not simply
sending (suspended, throttled, DNS failing...), and removes it when it stops; a file
older than ``STALE_SECONDS`` was left by an engine that did not stop cleanly and is
ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import attrs

FILE_NAME = "destinations.json"
STALE_SECONDS = 30.0  # six rewrites missed: no engine is running
MAX_LISTED = 10_000  # a bound on the file; the shaper forgets idle destinations anyway


@attrs.frozen
class DestinationLine:
    """One destination's state as the shaper shows it (``scheduler.shaping.StateView``)."""

    domain: str
    state: str  # scheduler.shaping.STATE_KINDS
    state_text: str  # "throttled to 30/min", "suspended", ...
    reason: str = ""  # the reply that suspended or throttled it, the DNS failure
    until: float = 0.0  # suspended: when it ends; DNS failing: when its answer expires


def state_words(state: str, state_text: str, until: float, clock: Callable[[float], str]) -> str:
    """The state for people, with its time (``clock`` writes an epoch time)."""
    if state == "suspended" and until:
        return f"suspended until {clock(until)}"
    if state == "dns_failing" and until:  # the failed answer is cached until then
        return f"DNS failing (next lookup after {clock(until)})"
    return state_text


def encode(lines: Iterable[DestinationLine], now: float) -> bytes:
    listed = [attrs.asdict(line) for _, line in zip(range(MAX_LISTED), lines, strict=False)]
    return json.dumps({"written": now, "destinations": listed}, indent=1).encode()


def decode(data: bytes, now: float) -> dict[str, DestinationLine] | None:
    """The states by domain; None when the file is unreadable or stale (no engine)."""
    try:
        document = json.loads(data)
        if now - float(document["written"]) > STALE_SECONDS:
            return None
        lines = [DestinationLine(**row) for row in document["destinations"]]
    except (ValueError, KeyError, TypeError):
        return None
    return {line.domain: line for line in lines}
