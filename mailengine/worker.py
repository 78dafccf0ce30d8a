"""A worker process: the whole engine on the supervisor's SMTP socket and the shared mailq/.

The wiring of service.py for one of N workers (``mailengine.workers`` holds the
supervisor). Started by the supervisor as ``python -m mailengine.worker``; AMP on fds 3 (in)
and 4 (out), log lines on stderr (the supervisor writes them into the one log), the
listening sockets from fd 5 on. It stops gracefully on SIGTERM, and when the
supervisor's end of the pipe closes (the supervisor is gone).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

import attrs
from twisted.application import service
from twisted.internet import defer, stdio
from twisted.logger import ILogObserver, Logger, globalLogBeginner, globalLogPublisher
from zope.interface import implementer

from mailengine.cluster.book import share
from mailengine.cluster.node import ClusterNode
from mailengine.config.loader import ConfigError
from mailengine.engine import Engine
from mailengine.observe.logfiles import format_lines
from mailengine.queue.checker import Role
from mailengine.scheduler.grants import Grants
from mailengine.service import EngineService, build_engine, load_settings
from mailengine.startup import prepare_directories
from mailengine.web.running import Running
from mailengine.web.snapshot import DeliveryView, LiveShape, take_snapshot
from mailengine.workers.boxcaps import SupervisorStoreLink
from mailengine.workers.commands import (
    AMP_IN_FD,
    AMP_OUT_FD,
    ApplySetting,
    Channel,
    DestinationAction,
    Ready,
    RequestShutdown,
    Status,
    TakeSnapshot,
)
from mailengine.workers.snapshots import snapshot_data

log = Logger(namespace="mailengine")


def worker_status(engine: Engine, delivery: Any) -> dict[str, Any]:
    """What the supervisor shows for the box: destination states, memory, books."""
    counters = engine.counters
    now = engine.reactor.seconds()
    return {
        "destinations": [attrs.asdict(line) for line in delivery.gate.unusual_lines(now)],
        "pid": os.getpid(),
        "books": attrs.asdict(counters.books),
        "memory_messages": engine.queue.memory_count,
        "memory_bytes": engine.queue.memory_bytes,
        "queued_recipients": engine.queue.queued_recipients(),
    }


class WorkerLink(Channel):
    """The worker's end of the AMP channel."""

    def __init__(self, worker: WorkerService) -> None:
        super().__init__()
        self.worker = worker
        self.connected = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.connected = True

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        self.connected = False
        if not self.worker.stopping:
            log.info("the supervisor is gone: stopping")
            self.worker.stop_here()

    @Status.responder
    def status(self) -> dict[str, Any]:
        return {"status": self.worker.status()}

    @TakeSnapshot.responder
    def take_snapshot(self) -> defer.Deferred[dict[str, Any]]:
        d = defer.ensureDeferred(self.worker.snapshot())
        return d.addCallback(lambda data: {"snapshot": data})

    @DestinationAction.responder
    def destination_action(self, action: str, domain: str, minutes: float) -> dict[str, int]:
        delivery = self.worker.delivery
        if action == "suspend":
            delivery.suspend_destination(domain, minutes)
        elif action == "resume":
            delivery.resume_destination(domain)
        else:
            return {"due": delivery.retry_destination_now(domain)}
        return {"due": 0}

    @ApplySetting.responder
    def apply_setting(self, section: str, key: str, raw: Any) -> dict[str, str]:
        try:
            self.worker.engine.config.apply(section, key, raw)
        except ConfigError as exc:
            return {"problem": "; ".join(exc.problems)}
        log.info("[{s}] {k} = {v!r} applied", s=section, k=key, v=raw)
        return {"problem": ""}


