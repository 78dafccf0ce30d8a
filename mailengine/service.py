"""makeService: the one place that wires the engine's objects together."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet import defer, threads
from twisted.internet.error import CannotListenError
from twisted.logger import Logger, globalLogPublisher

from mailengine import __version__
from mailengine.config.advice import advice
from mailengine.config.loader import ConfigError, load_or_create
from mailengine.config.model import Config
from mailengine.config.passwords import load_password_file
from mailengine.dns.preload import PreloadService
from mailengine.dns.resolver import MailResolver
from mailengine.engine import Engine
from mailengine.observe.acceptwatch import AcceptFailureWatch
from mailengine.observe.books import BOOKS_FILE
from mailengine.observe.counters import Counters
from mailengine.observe.eventlog import EventLog
from mailengine.observe.logfiles import DailyLogFiles
from mailengine.observe.stats import StatsReporter
from mailengine.observe.webhook import EventWebhook
from mailengine.queue.bookkeeping import Bookkeeper
from mailengine.queue.checker import QueueChecker, Role
from mailengine.queue.commit import GroupCommit
from mailengine.queue.ids import MessageIdFactory
from mailengine.queue.live import LiveQueue
from mailengine.queue.store import QueueStore
from mailengine.queue.suppression import FILE_NAME as SUPPRESSION_FILE
from mailengine.queue.suppression import SuppressionList
from mailengine.queue.watcher import RetryWatcher
from mailengine.queue.writeback import StopWriteBack
from mailengine.reports.bouncepatterns import load_patterns
from mailengine.reports.categories import PatternError
from mailengine.signing.keys import load_keys
from mailengine.signing.process import SigningProcess
from mailengine.signing.signer import Signer
from mailengine.startup import (
    Listener,
    StartupError,
    cannot_listen,
    prepare_directories,
    smtp_listener,
    startup_failure,
    try_binding,
    unwritable_queue,
    web_listener,
)
from mailengine.workers.restarts import worker_count

if TYPE_CHECKING:  # imported when the parts are made (the plugin loads this module)
    from mailengine.inbound.server import InboundFactory
    from mailengine.scheduler.grants import Grants

log = Logger(namespace="mailengine")

# Bounds of a graceful stop (manual §7: wait for it to finish to avoid lost or
# duplicated mail; a stop must still never hang). SMTP transactions in flight get
# [server] stop_timeout_seconds; the delivery engine cuts its connections then, and
# gets this much longer to write them back. Writing what memory holds to retry/ is
# bounded by the amount (about 0.12 ms per message measured on one disk, so a full
# 500,000-message memory queue gets 560 s rather than being cut off half-written).
DELIVERY_GRACE_SECONDS = 10.0
QUEUE_DRAIN_SECONDS = 60.0
QUEUE_DRAIN_SECONDS_PER_MESSAGE = 0.001


def load_settings(root: str, config_path: str | None) -> Config:
    path = config_path or os.path.join(root, "config", "mailengine.toml")
    try:
        config, created = load_or_create(path)
    except ConfigError as exc:
        raise StartupError(
            "the configuration has problems:\n  " + "\n  ".join(exc.problems)
        ) from None
    if created:
        log.info("wrote the default configuration to {path}", path=path)
    return config


def build_engine(
    root: str, config: Config, reactor: Any, *, test_mode: bool = False, worker: int = 0
) -> Engine:
    """Make the engine's parts (of worker process ``worker``, 0: the one engine); nothing
    starts until the service does."""
    root = os.path.abspath(root)
    store = QueueStore(os.path.join(root, "mailq-test" if test_mode else "mailq"), worker=worker)
    counters = Counters(started=reactor.seconds())
    reactor.suggestThreadPoolSize(config.server.max_threads)

    def run_in_thread(fn: Callable[[], Any]) -> defer.Deferred:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn)

    committer = GroupCommit(run_in_thread, store.sync_all)
    queue = LiveQueue(store, config, reactor, committer, counters, run_in_thread=run_in_thread)
    hostname = socket.gethostname()
    # Ids keep the name of the start: they must stay unique, not follow renames.
    ids = MessageIdFactory(os.getpid(), reactor.seconds(), config.server.helo_text or hostname)
    engine = Engine(
        root=root,
        config=config,
        reactor=reactor,
        store=store,
        queue=queue,
        counters=counters,
        committer=committer,
        ids=ids,
        hostname=hostname,
        test_mode=test_mode,
        run_in_thread=run_in_thread,
    )
    try:
        engine.bounce_patterns = load_patterns(engine.config_dir)
    except PatternError as exc:
        raise StartupError(str(exc)) from None
    engine.suppression = SuppressionList(os.path.join(store.root, SUPPRESSION_FILE))
    # Asked on every event: bind the sections once (a Section reads edits at use time;
    # going through Config's attribute lookup each time cost ~1.5 % of the relay's CPU).
    logs_settings, events_settings = config.logs, config.events
    engine.events = EventLog(
        engine.log_dir,
        retention_days=lambda: logs_settings.retention_days,
        is_enabled=lambda: events_settings.enabled,
    )
    keys, problems = load_keys(config.dkim.key, engine.config_dir)
    if problems:
        raise StartupError(
            f"the DKIM keys of {config.path} have problems:\n  " + "\n  ".join(problems)
        )
    engine.signer = Signer(keys, multi_buffer=config.dkim.rsa_multi_buffer)
    return engine


class EngineService(service.MultiService):
    """Listeners, timers and parts; stops in order: stop accepting, drain, write to retry/.

    A worker process (``workers.child``) runs a subclass: the supervisor keeps the books,
    the log files, the web admin and the webhook for the whole box.
    """

    role = Role.ENGINE
    books_file = BOOKS_FILE  # mailq/books.txt

    def __init__(self, engine: Engine, *, daemon: bool = False) -> None:
        super().__init__()
        self.engine = engine
        self.daemon = daemon
        self.quiet_repeated_signals = False  # makeService: a 2nd Ctrl-C only says "stopping"
        self.listeners: list[Listener] = []
        self.ports: list[Any] = []
        self.stopped_by_shutdown_file = False
        self.stopping = False
        self.writeback: StopWriteBack | None = None
        self.inbound: InboundFactory | None = None  # none when receiving is off
        self._logfiles: DailyLogFiles | None = None
        if engine.signer and engine.config.dkim.separate_process:
            # First in, last out: it signs until receiving and delivery have stopped.
            engine.signing_process = SigningProcess(engine)
            engine.signing_process.setServiceParent(self)
        checker = QueueChecker(engine, self.request_stop, role=self.role)
        checker.setServiceParent(self)
        watcher = RetryWatcher(engine, self.request_stop, checker.run_in_thread, checker.scan_retry)
        watcher.setServiceParent(self)
        StatsReporter(engine).setServiceParent(self)
        self.bookkeeper = Bookkeeper(engine, self.books_file)
        self.bookkeeper.setServiceParent(self)
        if self.role == Role.ENGINE:
            webhook = EventWebhook(
                engine.log_dir, lambda: engine.config.events.webhook_url, engine.reactor
            )
            webhook.setServiceParent(self)
            engine.events.flushed.append(webhook.poke)
        self.resolver = MailResolver.from_config(engine.config, engine.reactor)
        preload = PreloadService(self.resolver, engine.config, engine.reactor)
        preload.setServiceParent(self)
        self._add_delivery()
        self._add_smtp()
        self._add_web()

    @property
    def node_suffix(self) -> str:
        """Added to [cluster] node_name: each process holding shared caps is a node."""
        return ""

    @property
    def box_workers(self) -> int:
        """Processes of this box that share its caps (a worker's: [server] workers)."""
        return 1

    @property
    def node_name(self) -> str:
        """This process among those sharing caps: [cluster] node_name, or the host's."""
        return (self.engine.config.cluster.node_name or self.engine.hostname) + self.node_suffix

    def _grants(self) -> Grants | None:
        """Who grants the caps shared with other processes: Redis ([cluster] redis_url,
        issue 13), else nobody (this process applies every cap on its own)."""
        redis_url = self.engine.config.cluster.redis_url
        if not redis_url:
            return None
        from mailengine.cluster.node import ClusterNode
        from mailengine.cluster.redislink import RedisLink

        reactor = self.engine.reactor
        node = ClusterNode(RedisLink(redis_url), self.node_name, reactor, self.box_workers)
        node.setServiceParent(self)
        return node

    def _add_delivery(self) -> None:
        from mailengine.delivery.sender import DeliveryEngine

        grants = self._grants()
        self.delivery = DeliveryEngine(self.engine, self.resolver, grants)
        self.delivery.setServiceParent(self)
        if self.engine.suppression is not None:
            self.engine.suppression.on_problem = self._suppression_problem

    def _suppression_problem(self, text: str) -> None:
        """A lookup failed: mail flows unchecked (never refused wrongly); told once."""
        log.warn(
            "the suppression list cannot be read ({text}); recipients are not checked "
            "against it until it can",
            text=text,
        )
        self.delivery.reporting.admin_notice(
            "suppression",
            "the suppression list cannot be read",
            f"Looking up a recipient in the suppression list failed: {text}\n"
            "Mail is relayed without the check until the database can be read again.",
        )

    def _add_smtp(self) -> None:
        smtp_in = self.engine.config.smtp_in
        if smtp_in.port == 1:  # manual: port 1 turns receiving off
            return
        from mailengine.inbound.server import InboundFactory, TLSSetupError

        try:
            factory = InboundFactory(self.engine)
        except TLSSetupError as exc:
            raise StartupError(
                f"STARTTLS: {exc}; change [smtp_in] tls_certificate / tls_private_key"
            ) from None
        self.inbound = factory
        self.listeners.append(smtp_listener(smtp_in, factory))

    def _add_web(self) -> None:
        web = self.engine.config.web
        if web.port == 0 or web.allowed_ips.has_zero:
            return
        from mailengine.web.app import make_site
        from mailengine.web.running import Running

        # The web admin's shutdown calls request_stop(); its pages ask the delivery engine.
        site = make_site(self.engine, Running(delivery=self.delivery, service=self))
        self.listeners.append(web_listener(web, site))

    def check_listening(self) -> None:
        """StartupError now if a port cannot be listened on (before twistd daemonizes)."""
        for listener in self.listeners:
            try_binding(listener, self.engine.config.path)

    # -- start ---------------------------------------------------------------

    def privilegedStartService(self) -> None:
        # Ports below 1024 need root: listen before twistd drops privileges.
        reactor = self.engine.reactor
        for listener in self.listeners:
            for address in listener.addresses:
                try:
                    port = reactor.listenTCP(
                        listener.port, listener.factory, backlog=1024, interface=address
                    )
                except CannotListenError as exc:
                    for p in self.ports:
                        p.stopListening()
                    reason = getattr(exc.socketError, "strerror", None) or str(exc.socketError)
                    raise self._startup_failure(
                        cannot_listen(listener, address, reason, self.engine.config.path)
                    ) from None
                self.ports.append(port)
        super().privilegedStartService()

    def _startup_failure(self, message: str) -> BaseException:
        return startup_failure(message, daemon=self.daemon)

    def startService(self) -> None:
        engine = self.engine
        # Again as the user twistd's --uid made us: root could write where we cannot.
        problem = unwritable_queue(engine)
        if problem:
            for port in self.ports:
                port.stopListening()
            raise self._startup_failure(problem)
        if self.role == Role.ENGINE:
            self._logfiles = DailyLogFiles(
                engine.log_dir, lambda: engine.config.logs.retention_days
            )
            globalLogPublisher.addObserver(self._logfiles)
        self._accept_watch = AcceptFailureWatch(self.delivery.out_of_descriptors)
        globalLogPublisher.addObserver(self._accept_watch)
        os.makedirs(engine.log_dir, exist_ok=True)
        for name in ("password.txt",):
            pw = load_password_file(os.path.join(engine.config_dir, name))
            for warning in pw.warnings:
                log.warn("{warning}", warning=warning)
        for line in advice(engine.config):
            log.warn("{advice}", advice=line)
        engine.events.start(engine.reactor)
        super().startService()
        # Said once the reactor runs: twistd starts the services before it runs the
        # reactor, and only then does a SIGTERM stop the engine gracefully (before, it
        # ends the process at once, pid file and all), so "started" means stoppable.
        engine.reactor.callWhenRunning(self.say_started)

    def say_started(self) -> None:
        where = ", ".join(f"{p.getHost().host}:{p.getHost().port}" for p in self.ports) or "none"
        log.info(
            "MailEngine {v} started{test}: listening on {where}; queue {q}",
            v=__version__,
            test=" in test mode" if self.engine.test_mode else "",
            where=where,
            q=self.engine.store.root,
        )

    # -- stop ----------------------------------------------------------------

    def request_stop(self) -> None:
        """shutdown.txt or the web admin: stop the reactor (twistd runs stopService, exits 0)."""
        if self.stopping:  # e.g. shutdown.txt found while a SIGTERM's stop is under way
            log.info("already stopping")
            return
        self.stopped_by_shutdown_file = True
        self.stopping = True
        self.engine.reactor.callLater(0, self.engine.reactor.stop)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        self.stopping = True
        engine = self.engine
        bound = engine.config.server.stop_timeout_seconds
        log.info(
            "stopping: no new connections; SMTP transactions in flight get up to {s} s",
            s=bound,
        )
        if self.quiet_repeated_signals:
            self._say_stopping_on_signals(bound)
        yield defer.gatherResults(
            [defer.maybeDeferred(p.stopListening) for p in self.ports], consumeErrors=True
        )
        self.ports = []
        # Received and sent transactions finish side by side, so the bound is one bound.
        yield defer.gatherResults([self._inbound_in_flight(bound), self._delivery_in_flight(bound)])
        held = sum(n for where, n in engine.queue.counts().items() if where != "retry")
        self.writeback = StopWriteBack(
            engine.queue,
            engine.reactor,
            lambda n: QUEUE_DRAIN_SECONDS + max(n, held) * QUEUE_DRAIN_SECONDS_PER_MESSAGE,
        )
        yield self.writeback.run()  # never "stopped" while acknowledged mail has no copy
        yield defer.maybeDeferred(super().stopService)
        self.bookkeeper.close()
        engine.events.stop()  # after the drain: its events are written too
        if engine.suppression is not None:
            engine.suppression.close()
        log.info("stopped; {n} messages wait in retry/", n=engine.store.count("retry"))
        globalLogPublisher.removeObserver(self._accept_watch)
        if self._logfiles is not None:
            globalLogPublisher.removeObserver(self._logfiles)
            self._logfiles.close()

    def _inbound_in_flight(self, bound: float) -> defer.Deferred:
        """SMTP sessions' drain, bounded; fires (never fails) when it is over."""
        inbound = self.inbound
        if inbound is None:
            return defer.succeed(None)

        def late(failure: Any) -> None:
            log.warn(
                "{n} SMTP sessions still open after {s} s are closed; their mail was "
                "not acknowledged, so their senders keep it",
                n=len(inbound.sessions),
                s=bound,
            )

        d = defer.maybeDeferred(inbound.drain)
        return d.addTimeout(bound, self.engine.reactor).addErrback(late)

    def _delivery_in_flight(self, bound: float) -> defer.Deferred:
        """The delivery engine cuts its own connections at the bound, then writes back;
        bounded again (with grace); fires (never fails) when it is over."""
        limit = bound + DELIVERY_GRACE_SECONDS

        def late(failure: Any) -> None:
            log.failure("delivery did not finish within {s} s", failure, s=limit)

        d = defer.maybeDeferred(self.delivery.drain, bound)
        return d.addTimeout(limit, self.engine.reactor).addErrback(late)

    def _say_still_stopping(self, bound: float) -> None:
        writeback = self.writeback
        if writeback is not None and writeback.waiting:
            log.error("{line}", line=writeback.describe(writeback.held()))
            return
        log.info(
            "already stopping: transactions in flight get up to {s} s, then mail held "
            "in memory is written to retry/",
            s=bound,
        )

    def _say_stopping_on_signals(self, bound: float) -> None:
        """A second Ctrl-C or SIGTERM while stopping: a log line, not twistd's traceback."""
        reactor = self.engine.reactor

        def again(signum: int, frame: Any) -> None:
            reactor.callFromThread(self._say_still_stopping, bound)

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(sig, again)
            except ValueError:  # not the main thread
                pass


def makeService(options: Any) -> service.IService:
    from twisted.internet import reactor

    root = os.path.abspath(options.get("root") or ".")
    if not os.path.isdir(root):
        raise StartupError(f"--root {root} is not a directory")
    config = load_settings(root, options.get("config"))
    engine = build_engine(root, config, reactor, test_mode=bool(options.get("test")))
    # Everything that can refuse the start does so here, before twistd daemonizes.
    prepare_directories(engine)
    twistd = getattr(options, "parent", None) or {}
    daemon = not twistd.get("nodaemon", True)
    count = worker_count(config.server.workers, os.cpu_count())
    if count > 1:
        from mailengine.workers.supervisor import Supervisor

        supervisor = Supervisor(engine, count, options, daemon=daemon)
        supervisor.check_listening()
        return supervisor
    engine_service = EngineService(engine, daemon=daemon)
    engine_service.quiet_repeated_signals = True
    engine_service.check_listening()
    return engine_service
