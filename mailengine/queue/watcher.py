"""Act at once on retry/: inotify tells which files came or went (issue 12 item 5).

A file another program drops, a ``mailengine queue`` action and ``shutdown.txt``
reach the engine within a second instead of at the next queue check. Linux
only (``twisted.internet.inotify``); elsewhere, or when inotify cannot be had,
the periodic check (queue/checker.py) does it all, as before. Events only name
files: what they hold is read by the scanner, in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from mailengine.queue.checker import QueueParts
from mailengine.queue.inf import is_valid_message_id
from mailengine.queue.scanner import RunInThread
from mailengine.queue.store import SHUTDOWN_FILE

log = Logger(namespace="mailengine.queue")

# Events that arrive together are handled together (a burst of drops: one trip).
COALESCE_SECONDS = 0.02


def watch_mask() -> int:
    from twisted.internet import inotify

    # Written in place (close), renamed in or out, deleted; a lost event queue
    # (IN_Q_OVERFLOW) arrives whatever the mask says.
    return inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO | inotify.IN_MOVED_FROM | inotify.IN_DELETE


def changed_ids(names: set[str]) -> set[str]:
    """Message ids whose ``.inf`` a set of changed file names touches."""
    return {
        name[:-4]
        for name in names
        if name.endswith(".inf") and not name.startswith(".") and is_valid_message_id(name[:-4])
    }


class RetryWatcher(service.Service):
    """Watches retry/; hands changed ids to the scanner and shutdown.txt to ``request_stop``."""

    def __init__(
        self,
        engine: QueueParts,
        request_stop: Callable[[], None],
        run_in_thread: RunInThread,
        rescan: Callable[[], Any],
    ) -> None:
        self.engine = engine
        self.request_stop = request_stop
        self.run_in_thread = run_in_thread
        self.rescan = rescan  # a whole pass: after events were lost
        self._notifier: Any = None
        self._names: set[str] = set()
        self._overflowed = False
        self._call: IDelayedCall | None = None
        self.is_watching = False

    def startService(self) -> None:
        super().startService()
        try:
            from twisted.internet import inotify

            notifier = inotify.INotify(self.engine.reactor)
            notifier.startReading()
            notifier.watch(
                _filepath(self.engine.store.dir("retry")),
                mask=watch_mask(),
                callbacks=[self._event],
            )
        except Exception as exc:  # no inotify here (not Linux, no watches left): poll
            log.info(
                "retry/ is not watched ({why}); files there are found at each queue check",
                why=exc,
            )
            return
        self._notifier = notifier
        self.is_watching = True

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None
        self.is_watching = False

    def _event(self, _ignored: Any, path: Any, mask: int) -> None:
        from twisted.internet import inotify

        if mask & inotify.IN_Q_OVERFLOW:
            self._overflowed = True
        else:
            name = path.basename()
            self._names.add(name.decode("utf-8", "replace") if isinstance(name, bytes) else name)
        if self._call is None:
            self._call = self.engine.reactor.callLater(COALESCE_SECONDS, self.handle)

    def handle(self) -> defer.Deferred | None:
        """Act on what changed since the last call (reactor thread; reading is threaded)."""
        self._call = None
        names, self._names = self._names, set()
        overflowed, self._overflowed = self._overflowed, False
        if SHUTDOWN_FILE in names and self.engine.store.take_shutdown_request():
            log.info("retry/shutdown.txt found: shutting down")
            self.request_stop()
            return None
        if overflowed:
            log.info("too many changes in retry/ at once: scanning it whole")
            return defer.maybeDeferred(self.rescan)
        ids = changed_ids(names)
        if not ids:
            return None
        d = self.engine.queue.scanner.check_ids(sorted(ids), self.run_in_thread)
        return d.addErrback(lambda f: log.failure("reading changed files in retry/ failed", f))


def _filepath(path: str) -> Any:
    from twisted.python.filepath import FilePath

    return FilePath(path)
