"""The web admin's queue actions: the shared file actions plus the engine's own view.

File work (the same ``QueueActions`` the ``mailengine queue`` command uses)
runs in a worker thread; messages the engine holds only in memory are handled
here in the reactor thread, and the LiveQueue is brought up to date at once
(forget what left retry/, rescan what came back) instead of at the next check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from mailengine.engine import Engine
from mailengine.queue.actions import (
    ACTION_SOURCES,
    ACTIONS,
    ActionResult,
    MessageDetail,
    QueueActions,
    QueueEntry,
    QueueFilter,
    cut_domain,
)
from mailengine.queue.inf import is_valid_message_id
from mailengine.queue.shape import DomainShape
from mailengine.queue.store import BadMessageId

log = Logger(namespace="mailengine.web")
RunBlocking = Callable[[Callable[[], Any]], defer.Deferred]
MEMORY = "memory"  # the web's name for messages held only in memory (no files)


class QueueControl:
    def __init__(self, engine: Engine, run_blocking: RunBlocking, now: Callable[[], float]) -> None:
        self.engine = engine
        self.files = QueueActions(engine.store)
        self.run_blocking = run_blocking
        self.now = now

    # -- reading -------------------------------------------------------------------

    def memory_entries(self, which: QueueFilter) -> list[QueueEntry]:
        now = self.now()
        out = []
        for message_id, msg in list(self.engine.queue.messages.items()):
            if msg.location != MEMORY:
                continue
            if which.matches(message_id, msg.envelope, now):
                out.append(
                    QueueEntry(
                        message_id, MEMORY, msg.envelope.time_created, msg.envelope, "", msg.size
                    )
                )
        out.sort(key=lambda e: (e.mtime, e.message_id))
        return out

    async def page(
        self, which: QueueFilter, offset: int, limit: int
    ) -> tuple[list[QueueEntry], int]:
        if MEMORY in which.dirs:
            entries = self.memory_entries(which)
            return entries[offset : offset + limit], len(entries)
        now = self.now()
        result: tuple[list[QueueEntry], int] = await self.run_blocking(
            lambda: self.files.page(which, now, offset, limit)
        )
        return result

    async def count(self, which: QueueFilter) -> tuple[int, int]:
        """Matching messages and their recipients (for a confirmation question)."""
        if MEMORY in which.dirs:
            entries = self.memory_entries(which)
        else:
            now = self.now()
            entries = await self.run_blocking(lambda: list(self.files.entries(which, now)))
        return len(entries), sum(len(e.recipients) for e in entries)

    async def show(self, message_id: str) -> MessageDetail | None:
        if not is_valid_message_id(message_id):
            raise BadMessageId(message_id)
        msg = self.engine.queue.messages.get(message_id)
        if msg is not None and msg.location == MEMORY and msg.data is not None:
            entry = QueueEntry(
                message_id, MEMORY, msg.envelope.time_created, msg.envelope, "", msg.size
            )
            head = msg.data[:65536].decode("utf-8", "replace").replace("\r\n", "\n")
            return MessageDetail(entry, msg.envelope.to_inf(), head.partition("\n\n")[0])
        now = self.now()
        detail: MessageDetail | None = await self.run_blocking(
            lambda: self.files.show(message_id, now)
        )
        return detail

    async def summary(self, dirs: tuple[str, ...]) -> list[DomainShape]:
        now = self.now()
        shapes: list[DomainShape] = await self.run_blocking(lambda: self.files.summary(dirs, now))
        return shapes

    # -- changing ------------------------------------------------------------------

    async def act(self, action: str, message_id: str, user: str) -> ActionResult:
        if action not in ACTIONS:
            raise ValueError(f"no queue action {action!r}")
        if not is_valid_message_id(message_id):
            raise BadMessageId(message_id)
        result = self._act_in_memory(action, message_id, "")
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
            for entry in self.memory_entries(which):
                one = self._act_in_memory(action, entry.message_id, which.domain)
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

    def _act_in_memory(self, action: str, message_id: str, domain: str) -> ActionResult | None:
        """Messages the engine holds only in memory; None when the message is not one."""
        queue = self.engine.queue
        msg = queue.messages.get(message_id)
        if msg is None or msg.location != MEMORY or msg.data is None:
            return None
        if message_id not in queue.schedule:
            return ActionResult(message_id, action, False, "being sent now", MEMORY)
        if action == "delete":
            if domain:
                cut = cut_domain(msg.envelope, domain, self.now())
                if cut.keep_message:
                    return ActionResult(
                        message_id,
                        action,
                        bool(cut.removed),
                        cut.text,
                        MEMORY,
                        cut.removed,
                        dest=MEMORY if cut.removed else "",
                    )
            queue.forget(message_id)
            return ActionResult(
                message_id,
                action,
                True,
                "deleted from memory",
                MEMORY,
                len(msg.envelope.rcpt_to_send),
            )
        if action == "hold":
            msg.envelope.add_log(self.now(), "held by the operator")
            self.engine.store.write_message("hold", msg.envelope, msg.data, durable=True)
            queue.forget(message_id)
            return ActionResult(
                message_id, action, True, "held (memory -> hold/)", MEMORY, dest="hold"
            )
        if action == "retry-now":
            return ActionResult(
                message_id,
                action,
                True,
                "already due: sent as soon as a connection is free",
                MEMORY,
            )
        sources = " or ".join(f"{s}/" for s in ACTION_SOURCES[action])
        return ActionResult(
            message_id, action, False, f"in memory; {action} works on {sources}", MEMORY
        )

    def _update_live(self, results: list[ActionResult]) -> None:
        """Tell the LiveQueue at once what the file actions changed."""
        queue = self.engine.queue
        rescan = False
        for r in results:
            if not r.ok:
                continue
            if r.source == "retry":
                msg = queue.messages.get(r.message_id)
                if msg is not None and msg.location == "retry":
                    queue.forget(r.message_id)
            if r.dest == "retry":
                rescan = True
        if rescan:
            queue.scan_retry()

    def _audit(self, user: str, results: list[ActionResult]) -> None:
        done = [r for r in results if r.ok]
        if not done:
            return
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
