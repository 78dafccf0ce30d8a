"""What the server answers: enhanced status codes, reply lines, MAIL parameters (pure)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_ENHANCED = re.compile(rb"[245]\.\d{1,3}\.\d{1,3}(?: |$)")
# Replies that carry no enhanced code (RFC 2034 §3: greeting, HELO/EHLO; 334/354 carry data).
_BARE_CODES = frozenset((220, 334, 354))
_DEFAULT_ENHANCED = {
    221: b"2.0.0",
    235: b"2.7.0",
    250: b"2.0.0",
    421: b"4.3.0",
    451: b"4.3.0",
    454: b"4.7.0",
    500: b"5.5.2",
    501: b"5.5.4",
    502: b"5.5.1",
    503: b"5.5.1",
    504: b"5.5.4",
    535: b"5.7.8",
    538: b"5.7.11",
    553: b"5.1.3",
}


def with_enhanced_code(code: int, message: bytes) -> bytes:
    """Put an RFC 3463 code first unless the text has one or the reply takes none."""
    if code in _BARE_CODES or _ENHANCED.match(message):
        return message
    return (_DEFAULT_ENHANCED.get(code) or b"%d.0.0" % (code // 100)) + b" " + message


def format_reply(code: int, message: bytes) -> bytes:
    """``250-first``, ``250 last`` lines, CRLF-terminated (RFC 5321 §4.2.1)."""
    lines = message.splitlines() or [b""]
    out = b"".join(b"%03d-%s\r\n" % (code, line) for line in lines[:-1])
    return out + b"%03d %s\r\n" % (code, lines[-1])


def check_mail_parameters(opts: bytes | None, max_size: int) -> tuple[int, bytes] | None:
    """RFC 1870 SIZE, RFC 6152 BODY, RFC 4954 AUTH; None when fine, else the refusal.

    A declared SIZE over ``max_size`` (0: no limit) gets 552 5.3.4; parameters
    we do not offer get 555 (RFC 5321 §4.1.1.11).
    """
    for opt in (opts or b"").split():
        key, _, value = opt.partition(b"=")
        key = key.upper()
        if key == b"SIZE":
            if not value.isdigit():
                return 501, b"5.5.4 Bad SIZE parameter"
            if max_size and int(value) > max_size:
                return 552, b"5.3.4 Message size exceeds fixed maximum message size"
        elif key == b"BODY":
            if value.upper() not in (b"7BIT", b"8BITMIME"):
                return 501, b"5.5.4 Bad BODY parameter"
        elif key != b"AUTH":
            shown = key.decode("ascii", "backslashreplace").encode()
            return 555, b"5.5.4 Unsupported option: " + shown
    return None


def suppressed_reply(address: str, reason: str, since: float) -> bytes:
    """``5.1.1 <a@b> is suppressed (reason, since 2026-12-04)`` (the date in UTC)."""
    day = datetime.fromtimestamp(since, tz=UTC).strftime("%Y-%m-%d")
    why = " ".join(reason.split())[:200] or "listed"
    text = f"5.1.1 <{address}> is suppressed ({why}, since {day})"
    return text.encode("utf-8", "replace")
