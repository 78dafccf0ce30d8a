"""Every queue check interval: shutdown.txt, the retry/ scan, retention of done/ and incoming/."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Protocol

from twisted.application import service
from twisted.internet import defer, threads
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from mailengine.config.model import Config
from mailengine.queue.actions import QueueActions
from mailengine.queue.commit import GroupCommit
from mailengine.queue.journal import recover_journal
from mailengine.queue.live import LiveQueue
from mailengine.queue.store import DIRS, QueueStore, worker_working_dirs

log = Logger(namespace="mailengine.queue")

# A claim this young may belong to an operator action running now (they take
# milliseconds); older ones were left by an action a crash cut short.
CLAIM_SETTLE_SECONDS = 2.0


class QueueParts(Protocol):
    """What the queue's services need of the engine (``Engine``)."""

    @property
    def config(self) -> Config: ...

    @property
    def reactor(self) -> Any: ...

    @property
    def store(self) -> QueueStore: ...

    @property
    def queue(self) -> LiveQueue: ...

    @property
    def committer(self) -> GroupCommit: ...


class Role(enum.Enum):
    """Who runs the check: the one engine process, or one of the worker processes and their
    supervisor ([server] workers > 1), between which the duties are split."""

    ENGINE = "engine"  # everything below
    WORKER = "worker"  # its own working/ at start; the retry/ scan
    SUPERVISOR = "supervisor"  # every repair at start; shutdown.txt; retention; no scan


