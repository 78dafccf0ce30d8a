"""Following one message through the queue files: ``mailengine send --wait``.

The engine says nothing to the command that queued a message; its files do.
retry/ (waiting), working/ (being sent), back in retry/ with a send try more
(deferred, with the attempt's log line), done/ (with ``save_done``), hold/,
or gone: then the undeliverable files tell a final failure from a delivery.
"""

from __future__ import annotations

import os

import attrs

from mailengine.queue.envelope import Envelope
from mailengine.queue.inf import InfError
from mailengine.queue.store import QueueStore

UNDELIVERABLE = ("hard-undeliverable.txt", "soft-undeliverable.txt")


@attrs.frozen
class Outcome:
    """Where the message is, and whether that ends the wait (``code``: the exit code)."""

    state: str  # "waiting", "sending", "deferred", "done", "held", "failed", "delivered"
    text: str
    code: int | None = None  # None: not over yet


def undeliverable_sizes(root: str) -> dict[str, int]:
    """How long each undeliverable file is now: only lines written later are looked at."""
    sizes = {}
    for name in UNDELIVERABLE:
        try:
            sizes[name] = os.path.getsize(os.path.join(root, name))
        except OSError:
            sizes[name] = 0
    return sizes


def failed_since(root: str, sizes: dict[str, int], recipients: list[str]) -> list[str]:
    """Recipients listed in an undeliverable file after ``sizes`` were taken."""
    wanted = {r.strip().strip("<>").lower() for r in recipients}
    found = []
    for name in UNDELIVERABLE:
        try:
            with open(os.path.join(root, name), "rb") as fh:
                fh.seek(sizes.get(name, 0))
                lines = fh.read().decode("utf-8", "replace").splitlines()
        except OSError:
            continue
        for line in lines:
            # "address" (the manual) or "address<TAB>reply".
            address = line.split("\t", 1)[0].strip()
            if address.lower() in wanted:
                found.append(f"{address} ({name})")
    return found


def _read(store: QueueStore, dirname: str, message_id: str) -> Envelope | None:
    try:
        return store.read_envelope(dirname, message_id, now=0, require_recipients=False)
    except (InfError, OSError):
        return None


def last_note(envelope: Envelope) -> str:
    return envelope.log[-1] if envelope.log else ""


def outcome(
    store: QueueStore, root: str, message_id: str, recipients: list[str], sizes: dict[str, int]
) -> Outcome:
    """Where ``message_id`` is now, read from the files."""
    if os.path.exists(store.path("working", message_id, ".inf")):
        return Outcome("sending", "being sent")
    envelope = _read(store, "retry", message_id)
    if envelope is not None:
        if envelope.send_tries == 0:
            return Outcome("waiting", "waiting in retry/")
        return Outcome("deferred", f"deferred, in retry/: {last_note(envelope)}", 75)
    envelope = _read(store, "done", message_id)
    if envelope is not None:
        sent = len(envelope.rcpt_sent)
        failed = len(envelope.rcpt_failed) + len(envelope.rcpt_transient)
        text = f"done: sent to {sent}, failed for {failed}"
        return Outcome("done", f"{text}: {last_note(envelope)}", 1 if failed else 0)
    if os.path.exists(store.path("hold", message_id, ".inf")):
        return Outcome("held", "held by an operator (in hold/)", 1)
    for dirname in ("retry", "working", "done", "hold"):
        # Between two renames (queue/store.py move, an operator's claim): not gone.
        for ext in (".inf", ".inf-moving", ".inf-claimed"):
            if os.path.exists(store.path(dirname, message_id, ext)):
                return Outcome("waiting", f"moving ({dirname}/)")
    listed = failed_since(root, sizes, recipients)
    if listed:
        return Outcome("failed", "failed for good: " + ", ".join(listed), 1)
    return Outcome(
        "delivered",
        "left the queue; no recipient was logged as undeliverable, so it was delivered "
        "(or deleted by an operator)",
        0,
    )
