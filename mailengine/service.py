"""makeService: the one place that wires the engine's objects together."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

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
from mailengine.observe.counters import Counters
from mailengine.observe.logfiles import DailyLogFiles
from mailengine.observe.stats import StatsReporter
from mailengine.queue.checker import QueueChecker
from mailengine.queue.commit import GroupCommit
from mailengine.queue.ids import MessageIdFactory
from mailengine.queue.live import LiveQueue
from mailengine.queue.store import QueueStore

log = Logger(namespace="mailengine")

# Bounds of a graceful stop (manual §7: wait for it to finish to avoid lost or
# duplicated mail; a stop must still never hang).
INBOUND_DRAIN_SECONDS = 30.0
DELIVERY_DRAIN_SECONDS = 30.0
QUEUE_DRAIN_SECONDS = 60.0


class StartupError(SystemExit):
    """A one-line reason the engine cannot start (shown instead of a traceback)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"mailengine: {message}")


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


def build_engine(root: str, config: Config, reactor: Any, *, test_mode: bool = False) -> Engine:
    """Make the engine's parts; nothing starts until the service does."""
    root = os.path.abspath(root)
    store = QueueStore(os.path.join(root, "mailq-test" if test_mode else "mailq"))
    counters = Counters(started=reactor.seconds())
    reactor.suggestThreadPoolSize(config.server.max_threads)

    def run_in_thread(fn: Callable[[], Any]) -> defer.Deferred:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn)

    committer = GroupCommit(run_in_thread, store.sync_all)
    queue = LiveQueue(store, config, reactor, committer, counters)
    hostname = config.server.helo_text or socket.gethostname()
    ids = MessageIdFactory(os.getpid(), reactor.seconds(), hostname)
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
    )
    engine.parts["resolver"] = MailResolver.from_config(config, reactor)
    return engine


def _listen_addresses(ranges: Any) -> list[str]:
    return ranges.addresses() if ranges else [""]


class EngineService(service.MultiService):
    """Listeners, timers and parts; stops in order: stop accepting, drain, write to retry/."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self.ports: list[Any] = []
        self.stopped_by_shutdown_file = False
        self._logfiles: DailyLogFiles | None = None
        engine.parts["service"] = self  # the web admin's shutdown calls request_stop()
        QueueChecker(engine, self.request_stop).setServiceParent(self)
        StatsReporter(engine).setServiceParent(self)
        preload = PreloadService(engine.parts["resolver"], engine.config, engine.reactor)
        preload.setServiceParent(self)
        self._add_delivery()

    def _add_delivery(self) -> None:
        from mailengine.delivery.sender import DeliveryEngine

        delivery = DeliveryEngine(self.engine)
        self.engine.parts["delivery"] = delivery
        delivery.setServiceParent(self)

    # -- start ---------------------------------------------------------------

    def privilegedStartService(self) -> None:
        # Ports below 1024 need root: listen before twistd drops privileges.
        self._listen_smtp()
        self._listen_web()
        super().privilegedStartService()

    def _listen(
        self, what: str, setting: str, port: int, factory: Any, addresses: list[str]
    ) -> None:
        reactor = self.engine.reactor
        for address in addresses:
            try:
                self.ports.append(reactor.listenTCP(port, factory, backlog=1024, interface=address))
            except CannotListenError as exc:
                for p in self.ports:
                    p.stopListening()
                reason = getattr(exc.socketError, "strerror", None) or str(exc.socketError)
                raise StartupError(
                    f"cannot listen for {what} on {address or '*'}:{port} ({reason}); "
                    f"change {setting} in {self.engine.config.path}"
                ) from None

    def _listen_smtp(self) -> None:
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
        self.engine.parts["inbound"] = factory
        self._listen(
            "SMTP",
            "[smtp_in] port (or listen_ips)",
            smtp_in.port,
            factory,
            _listen_addresses(smtp_in.listen_ips),
        )

    def _listen_web(self) -> None:
        web = self.engine.config.web
        if web.port == 0 or web.allowed_ips.has_zero:
            return
        from mailengine.web.app import make_site

        site = make_site(self.engine)
        self.engine.parts["web"] = site
        self._listen(
            "the web admin",
            "[web] port (or listen_ips)",
            web.port,
            site,
            _listen_addresses(web.listen_ips),
        )

    def startService(self) -> None:
        engine = self.engine
        self._logfiles = DailyLogFiles(engine.log_dir, lambda: engine.config.logs.retention_days)
        globalLogPublisher.addObserver(self._logfiles)
        os.makedirs(engine.log_dir, exist_ok=True)
        for name in ("password.txt",):
            pw = load_password_file(os.path.join(engine.config_dir, name))
            for warning in pw.warnings:
                log.warn("{warning}", warning=warning)
        for line in advice(engine.config):
            log.warn("{advice}", advice=line)
        super().startService()
        where = ", ".join(f"{p.getHost().host}:{p.getHost().port}" for p in self.ports) or "none"
        log.info(
            "MailEngine {v} started{test}: listening on {where}; queue {q}",
            v=__version__,
            test=" in test mode" if engine.test_mode else "",
            where=where,
            q=engine.store.root,
        )

    # -- stop ----------------------------------------------------------------

    def request_stop(self) -> None:
        """shutdown.txt or the web admin: stop the reactor (twistd runs stopService, exits 0)."""
        self.stopped_by_shutdown_file = True
        self.engine.reactor.callLater(0, self.engine.reactor.stop)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        engine = self.engine
        log.info("stopping: no new connections; finishing what is in flight")
        yield defer.gatherResults(
            [defer.maybeDeferred(p.stopListening) for p in self.ports], consumeErrors=True
        )
        self.ports = []
        reactor = engine.reactor
        for name, bound in (
            ("inbound", INBOUND_DRAIN_SECONDS),
            ("delivery", DELIVERY_DRAIN_SECONDS),
        ):
            part = engine.parts.get(name)
            if part is not None and hasattr(part, "drain"):
                d = defer.maybeDeferred(part.drain)
                d.addTimeout(bound, reactor)
                try:
                    yield d
                except Exception:
                    log.warn("{name} did not finish within {s} s", name=name, s=bound)
        d = engine.queue.drain()
        d.addTimeout(QUEUE_DRAIN_SECONDS, reactor)
        try:
            yield d
        except Exception:
            log.failure("writing messages in memory to retry/ did not finish")
        yield defer.maybeDeferred(super().stopService)
        log.info("stopped; {n} messages wait in retry/", n=engine.store.count("retry"))
        if self._logfiles is not None:
            globalLogPublisher.removeObserver(self._logfiles)
            self._logfiles.close()


def makeService(options: Any) -> service.IService:
    from twisted.internet import reactor

    root = os.path.abspath(options.get("root") or ".")
    if not os.path.isdir(root):
        raise StartupError(f"--root {root} is not a directory")
    config = load_settings(root, options.get("config"))
    engine = build_engine(root, config, reactor, test_mode=bool(options.get("test")))
    return EngineService(engine)
