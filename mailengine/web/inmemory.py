"""Operator actions on messages the running engine holds in memory (no retry/ file).

Relay mail runs from memory: plain, with its safe copy in the receipt journal
(``use_disk_for_relay``), or with files in working/ once it waited long. A
message still waiting for its turn can be held or deleted here. One the
delivery engine has taken is being sent and is left alone: if the attempt does
not deliver it, it returns to retry/, where it can be acted on. Holding writes
hold/ in the group-commit thread (one sync for a whole batch) while the engine
no longer sees the message, and forgets it only once hold/ has it; if the
write fails the message goes to retry/ instead. Never lost, never doubled.
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from mailengine.queue.actions import ActionResult, QueueEntry, QueueFilter
from mailengine.queue.envelope import Envelope
from mailengine.queue.live import QueuedMessage
from mailengine.queue.location import BUSY as BUSY_WRITING
from mailengine.queue.location import IN_MEMORY, Location
from mailengine.web.running import QueueParts, Running

RunBlocking = Callable[[Callable[[], Any]], defer.Deferred]

MEMORY = "memory"  # the web's name for messages held in memory
BEING_SENT = (
    "being sent now: the delivery engine has taken it for an attempt; if the attempt "
    "does not deliver it, it returns to retry/, where it can be held or deleted"
)
WAITING_TO_SEND = (
    "taken for an attempt, waiting for a connection: the delivery engine sends it as "
    "soon as a connection to its destination is free; if the attempt does not deliver "
    "it, it returns to retry/, where it can be held or deleted"
)
BUSY = "the engine is writing it to disk right now; try again in a moment"


def is_in_memory(msg: QueuedMessage) -> bool:
    return msg.location in IN_MEMORY and msg.data is not None


def oldest_first(msg: QueuedMessage) -> tuple[float, str]:
    return msg.envelope.time_created, msg.message_id


def select(
    held: list[QueuedMessage], which: QueueFilter, now: float, *, ordered: bool = True
) -> list[QueuedMessage]:
    """The messages ``which`` matches, oldest first unless ``ordered`` is off."""
    out = [m for m in held if which.matches(m.message_id, m.envelope, now)]
    if ordered:
        out.sort(key=oldest_first)
    return out


def with_note(envelope: Envelope, now: float, text: str) -> Envelope:
    """A copy of ``envelope`` with one more attempt-log line (the original is untouched)."""
    noted = copy.copy(envelope)
    noted.log = list(envelope.log)
    noted.add_log(now, text)
    return noted


class MemoryMessages:
    """The engine's in-memory messages as queue entries, and the actions on them."""

    def __init__(self, engine: QueueParts, now: Callable[[], float], running: Running) -> None:
        self.engine = engine
        self.running = running
        self.now = now

    def is_being_sent(self, msg: QueuedMessage) -> bool:
        """Taken by the delivery engine: known to the queue but no longer scheduled."""
        return self.engine.queue.is_taken(msg.message_id)

    def is_on_a_connection(self, msg: QueuedMessage) -> bool:
        """Taken and in a transaction now; taken messages may also wait for a connection."""
        delivery = self.running.delivery
        if delivery is None:
            return True  # whoever took it (a test) did not say: assume the worst
        attempt = delivery.attempts.get(msg.message_id)
        return attempt is not None and bool(attempt.is_on_a_connection)

    def entry(self, msg: QueuedMessage) -> QueueEntry:
        env = msg.envelope
        taken = self.is_being_sent(msg)
        sending = taken and self.is_on_a_connection(msg)
        return QueueEntry(
            msg.message_id,
            MEMORY,
            env.time_created,
            env,
            "",
            msg.size,
            is_being_sent=sending,
            is_waiting_to_send=taken and not sending,
        )

    def entries(self, which: QueueFilter) -> list[QueueEntry]:
        """Every matching message, oldest first (for acting on them all)."""
        return [self.entry(m) for m in select(self.held(), which, self.now())]

    def held(self) -> list[QueuedMessage]:
        """The messages in memory now (a copy: cheap in the reactor, walked elsewhere)."""
        return [m for m in list(self.engine.queue.messages.values()) if is_in_memory(m)]

    async def page(
        self, which: QueueFilter, offset: int, limit: int, run_blocking: RunBlocking
    ) -> tuple[list[QueueEntry], int]:
        """One page, oldest first, and how many match; the walk runs in a worker thread
        (half a million messages may wait in memory)."""
        held, now = self.held(), self.now()

        def work() -> tuple[list[QueuedMessage], int]:
            matching = held if which.is_everything else select(held, which, now, ordered=False)
            first = heapq.nsmallest(offset + limit, matching, key=oldest_first)
            return first[offset:], len(matching)

        chosen, total = await run_blocking(work)
        return [self.entry(m) for m in chosen], total

    def find(self, message_id: str) -> QueuedMessage | None:
        msg = self.engine.queue.messages.get(message_id)
        return msg if msg is not None and is_in_memory(msg) else None

    async def act(self, action: str, message_id: str, domain: str = "") -> ActionResult | None:
        """``action`` on a message the engine holds in memory; None when it has no such
        message (the caller looks for files)."""
        msg = self.engine.queue.messages.get(message_id)
        if msg is None or msg.location == Location.RETRY:
            return None
        if msg.location in BUSY_WRITING:
            return ActionResult(message_id, action, False, BUSY, MEMORY)
        if not is_in_memory(msg):
            return None
        if self.is_being_sent(msg):
            why = BEING_SENT if self.is_on_a_connection(msg) else WAITING_TO_SEND
            return ActionResult(message_id, action, False, why, MEMORY)
        if action == "delete":
            return self._delete(msg, domain)
        if action == "hold":
            return await self._hold(msg)
        if action == "retry-now":
            return self._retry_now(msg)
        return ActionResult(
            message_id, action, False, "in memory, not held; release works on hold/", MEMORY
        )

    def _delete(self, msg: QueuedMessage, domain: str) -> ActionResult:
        queue, message_id = self.engine.queue, msg.message_id
        if domain:
            cut = queue.cut_domain(msg, domain, self.now())
            if cut.keep_message:
                return ActionResult(
                    message_id,
                    "delete",
                    bool(cut.removed),
                    cut.text,
                    MEMORY,
                    cut.removed,
                    dest=MEMORY if cut.removed else "",
                )
        queue.delete(msg)
        count = len(msg.envelope.rcpt_to_send)
        return ActionResult(message_id, "delete", True, "deleted from memory", MEMORY, count)

    async def _hold(self, msg: QueuedMessage) -> ActionResult:
        message_id = msg.message_id
        envelope = with_note(msg.envelope, self.now(), "held by the operator")
        try:
            await self.engine.queue.hold(msg, envelope)
        except Exception as exc:
            why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            return ActionResult(
                message_id,
                "hold",
                False,
                f"could not write it to hold/ ({why}); it waits in retry/ instead",
                MEMORY,
                dest="retry",
            )
        return ActionResult(message_id, "hold", True, "held (memory -> hold/)", MEMORY, dest="hold")

    def _retry_now(self, msg: QueuedMessage) -> ActionResult:
        if self.engine.queue.make_due_now(msg, self.now()):
            return ActionResult(msg.message_id, "retry-now", True, "due now (in memory)", MEMORY)
        text = "already due: sent as soon as the sender has room (connections, hourly cap)"
        return ActionResult(msg.message_id, "retry-now", True, text, MEMORY)
