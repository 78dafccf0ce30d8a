"""VERP bounce addresses ``mailengine-bounce-USER%DOMAIN@HOST`` and their inverse (pure).

Outbound MAIL FROM is rewritten with ``[smtp_out] bounce_host`` (manual §3);
inbound mail to such an address is a returning bounce for USER@DOMAIN (§2).
"""

from __future__ import annotations

PREFIX = "mailengine-bounce-"


def encode_bounce_address(sender: str, bounce_host: str) -> str:
    """``joe@example.com`` -> ``mailengine-bounce-joe%example.com@bounce_host``.

    The null sender and senders without a domain are not rewritten (a bounce
    of a bounce must never be possible).
    """
    local, at, domain = sender.rpartition("@")
    if not bounce_host or not at or not local or not domain:
        return sender
    return f"{PREFIX}{local}%{domain}@{bounce_host}"


def decode_bounce_address(address: str) -> tuple[str, str] | None:
    """``mailengine-bounce-joe%example.com@host`` -> (``joe@example.com``, ``host``); else None."""
    local, at, host = address.rpartition("@")
    if not at or not host or local[: len(PREFIX)].lower() != PREFIX:
        return None
    user, percent, domain = local[len(PREFIX) :].rpartition("%")
    if not percent or not user or not domain or "@" in domain:
        return None
    return f"{user}@{domain}", host
