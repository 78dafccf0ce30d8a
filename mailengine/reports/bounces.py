"""Classify a returning bounce as hard (5.x.x) or soft (4.x.x) (pure; manual §2, RFC 3464).

An RFC 3464 ``message/delivery-status`` part wins when present; otherwise the
status codes quoted in the text are used (enhanced codes first, then reply
codes at a line start). When both kinds appear the most severe wins. A message
with no status at all (an auto-reply, or a bounce that quotes none) is
recorded as unclassified.
"""

from __future__ import annotations

import email
import email.message
import enum
import re
from collections.abc import Iterator

import attrs

_ENHANCED = re.compile(rb"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_REPLY = re.compile(rb"(?m)^[ \t>]*(?:[^\r\n:]{0,60}:[ \t]*)?([245])\d\d[ -]")
_QUOTED_ORIGINAL = ("message/rfc822", "text/rfc822-headers", "message/global")


class BounceKind(enum.Enum):
    HARD = "hard"
    SOFT = "soft"


@attrs.frozen
class BounceClass:
    """``kind`` None: no failure status (unclassified when no status at all).

    ``status`` as found (e.g. ``5.1.1``).
    """

    kind: BounceKind | None
    status: str = ""
    source: str = ""  # "delivery-status", "text" or ""

    @property
    def file_name(self) -> str:
        """The root-directory file the address is appended to (manual §2)."""
        if self.kind is BounceKind.HARD:
            return "hard-bounces.txt"
        if self.kind is BounceKind.SOFT:
            return "soft-bounces.txt"
        # A success notice (RFC 3464 "delivered", 2.x.x) is no bounce: not recorded.
        return "" if self.status else "unclassified-bounces.txt"


def kind_of_status(status: str) -> BounceKind | None:
    head = status.strip()[:1]
    if head == "5":
        return BounceKind.HARD
    if head == "4":
        return BounceKind.SOFT
    return None


def _worst(statuses: list[str], source: str) -> BounceClass | None:
    kinds = [(kind_of_status(s), s) for s in statuses]
    for wanted in (BounceKind.HARD, BounceKind.SOFT):
        for kind, status in kinds:
            if kind is wanted:
                return BounceClass(kind, status, source)
    return None


def _delivery_status_fields(msg: email.message.Message) -> Iterator[tuple[str, str]]:
    """(action, status) of every recipient block of every delivery-status part."""
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            continue
        for block in blocks:
            if not isinstance(block, email.message.Message):
                continue
            status = str(block.get("Status", "")).strip()
            if status:
                action = str(block.get("Action", "")).strip().lower()
                yield action, status.split()[0]


def _text_parts(msg: email.message.Message) -> Iterator[bytes]:
    """Decoded text of the message's own parts, not of the quoted original."""
    stack = [msg]
    while stack:
        part = stack.pop()
        ctype = part.get_content_type()
        if ctype in _QUOTED_ORIGINAL:
            continue
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(p for p in reversed(payload) if isinstance(p, email.message.Message))
            continue
        if part.get_content_maintype() == "text":
            body = part.get_payload(decode=True)
            if isinstance(body, bytes):
                yield body


def bounce_text(data: bytes, limit: int = 65536) -> str:
    """The bounce's own text (not the quoted original), for category patterns."""
    msg = email.message_from_bytes(data)
    parts = []
    for body in _text_parts(msg):
        parts.append(body[:limit].decode("utf-8", "replace"))
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            payload = part.get_payload()
            blocks = payload if isinstance(payload, list) else []
            for block in blocks:
                if isinstance(block, email.message.Message):
                    parts.append(str(block.get("Diagnostic-Code", "")))
    return " ".join(" ".join(parts).split())[:limit]


def classify_bounce(data: bytes) -> BounceClass:
    """Hard, soft, or not a bounce, for the message content ``data`` (headers + body)."""
    msg = email.message_from_bytes(data)
    fields = list(_delivery_status_fields(msg))
    if fields:
        failing = [s for action, s in fields if action in ("failed", "delayed", "")]
        found = _worst(failing, "delivery-status")
        return found or BounceClass(None, fields[0][1], "delivery-status")
    statuses: list[str] = []
    for text in _text_parts(msg):
        statuses.extend(b".".join(m.groups()).decode() for m in _ENHANCED.finditer(text))
    if not statuses:
        for text in _text_parts(msg):
            statuses.extend(m.group(1).decode() + ".0.0" for m in _REPLY.finditer(text))
    return _worst(statuses, "text") or BounceClass(None)
