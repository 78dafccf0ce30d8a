"""``[events] webhook_url``: the event log's files POSTed in order, at least once (treq).

The webhook reads the files the event log wrote, from a cursor kept in
``log/events-webhook.cursor`` (file name and byte offset of the first line
not yet acknowledged). A batch is a JSON array of the next lines; a 2xx
answer moves the cursor past them, anything else (or no answer) is retried
after a pause that doubles up to ``MAX_BACKOFF_SECONDS``. The endpoint may
see a batch twice (an answer lost after it was handled), never a gap.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from mailengine.observe.eventlog import event_files

log = Logger(namespace="mailengine.events")

CURSOR_FILE = "events-webhook.cursor"
BATCH_BYTES = 256 * 1024  # at most this much of a file per POST (whole lines)
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
POST_TIMEOUT_SECONDS = 30.0

Post = Callable[..., "defer.Deferred[Any]"]


def read_batch(path: str, offset: int, limit: int = BATCH_BYTES) -> bytes:
    """Whole lines of ``path`` from ``offset``, at most ``limit`` bytes (one longer line
    whole); b"" when nothing complete is there yet."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read(limit)
            if chunk and b"\n" not in chunk:  # one line longer than the limit
                chunk += fh.readline()
    except FileNotFoundError:
        return b""
    end = chunk.rfind(b"\n")
    return chunk[: end + 1] if end >= 0 else b""


def batch_body(lines: bytes) -> bytes:
    """The POST body: the lines (each one JSON object) as one JSON array."""
    return b"[" + b",".join(ln for ln in lines.split(b"\n") if ln.strip()) + b"]"


class EventWebhook(service.Service):
    """Follows the event files and POSTs what is new whenever the event log flushed."""

    def __init__(
        self,
        directory: str,
        url: Callable[[], str],
        reactor: Any,
        post: Post | None = None,
    ) -> None:
        self.directory = directory
        self._url = url
        self.reactor = reactor
        self._post = post
        self.file = ""
        self.offset = 0
        self.busy = False
        self.backoff = 0.0
        self._retry: Any = None
        self._cursor_kept = False
        self.delivered_batches = 0

    # -- the cursor ------------------------------------------------------------

    @property
    def cursor_path(self) -> str:
        return os.path.join(self.directory, CURSOR_FILE)

    def load_cursor(self) -> None:
        """The saved cursor, or (first use) the end of the files as they are now."""
        try:
            with open(self.cursor_path, encoding="utf-8") as fh:
                saved = json.load(fh)
            self.file, self.offset = str(saved["file"]), int(saved["offset"])
            return
        except (OSError, ValueError, KeyError, TypeError):
            pass
        files = event_files(self.directory)
        self.file = files[-1] if files else ""
        self.offset = os.path.getsize(os.path.join(self.directory, self.file)) if files else 0

    def save_cursor(self) -> None:
        tmp = self.cursor_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"file": self.file, "offset": self.offset}, fh)
        os.replace(tmp, self.cursor_path)

    # -- sending ---------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        os.makedirs(self.directory, exist_ok=True)
        self.load_cursor()
        self.poke()

    def stopService(self) -> None:
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def poke(self) -> None:
        """New lines may be there (the event log flushed): send unless busy or backing off."""
        if not self.running or self.busy or not self._url():
            return
        if not self._cursor_kept:
            # The starting point is kept as soon as a URL is set: a restart before the
            # first acknowledgement must not skip what was written meanwhile.
            self._keep_cursor()
        if self._retry is not None and self._retry.active():
            return
        self._send_next()

    def _next_batch(self) -> bytes:
        """The next lines after the cursor, moving on to a newer file when one is done."""
        while True:
            if self.file:
                lines = read_batch(os.path.join(self.directory, self.file), self.offset)
                if lines:
                    return lines
            # A day's file is done once a newer one exists (or it was pruned).
            newer = [f for f in event_files(self.directory) if f > self.file]
            if not newer:
                return b""
            self.file, self.offset = newer[0], 0

    def _send_next(self) -> None:
        lines = self._next_batch()
        if not lines:
            return
        self.busy = True
        d = defer.maybeDeferred(self._do_post, batch_body(lines))
        d.addCallback(self._answered, len(lines))
        d.addErrback(self._failed)
        d.addErrback(lambda f: log.failure("event webhook", f))

    def _do_post(self, body: bytes) -> defer.Deferred[Any]:
        post = self._post
        if post is None:
            import treq  # only when a webhook is configured

            post = treq.post
        headers: dict[bytes | str, list[bytes | str]] = {b"Content-Type": [b"application/json"]}
        return post(
            self._url(),
            data=body,
            headers=headers,
            timeout=POST_TIMEOUT_SECONDS,
        )

    def _answered(self, response: Any, consumed: int) -> Any:
        code = int(response.code)
        d: defer.Deferred[Any] = defer.maybeDeferred(_drain, response)
        if not 200 <= code < 300:
            return d.addBoth(lambda _: self._failed_with(f"HTTP {code}"))
        return d.addBoth(lambda _: self._acknowledged(consumed))

    def _acknowledged(self, consumed: int) -> None:
        self.busy = False
        self.offset += consumed
        self.delivered_batches += 1
        if self.backoff:
            log.info("event webhook reachable again; catching up")
        self.backoff = 0.0
        self._keep_cursor()
        self.poke()

    def _keep_cursor(self) -> None:
        try:
            self.save_cursor()
            self._cursor_kept = True
        except OSError as exc:
            log.warn("cannot save the event webhook's cursor: {why}", why=exc)

    def _failed(self, failure: Any) -> None:
        self._failed_with(failure.getErrorMessage())

    def _failed_with(self, why: str) -> None:
        self.busy = False
        first = not self.backoff
        self.backoff = min(MAX_BACKOFF_SECONDS, self.backoff * 2 or FIRST_BACKOFF_SECONDS)
        if first:
            log.warn(
                "event webhook {url} failed ({why}); retrying with pauses up to {m} s",
                url=self._url(),
                why=why,
                m=int(MAX_BACKOFF_SECONDS),
            )
        if self.running:
            self._retry = self.reactor.callLater(self.backoff, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self.poke()


def _drain(response: Any) -> Any:
    """Read the answer's body so the connection can be reused (treq's ``content``)."""
    content = getattr(response, "content", None)
    return content() if content is not None else None
