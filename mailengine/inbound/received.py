"""The Received header the engine prepends to every message it accepts (pure; RFC 5321 §4.4)."""

from __future__ import annotations

import re

_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")
_UNSAFE = re.compile(rb"[^\x21-\x7e]")
MAX_HELO = 255


def with_protocol(*, esmtp: bool, tls: bool, authenticated: bool) -> str:
    """RFC 3848 ``with`` keyword: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA."""
    if not esmtp:
        return "SMTP"
    return "ESMTP" + ("S" if tls else "") + ("A" if authenticated else "")


def clean_helo(helo: bytes) -> str:
    """The HELO argument made safe for a header: printable ASCII, bounded, never empty."""
    text = _UNSAFE.sub(b"?", helo.strip()[:MAX_HELO]).decode("ascii")
    return text or "unknown"


def received_header(
    *,
    helo: str,
    peer_ip: str,
    host: str,
    protocol: str,
    message_id: str,
    recipients: list[str],
    date: str,
) -> bytes:
    """``Received: from HELO ([IP]) by HOST (MailEngine) with ESMTP id ID [for <R>]; DATE``.

    ``for`` names the recipient only when there is one (RFC 5321 §7.2: do not
    disclose the other recipients).
    """
    for_clause = f"\r\n\tfor <{recipients[0]}>" if len(recipients) == 1 else ""
    text = (
        f"Received: from {helo} ([{peer_ip}])\r\n"
        f"\tby {host} (MailEngine) with {protocol} id {message_id}{for_clause};\r\n"
        f"\t{date}\r\n"
    )
    return text.encode("ascii", "replace")


def prepend_received(header: bytes, content: bytes) -> bytes:
    """``header`` + ``content``; a blank line in between when the content has no headers.

    Without it a body-only message would have its first line read as a header.
    """
    if content and not content.startswith(b"\r\n") and not _HEADER_LINE.match(content):
        return header + b"\r\n" + content
    return header + content
