"""Keeps ``mailq/books.txt`` up to date for ``mailengine queue audit``, and closes the books
at a graceful stop with one log line saying whether they balance."""

from __future__ import annotations

import os
from typing import Any, Protocol

from twisted.application import service
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from mailengine.observe.books import BOOKS_FILE, Books, balance_line, books_text
from mailengine.observe.counters import Counters
from mailengine.observe.timestamps import format_stamp
from mailengine.queue.store import QueueStore

log = Logger(namespace="mailengine.queue")

WRITE_EVERY_SECONDS = 10.0


class QueuedRecipients(Protocol):
    """The live queue (``LiveQueue``): what it holds, counted."""

    def queued_recipients(self) -> int: ...


class BooksParts(Protocol):
    """What the bookkeeper needs of the engine (``Engine``)."""

    @property
    def store(self) -> QueueStore: ...

    @property
    def reactor(self) -> Any: ...

    @property
    def counters(self) -> Counters: ...

    @property
    def queue(self) -> QueuedRecipients: ...


class Bookkeeper(service.Service):
    """Writes the books while they move; ``close()`` after the queue is written to retry/."""

    def __init__(self, engine: BooksParts, file_name: str = BOOKS_FILE) -> None:
        self.engine = engine
        self.file_name = file_name  # a worker process keeps its own (``books-wN.txt``)
        self._call: IDelayedCall | None = None
        self._written: Books | None = None
        self._warned = False

    @property
    def path(self) -> str:
        return os.path.join(self.engine.store.root, self.file_name)

    def startService(self) -> None:
        super().startService()
        self._call = self.engine.reactor.callLater(WRITE_EVERY_SECONDS, self._tick)

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()

    def _tick(self) -> None:
        books = self.engine.counters.books
        if books != self._written:
            # Running: relay mail held in memory has no file, so what the queue must hold
            # is written, not counted (counting walks every message: only at the stop).
            self._write(books, books.should_be_queued, "running")
        self._call = self.engine.reactor.callLater(WRITE_EVERY_SECONDS, self._tick)

    def close(self) -> int:
        """At a stop, once everything held is in retry/: count, log and write the books.

        Returns how many recipients are unaccounted for (0 when they balance).
        """
        books = self.engine.counters.books.copy()
        queued = self.engine.queue.queued_recipients()
        line = balance_line(books, queued)
        if books.unaccounted(queued):
            log.error("{line}", line=line)
        else:
            log.info("{line}", line=line)
        self._write(books, queued, "stopped")
        return books.unaccounted(queued)

    def _write(self, books: Books, queued: int, state: str) -> None:
        text = books_text(
            books,
            queued=queued,
            written_at=format_stamp(self.engine.reactor.seconds()),
            state=state,
        )
        try:
            self.engine.store.write_file(self.file_name, text.encode())
        except OSError as exc:
            if not self._warned:  # a full disk must not fill the log too
                log.warn("cannot write {path}: {why}", path=self.path, why=exc)
                self._warned = True
            return
        self._written = books.copy()