class WorkerService(EngineService):
    """The engine of one worker: SMTP on the adopted sockets, no web admin of its own."""

    role = Role.WORKER

    def __init__(
        self, engine: Engine, index: int, listen: list[tuple[int, int]], workers: int = 1
    ) -> None:
        self.index = index
        self.workers = workers  # of the box
        self.listen = listen  # (fd, address family) of each listening socket
        self.link: WorkerLink | None = None
        self._views: tuple[LiveShape, DeliveryView] | None = None
        super().__init__(engine)

    @property
    def books_file(self) -> str:  # type: ignore[override]
        """Its own books: each worker's balance on its own (see README, workers)."""
        return f"books-w{self.index}.txt"

    @property
    def node_suffix(self) -> str:
        """Each worker shares caps through Redis as a node of its own: NAME-w1, NAME-w2."""
        return f"-w{self.index}"

    @property
    def box_workers(self) -> int:
        return self.workers

    def _add_web(self) -> None:
        """The supervisor serves the web admin for the whole box."""

    def _grants(self) -> Grants | None:
        """Through Redis when [cluster] redis_url is set (each worker a node of the
        cluster); else, with other workers, the supervisor grants the box's caps."""
        if self.engine.config.cluster.redis_url or self.workers <= 1:
            return super()._grants()
        link = SupervisorStoreLink(lambda: self.link)
        node = ClusterNode(link, self.node_name, self.engine.reactor, self.workers)
        node.setServiceParent(self)
        return node

    def _add_delivery(self) -> None:
        super()._add_delivery()
        self.delivery.states_file = ""  # the supervisor writes the box's destinations.json
        # The bandwidth cap is the box's (its uplink): each worker sends its share of it.
        engine, workers = self.engine, self.workers
        self.delivery.pools.bandwidth_limit = lambda: share(
            engine.config.smtp_out.max_bandwidth_bytes_per_minute, workers
        )

    def privilegedStartService(self) -> None:
        reactor = self.engine.reactor
        if self.inbound is not None:
            for fd, family in self.listen:
                self.ports.append(reactor.adoptStreamPort(fd, family, self.inbound))
                os.close(fd)  # adoptStreamPort works on a copy
        service.MultiService.privilegedStartService(self)

    def say_started(self) -> None:
        log.info("worker {n} ready (pid {pid})", n=self.index, pid=os.getpid())
        if self.link is not None and self.link.connected:
            self.link.callRemote(Ready, pid=os.getpid()).addErrback(
                lambda f: log.failure("telling the supervisor it is ready failed", f)
            )

    def status(self) -> dict[str, Any]:
        return worker_status(self.engine, self.delivery)

    async def snapshot(self) -> dict[str, Any]:
        """This worker's dashboard picture; the supervisor adds the workers' up."""
        engine = self.engine
        if self._views is None:
            run = engine.run_in_thread or (lambda fn: defer.maybeDeferred(fn))
            self._views = (
                LiveShape(engine.queue, run),
                DeliveryView(engine, Running(delivery=self.delivery)),
            )
        shape_view, delivery_view = self._views
        now = engine.reactor.seconds()
        shape = await shape_view.get(now)
        counts = {"working": engine.store.count("working")}  # its own working/wN/
        return snapshot_data(take_snapshot(engine, now, counts, shape, delivery=delivery_view))

    def request_stop(self) -> None:
        """shutdown.txt: the supervisor stops every worker (this one with them)."""
        if self.link is not None and self.link.connected and not self.stopping:
            d = self.link.callRemote(RequestShutdown)
            d.addErrback(lambda f: self.stop_here())
            return
        self.stop_here()

    def stop_here(self) -> None:
        super().request_stop()


def _listen_arg(text: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for item in filter(None, text.split(",")):
        fd, _, family = item.partition(":")
        out.append((int(fd), socket.AF_INET6 if family == "6" else socket.AF_INET))
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mailengine-worker")
    parser.add_argument("--root", required=True)
    parser.add_argument("--config", default=None)
    parser.add_argument("--test", action="store_true")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--listen", type=_listen_arg, default=[])
    return parser.parse_args(argv)


@implementer(ILogObserver)
def _log_to_stderr(event: dict[str, Any]) -> None:
    try:
        sys.stderr.write(format_lines(event))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([_log_to_stderr], redirectStandardIO=False)
    root = os.path.abspath(args.root)
    config = load_settings(root, args.config)
    engine = build_engine(root, config, reactor, test_mode=args.test, worker=args.index)
    prepare_directories(engine)
    worker = WorkerService(engine, args.index, args.listen, args.workers)
    worker.quiet_repeated_signals = True
    link = WorkerLink(worker)
    worker.link = link
    stdio.StandardIO(link, stdin=AMP_IN_FD, stdout=AMP_OUT_FD)  # type: ignore[call-arg]
    worker.privilegedStartService()
    failed: list[bool] = []

    def start() -> None:
        try:
            worker.startService()
        except BaseException as exc:  # e.g. StartupError: said, and the supervisor retries
            log.error("worker {n} cannot start: {why}", n=args.index, why=exc)
            failed.append(True)
            reactor.stop()
            return
        reactor.addSystemEventTrigger("before", "shutdown", worker.stopService)

    reactor.callWhenRunning(start)
    reactor.run()
    globalLogPublisher.removeObserver(_log_to_stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
