"""Each recipient's last reply, kept in the ``.inf`` as ``lastreply=`` (pure).

``lastreply=a@x.test 450 4.7.1 try later|b@y.test 550 5.1.1 no such user|``:
one ``address reply`` entry per recipient that has not been sent yet (or
failed), the newest attempt's reply replacing the older one. An added key: the
manual's readers and older engines keep it as an unknown key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from mailengine.queue.envelope import Envelope

KEY = "lastreply"
MAX_REPLY_CHARS = 500  # per recipient: a long multi-line reply must not bloat the .inf


def last_replies(envelope: Envelope) -> dict[str, str]:
    """address (as written) -> its last reply, in file order."""
    out: dict[str, str] = {}
    for entry in envelope.other.get(KEY, "").split("|"):
        address, _, reply = entry.strip().partition(" ")
        if address:
            out[address] = reply.strip()
    return out


def set_last_replies(envelope: Envelope, replies: Mapping[str, str]) -> None:
    if not replies:
        envelope.other.pop(KEY, None)
        return
    envelope.other[KEY] = "".join(
        f"{a} {_clean(r)}|" for a, r in replies.items() if a and " " not in a
    )


def update_last_replies(
    envelope: Envelope, replies: Iterable[tuple[str, str]], sent: Iterable[str]
) -> None:
    """Record this attempt's ``(address, reply)`` pairs; forget sent addresses."""
    current = last_replies(envelope)
    lower = {a.lower(): a for a in current}
    for address in sent:
        old = lower.pop(address.lower(), None)
        if old is not None:
            del current[old]
    for address, reply in replies:
        old = lower.get(address.lower())
        if old is not None:
            del current[old]
        current[address] = reply
        lower[address.lower()] = address
    set_last_replies(envelope, current)


def last_reply_of(envelope: Envelope, address: str = "") -> str:
    """The reply of ``address``, or (no address) of the first recipient still to send."""
    replies = last_replies(envelope)
    if not replies:
        return ""
    if not address:
        for a in envelope.rcpt_to_send:
            if a in replies:
                return replies[a]
        return next(reversed(replies.values()))
    lowered = {a.lower(): r for a, r in replies.items()}
    return lowered.get(address.lower(), "")


# Controls would make the .inf invalid (queue.inf refuses them): a peer's reply may hold any.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _clean(reply: str) -> str:
    return " ".join(_CONTROL.sub(" ", reply.replace("|", "/")).split())[:MAX_REPLY_CHARS]
