"""Bounce categories: why a recipient failed, in a small documented set (pure).

The enhanced status code (RFC 3463) decides first; when it names no category
of its own (X.0.0, a missing code, a generic one), reply-text patterns do. The
patterns ship in ``reports/bounce-patterns.txt``; an operator's
``config/bounce-patterns.txt`` is read first, so its lines win.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import attrs

BAD_MAILBOX = "bad_mailbox"
BAD_DOMAIN = "bad_domain"
MAILBOX_FULL = "mailbox_full"
POLICY = "policy"
RATE_LIMITED = "rate_limited"
MESSAGE_TOO_BIG = "message_too_big"
DNS = "dns"
TLS = "tls"
PROTOCOL = "protocol"
OTHER = "other"
CATEGORIES = (
    BAD_MAILBOX,
    BAD_DOMAIN,
    MAILBOX_FULL,
    POLICY,
    RATE_LIMITED,
    MESSAGE_TOO_BIG,
    DNS,
    TLS,
    PROTOCOL,
    OTHER,
)
# A final failure of these puts the address on the suppression list.
SUPPRESSING = frozenset({BAD_MAILBOX, BAD_DOMAIN})

# (subject, detail) -> category; (subject, None) for the whole subject class.
_BY_STATUS: dict[tuple[int, int | None], str] = {
    (1, 1): BAD_MAILBOX,  # bad destination mailbox address
    (1, 2): BAD_DOMAIN,  # bad destination system address
    (1, 3): BAD_MAILBOX,  # bad destination mailbox address syntax
    (1, 4): BAD_MAILBOX,  # ambiguous
    (1, 6): BAD_MAILBOX,  # mailbox has moved
    (1, 10): BAD_DOMAIN,  # RFC 7505 null MX
    (2, 1): BAD_MAILBOX,  # mailbox disabled
    (2, 2): MAILBOX_FULL,
    (2, 3): MESSAGE_TOO_BIG,
    (3, 1): MAILBOX_FULL,  # mail system full
    (3, 4): MESSAGE_TOO_BIG,
    (4, 3): DNS,  # directory server failure
    (4, 4): DNS,  # unable to route
    (4, 5): RATE_LIMITED,  # system congestion
    (5, None): PROTOCOL,
    (7, 5): TLS,  # cryptographic failure
    (7, 10): TLS,  # encryption needed
    (7, 11): TLS,  # encryption required
    (7, 28): RATE_LIMITED,  # mail flood
    (7, None): POLICY,
}
_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")


_TEXT = {
    BAD_MAILBOX: "bad mailbox",
    BAD_DOMAIN: "bad domain",
    MAILBOX_FULL: "mailbox full",
    POLICY: "policy or spam",
    RATE_LIMITED: "rate limited",
    MESSAGE_TOO_BIG: "message too big",
    DNS: "DNS",
    TLS: "TLS",
    PROTOCOL: "protocol",
    OTHER: "other",
}


def category_text(category: str) -> str:
    """``bad_mailbox`` -> ``bad mailbox`` (for people: DSNs, the web admin)."""
    return _TEXT.get(category, category)


@attrs.frozen
class Pattern:
    category: str
    regex: re.Pattern[str]


class PatternError(ValueError):
    """A pattern line that cannot be used; the text names the line."""


def parse_patterns(text: str, origin: str = "patterns") -> list[Pattern]:
    """``CATEGORY REGEX`` lines; ``#`` comments and blank lines skipped."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        category, _, regex = line.partition(" ")
        regex = regex.strip()
        if category not in CATEGORIES or not regex:
            raise PatternError(
                f"{origin} line {number}: want CATEGORY REGEX with CATEGORY one of "
                + ", ".join(CATEGORIES)
            )
        try:
            out.append(Pattern(category, re.compile(regex, re.IGNORECASE)))
        except re.error as exc:
            raise PatternError(f"{origin} line {number}: {exc}") from None
    return out


def enhanced_code(text: str) -> str:
    """The first RFC 3463 code quoted in ``text`` (``5.1.1``), or ""."""
    m = _ENHANCED.search(text)
    return ".".join(m.groups()) if m else ""


def category_of_status(status: str) -> str:
    """The category an enhanced status code names, or "" when it names none."""
    parts = status.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return ""
    subject, detail = int(parts[1]), int(parts[2])
    return _BY_STATUS.get((subject, detail)) or _BY_STATUS.get((subject, None), "")


def categorize(text: str, patterns: Sequence[Pattern], status: str = "", code: int = 0) -> str:
    """The category of a failure: ``text`` is the reply (or reason, or bounce text),
    ``status`` an enhanced code the engine knows better than the text."""
    found = category_of_status(enhanced_code(text) or status)
    if found:
        return found
    for p in patterns:
        if p.regex.search(text):
            return p.category
    if code == 552:
        return MESSAGE_TOO_BIG
    if code == 421:
        return RATE_LIMITED
    return OTHER


def combined(pattern_sets: Iterable[list[Pattern]]) -> list[Pattern]:
    return [p for patterns in pattern_sets for p in patterns]
