"""The web admin's queue actions: the shared file actions plus the engine's own view.

File work (the same ``QueueActions`` the ``mailengine queue`` command uses)
runs in a worker thread; messages the engine holds in memory are handled by
``inmemory``, and the LiveQueue is brought up to date at once (forget what
left retry/, rescan what came back) instead of at the next check.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from mailengine.observe.events import action_records
from mailengine.queue.actions import (
    ACTIONS,
    ActionResult,
    MessageDetail,
    QueueActions,
    QueueEntry,
    QueueFilter,
)
from mailengine.queue.inf import is_valid_message_id
from mailengine.queue.location import Location
from mailengine.queue.shape import DomainShape, queue_shape
from mailengine.queue.store import BadMessageId
from mailengine.web.inmemory import MEMORY, MemoryMessages, RunBlocking
from mailengine.web.running import QueueActionParts, Running

log = Logger(namespace="mailengine.web")


class QueueControl:
    def __init__(
        self,
        engine: QueueActionParts,
        run_blocking: RunBlocking,
        now: Callable[[], float],
        running: Running | None = None,
    ) -> None:
        self.engine = engine
        self.files = QueueActions(engine.store)
        self.memory = MemoryMessages(engine, now, running or Running())
        self.run_blocking = run_blocking
        self.now = now

    # -- reading -------------------------------------------------------------------

    async def page(
        self, which: QueueFilter, offset: int, limit: int
    ) -> tuple[list[QueueEntry], int]:
        if MEMORY in which.dirs:
            return await self.memory.page(which, offset, limit, self.run_blocking)
        now = self.now()
        result: tuple[list[QueueEntry], int] = await self.run_blocking(
            lambda: self.files.page(which, now, offset, limit)
        )
        return result

    async def count(self, which: QueueFilter) -> tuple[int, int]:
        """Matching messages and their recipients (for a confirmation question)."""
        if MEMORY in which.dirs:
            entries = self.memory.entries(which)
        else:
            now = self.now()
            entries = await self.run_blocking(lambda: list(self.files.entries(which, now)))
        return len(entries), sum(len(e.recipients) for e in entries)

    async def show(self, message_id: str) -> MessageDetail | None:
        if not is_valid_message_id(message_id):
            raise BadMessageId(message_id)
        msg = self.memory.find(message_id)
        if msg is not None and msg.data is not None:
            head = msg.data[:65536].decode("utf-8", "replace").replace("\r\n", "\n")
            inf = msg.envelope.to_inf()
            return MessageDetail(self.memory.entry(msg), inf, head.partition("\n\n")[0])
        now = self.now()
        detail: MessageDetail | None = await self.run_blocking(
            lambda: self.files.show(message_id, now)
        )
        return detail

    async def summary(self, dirs: tuple[str, ...]) -> list[DomainShape]:
        """Per-domain shape of the files in ``dirs`` and, with "memory", of the messages
        held only in memory (those in working/ are counted once, from their files)."""
        now = self.now()
        file_dirs = tuple(d for d in dirs if d != MEMORY)
        in_memory = [
            msg.envelope
            for msg in list(self.engine.queue.messages.values())
            if msg.location in (Location.MEMORY, Location.JOURNAL) and msg.data is not None
        ]
        if MEMORY not in dirs:
            in_memory = []

        def work() -> list[DomainShape]:
            return queue_shape(self.files.envelopes(file_dirs, now) + in_memory, now)

        shapes: list[DomainShape] = await self.run_blocking(work)
        return shapes

    # -- changing ------------------------------------------------------------------

    async def act(self, action: str, message_id: str, user: str) -> ActionResult:
        if action not in ACTIONS:
            raise ValueError(f"no queue action {action!r}")
        if not is_valid_message_id(message_id):
            raise BadMessageId(message_id)
        result = await self._act_in_memory(action, message_id)
        if result is None:
            now = self.now()
            result = await self.run_blocking(lambda: self.files.act(action, message_id, now))
            self._update_live([result])
        self._audit(user, [result])
        return result

    async def act_on_matching(
        self, action: str, which: QueueFilter, user: str
    ) -> list[ActionResult]:
        if action not in ACTIONS:
            raise ValueError(f"no queue action {action!r}")
        results = []
        if MEMORY in which.dirs:
            acts = [
                defer.ensureDeferred(self._act_in_memory(action, entry.message_id, which.domain))
                for entry in self.memory.entries(which)
            ]
            for one in await defer.gatherResults(acts, consumeErrors=True):
                if one is not None:
                    results.append(one)
        file_dirs = tuple(d for d in which.dirs if d != MEMORY)
        if file_dirs:
            now = self.now()
            on_files = attrs.evolve(which, dirs=file_dirs)
            found: list[ActionResult] = await self.run_blocking(
                lambda: self.files.act_on_matching(action, on_files, now)
            )
            self._update_live(found)
            results.extend(found)
        self._audit(user, results)
        return results

    async def _act_in_memory(
        self, action: str, message_id: str, domain: str = ""
    ) -> ActionResult | None:
        """The memory action, with the sender and the recipients it touched (event log)."""
        msg = self.engine.queue.messages.get(message_id)
        before = tuple(msg.envelope.rcpt_to_send) if msg is not None else ()
        result = await self.memory.act(action, message_id, domain)
        if result is None or not result.ok or msg is None:
            return result
        kept = {a.lower() for a in msg.envelope.rcpt_to_send}
        touched = before
        if action == "delete" and kept:
            touched = tuple(a for a in before if a.lower() not in kept)
        return attrs.evolve(result, sender=msg.envelope.mail_from, recipients=touched)

    def _update_live(self, results: list[ActionResult]) -> None:
        """Tell the LiveQueue at once what the file actions changed."""
        queue = self.engine.queue
        changed = []
        for r in results:
            if not r.ok:
                continue
            if r.source == "retry":
                msg = queue.messages.get(r.message_id)
                if msg is not None and msg.location == Location.RETRY:
                    queue.forget(r.message_id)
            if r.dest == "retry":
                changed.append(r.message_id)
        if changed:
            # Only these files, read in a worker thread: retry/ may hold a million others.
            d = queue.scanner.check_ids(changed, self.run_blocking)
            d.addErrback(lambda f: log.failure("re-reading changed retry/ files failed", f))

    def _audit(self, user: str, results: list[ActionResult]) -> None:
        done = [r for r in results if r.ok]
        if not done:
            return
        now = self.now()
        for r in done:
            self.engine.events.emit_records(
                action_records(
                    r.action, r.message_id, r.sender, r.recipients, now=now, by=f"web:{user}"
                ),
                now,
            )
        action = done[0].action
        if len(done) == 1:
            log.info(
                "web admin {user}: {action} {id}: {text}",
                user=user,
                action=action,
                id=done[0].message_id,
                text=done[0].text,
            )
        else:
            log.info(
                "web admin {user}: {action} on {n} messages", user=user, action=action, n=len(done)
            )