class QueueChecker(service.Service):
    """Runs the periodic queue check; ``request_stop`` is called when shutdown.txt appears."""

    def __init__(
        self,
        engine: QueueParts,
        request_stop: Callable[[], None],
        run_in_thread: Callable[[Callable[[], Any]], defer.Deferred] | None = None,
        *,
        role: Role = Role.ENGINE,
    ) -> None:
        self.engine = engine
        self.role = role
        self.request_stop = request_stop
        self._call: IDelayedCall | None = None
        self._claims_call: IDelayedCall | None = None
        self._sweeping: defer.Deferred | None = None
        self.checks = 0
        reactor = engine.reactor
        self.run_in_thread = run_in_thread or (
            lambda fn: threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn)
        )

    def startService(self) -> None:
        super().startService()
        store = self.engine.store
        store.ensure_dirs()
        if self.role != Role.WORKER and store.take_shutdown_request():
            log.info("removed a stale retry/shutdown.txt left from before this start")
        # working/ is small and must be whole before mail arrives; the other
        # directories may hold millions of files: their repairs run in the committer's
        # thread (after them, in order, every queue write of this run), then the first
        # check. SMTP answers meanwhile. A worker repairs only its own working/ (the
        # other workers are running); the supervisor every worker's, before they start.
        stores = [store]
        if self.role != Role.WORKER:  # also after a run with workers, now with one engine
            stores += [store.for_worker(int(d[1:])) for d in worker_working_dirs(store.root)]
        for own in stores:
            self._recover_working(own)
        self.engine.config.subscribe(self._setting_changed)
        if self.role == Role.WORKER:
            self.check()
            return
        self.restore_claims()
        now = self.engine.reactor.seconds()
        cutoff = now - 3600
        others = tuple(d for d in DIRS if d != "working")
        # Supervisor: its workers start meanwhile; a move of theirs in progress is not
        # one a crash cut short.
        settled = now if self.role == Role.SUPERVISOR else None

        def repair() -> tuple[list[str], int]:
            repaired = store.repair_interrupted_moves(others, settled_before=settled)
            return repaired, store.remove_stale_temp_files(cutoff)

        def repaired(result: tuple[list[str], int]) -> None:
            self._report_repairs(result[0])
            if result[1]:
                log.info("removed {n} half-written temporary files left by a crash", n=result[1])

        d = self.engine.committer.submit(repair)
        d.addCallback(repaired)
        d.addErrback(lambda f: log.failure("repairing the queue directories failed", f))
        d.addBoth(lambda _: self.check() if self.running else None)

    def _recover_working(self, store: QueueStore) -> None:
        """Finish moves, restore the receipt journal, put working/ back into retry/."""
        self._report_repairs(store.repair_interrupted_moves(("working",)))
        restored = recover_journal(store)
        if restored:
            log.info("restored {n} messages from the receipt journal into retry/", n=restored)
        moved = store.recover_working()
        if moved:
            log.info("moved {n} messages left in working/ to retry/", n=len(moved))

    def _report_repairs(self, repaired: list[str]) -> None:
        if repaired:
            log.warn("finished {n} queue moves cut short by a crash", n=len(repaired))

    def restore_claims(self) -> defer.Deferred:
        """Put back ``.inf-claimed`` files an operator action left when it was cut short.

        A claim a few seconds old may be an action running right now (a
        ``mailengine queue`` beside the start): it is looked at again later. The
        directories are walked in the committer's thread (retry/ may hold millions of
        files), before any later queue work.
        """
        young: list[str] = []
        now = self.engine.reactor.seconds()
        actions = QueueActions(self.engine.store)

        def restore() -> list[str]:
            return actions.restore_stale_claims(now, min_age=CLAIM_SETTLE_SECONDS, young=young)

        def restored(ids: list[str]) -> list[str]:
            if ids:
                log.warn(
                    "restored {n} messages claimed by an operator action that never "
                    "finished: {ids}",
                    n=len(ids),
                    ids=", ".join(ids[:10]) + (" ..." if len(ids) > 10 else ""),
                )
            if young and self.running:
                self._claims_call = self.engine.reactor.callLater(
                    CLAIM_SETTLE_SECONDS, self.restore_claims
                )
            return ids

        d = self.engine.committer.submit(restore).addCallback(restored)
        d.addErrback(lambda f: log.failure("restoring claimed messages failed", f))
        return d

    def _setting_changed(self, section: str, key: str, value: Any) -> None:
        # A new interval counts from now, not after the old (maybe long) wait.
        call = self._call
        if (
            (section, key) == ("queue", "check_interval_seconds")
            and call is not None
            and call.active()
        ):
            call.reset(value)

    def stopService(self) -> None:
        super().stopService()
        for call in (self._call, self._claims_call):
            if call is not None and call.active():
                call.cancel()

    def check(self) -> None:
        """One queue check; reschedules itself with the current interval (a live setting)."""
        self._call = None
        self.checks += 1
        engine = self.engine
        try:
            if self.role != Role.WORKER and engine.store.take_shutdown_request():
                log.info("retry/shutdown.txt found: shutting down")
                self.request_stop()
                return
            if self.role != Role.SUPERVISOR:
                self.scan_retry()
            if self.role != Role.WORKER:
                self.sweep_retention()
        except Exception:
            log.failure("queue check failed")
        if self.running:
            interval = engine.config.queue.check_interval_seconds
            self._call = engine.reactor.callLater(interval, self.check)

    def scan_retry(self) -> defer.Deferred:
        """Index retry/ in worker threads (one pass at a time; SMTP goes on meanwhile)."""
        d = self.engine.queue.scan_retry_in_background(self.run_in_thread)
        return d.addErrback(lambda f: log.failure("scanning retry/ failed", f))

    def sweep_retention(self) -> defer.Deferred:
        """Delete done/ and incoming/ messages older than their retention (0 = keep).

        The listing runs in a worker thread: done/ may hold hundreds of thousands
        of files, and the reactor keeps serving SMTP meanwhile. One sweep at a time.
        """
        if self._sweeping is not None:
            return self._sweeping
        q = self.engine.config.queue
        now = self.engine.reactor.seconds()
        due = [
            (dirname, minutes)
            for dirname, minutes in (
                ("done", q.done_retention_minutes),
                ("incoming", q.incoming_retention_minutes),
            )
            if minutes > 0
        ]
        if not due:
            return defer.succeed({})
        store = self.engine.store

        def sweep() -> dict[str, int]:
            return {d: store.remove_older_than(d, now - minutes * 60) for d, minutes in due}

        def report(removed: dict[str, int]) -> dict[str, int]:
            self._sweeping = None
            for dirname, minutes in due:
                if removed.get(dirname):
                    log.info(
                        "removed {n} messages older than {m} minutes from {d}/",
                        n=removed[dirname],
                        m=minutes,
                        d=dirname,
                    )
            return removed

        def failed(failure: Any) -> dict[str, int]:
            self._sweeping = None
            log.failure("removing old messages from done/ and incoming/ failed", failure)
            return {}

        d = self.run_in_thread(sweep).addCallbacks(report, failed)
        if not d.called:
            self._sweeping = d
        return d
