"""The supervisor ([server] workers > 1): one listening SMTP socket handed to N worker
processes, each restarted when it dies, all stopped gracefully together; it serves the
web admin for the box and passes setting changes on to every worker.

Sharing one socket (``adoptStreamPort`` in the worker) rather than SO_REUSEPORT: the
port is bound once, by the supervisor, before twistd drops privileges (ports below 1024
keep working and a refused bind is one start-up line); no other process of the same
user can join the port; port 0 in tests means one port, not one per worker; and an idle
worker takes the next connection (with SO_REUSEPORT the kernel hashes connections to
workers whether they are busy or not).
"""

from __future__ import annotations

import os
import re
import socket
import sys
from typing import Any

from twisted.application import service
from twisted.internet import defer, error, protocol
from twisted.logger import Logger, globalLogPublisher
from twisted.protocols import amp

import mailengine
from mailengine import __version__
from mailengine.delivery.status import DeliveryStatus
from mailengine.engine import Engine
from mailengine.observe.logfiles import DailyLogFiles
from mailengine.observe.webhook import EventWebhook
from mailengine.queue.checker import QueueChecker, Role
from mailengine.queue.destination_states import FILE_NAME as STATES_FILE
from mailengine.queue.destination_states import encode as encode_states
from mailengine.queue.store import DIRS
from mailengine.startup import (
    Listener,
    cannot_listen,
    smtp_listener,
    startup_failure,
    try_binding,
    web_listener,
)
from mailengine.web.snapshot import Snapshot
from mailengine.workers.box import merged_destinations
from mailengine.workers.boxcaps import BoxCaps, CapsServer
from mailengine.workers.commands import (
    AMP_IN_FD,
    AMP_OUT_FD,
    FIRST_LISTEN_FD,
    ApplySetting,
    Channel,
    DestinationAction,
    Ready,
    RequestShutdown,
    Status,
    TakeSnapshot,
)
from mailengine.workers.restarts import RestartBackoff
from mailengine.workers.snapshots import combine, snapshot_from_data

log = Logger(namespace="mailengine")

# A move between queue directories takes microseconds; a ``.inf-moving`` older than this
# after a worker died was left by the crash (the running workers' moves are younger).
MOVE_SETTLE_SECONDS = 30.0
# Beyond a worker's own bounded stop (transactions, then writing memory to retry/).
STOP_GRACE_SECONDS = 120.0
STATUS_POLL_SECONDS = 1.0
SNAPSHOT_SECONDS = 5.0  # a worker busier than this is left out of the picture once
_STAMP = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ")


class _ChildPipe:
    """The write side of a worker's AMP channel, as a transport."""

    disconnecting = False

    def __init__(self, process: Any, fd: int) -> None:
        self.process, self.fd = process, fd

    def write(self, data: bytes) -> None:
        self.process.writeToChild(self.fd, data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self.process.closeChildFD(self.fd)

    def getPeer(self) -> str:
        return f"worker pipe {self.fd}"

    getHost = getPeer


class SupervisorLink(Channel, CapsServer):
    """The supervisor's end of one worker's AMP channel."""

    def __init__(self, worker: WorkerProcess) -> None:
        super().__init__()
        self.worker = worker
        self.caps = worker.supervisor.caps

    @Ready.responder
    def ready(self, pid: int) -> dict[str, Any]:
        self.worker.supervisor.worker_ready(self.worker)
        return {}

    @RequestShutdown.responder
    def shutdown(self) -> dict[str, Any]:
        log.info("worker {n} found retry/shutdown.txt: shutting down", n=self.worker.index)
        self.worker.supervisor.request_stop()
        return {}


class WorkerProcess(protocol.ProcessProtocol):
    """One run of one worker: its pipes (AMP, log lines) and its end."""

    def __init__(self, supervisor: Supervisor, index: int, started: float) -> None:
        self.supervisor = supervisor
        self.index = index
        self.started = started
        self.pid = 0
        self.is_ready = False
        self.link = SupervisorLink(self)
        self.ended: defer.Deferred[None] = defer.Deferred()
        self._partial = {1: b"", 2: b""}

    def connectionMade(self) -> None:
        transport: Any = self.transport
        self.pid = transport.pid
        transport.closeChildFD(0)
        self.link.makeConnection(_ChildPipe(transport, AMP_IN_FD))

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd == AMP_OUT_FD:
            self.link.dataReceived(data)
            return
        lines = (self._partial.get(fd, b"") + data).split(b"\n")
        self._partial[fd] = lines.pop()
        for line in lines:
            self._relay(line)

    def _relay(self, raw: bytes) -> None:
        line = _STAMP.sub("", raw.decode("utf-8", "replace").rstrip("\r"))
        if line:
            log.info("worker {n}: {line}", n=self.index, line=line)

    def call(self, command: type[amp.Command], **kwargs: Any) -> defer.Deferred[Any]:
        return self.link.callRemote(command, **kwargs)

    def signal(self, name: str) -> None:
        try:
            if self.transport is not None:
                self.transport.signalProcess(name)
        except error.ProcessExitedAlready:
            pass

    def processEnded(self, reason: Any) -> None:
        for rest in self._partial.values():
            if rest:
                self._relay(rest)
        self.link.connectionLost(reason)
        self.supervisor.worker_ended(self, reason.value)
        self.ended.callback(None)


def _how(value: Any) -> str:
    if isinstance(value, error.ProcessTerminated):
        if value.signal is not None:
            return f"killed by signal {value.signal}"
        return f"exit code {value.exitCode}"
    return "exit code 0"


class BoxDestinations:
    """The web admin's delivery engine in a supervisor: the Destinations page's actions go
    to every worker; the status comes from the workers' snapshots (``combine``)."""

    attempts: dict[str, Any] = {}

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def status(self, now: float, top: int = 20) -> DeliveryStatus:
        supervisor = self.supervisor
        paused = bool(supervisor.engine.config.smtp_out.paused)
        cluster = supervisor.caps.view() if supervisor.is_sharing_caps else None
        return DeliveryStatus(paused=paused, open_connections=0, cluster=cluster)

    def _tell(self, action: str, domain: str, minutes: float = 0.0) -> defer.Deferred[int]:
        calls = [
            w.call(DestinationAction, action=action, domain=domain, minutes=minutes)
            .addCallback(lambda r: int(r["due"]))
            .addErrback(lambda f: 0)  # a worker ending now: its replacement starts clean
            for w in self.supervisor.workers.values()
            if w.is_ready
        ]
        return defer.gatherResults(calls).addCallback(sum)

    def suspend_destination(self, domain: str, minutes: float) -> defer.Deferred[int]:
        """Fires once every ready worker has applied it."""
        return self._tell("suspend", domain, minutes)

    def resume_destination(self, domain: str) -> defer.Deferred[int]:
        return self._tell("resume", domain)

    def retry_destination_now(self, domain: str) -> defer.Deferred[int]:
        return self._tell("retry", domain)


class Supervisor(service.MultiService):
    """Starts ``count`` workers on the shared sockets and mailq/; see the module docstring."""

    def __init__(self, engine: Engine, count: int, options: Any, *, daemon: bool = False) -> None:
        super().__init__()
        self.engine = engine
        self.count = count
        self.daemon = daemon
        self.config_path = options.get("config")
        self.stopping = False
        self.has_said_started = False
        self.sockets: list[socket.socket] = []
        self.ports: list[Any] = []
        self.workers: dict[int, WorkerProcess] = {}
        self.backoffs = {n: RestartBackoff() for n in range(1, count + 1)}
        self.restarts: dict[int, Any] = {}
        self.restart_count = 0
        self._logfiles: DailyLogFiles | None = None
        self._poll: Any = None
        self.statuses: dict[int, dict[str, Any]] = {}
        # Settings changed while running: a worker started later is told them too (the
        # file has them, but a worker may have read it before the change was written).
        self._changed_since_start: list[tuple[str, str]] = []
        self.listeners: list[Listener] = []
        # The box's caps, granted to the workers (issue 13 item 2); with [cluster]
        # redis_url each worker asks Redis instead, as a node of the cluster.
        self.caps = BoxCaps(engine.reactor)
        self.is_sharing_caps = count > 1 and not engine.config.cluster.redis_url
        QueueChecker(engine, self.request_stop, role=Role.SUPERVISOR).setServiceParent(self)
        self.webhook = EventWebhook(
            engine.log_dir, lambda: engine.config.events.webhook_url, engine.reactor
        )
        self.webhook.setServiceParent(self)
        smtp_in = engine.config.smtp_in
        self.smtp: Listener | None = None
        if smtp_in.port != 1:  # manual: port 1 turns receiving off
            self.smtp = smtp_listener(smtp_in, None)
        self._add_web()
        engine.config.subscribe(self._setting_changed)

    def _add_web(self) -> None:
        web = self.engine.config.web
        if web.port == 0 or web.allowed_ips.has_zero:
            return
        from mailengine.web.app import make_site
        from mailengine.web.running import Running

        running = Running(delivery=BoxDestinations(self), service=self, box=self)
        site = make_site(self.engine, running)
        self.listeners.append(web_listener(web, site))

    def check_listening(self) -> None:
        """StartupError now if a port cannot be listened on (before twistd daemonizes)."""
        for listener in ([self.smtp] if self.smtp else []) + self.listeners:
            try_binding(listener, self.engine.config.path)

    # -- start ---------------------------------------------------------------

    def privilegedStartService(self) -> None:
        try:
            if self.smtp is not None:
                for address in self.smtp.addresses:
                    self.sockets.append(self._bind(self.smtp, address))
            reactor = self.engine.reactor
            for listener in self.listeners:
                for address in listener.addresses:
                    self.ports.append(
                        reactor.listenTCP(listener.port, listener.factory, interface=address)
                    )
        except (OSError, error.CannotListenError) as exc:
            self._close_sockets()
            raise self._startup_failure(str(exc)) from None
        super().privilegedStartService()

    def _bind(self, listener: Listener, address: str) -> socket.socket:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, listener.port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            message = cannot_listen(
                listener, address, exc.strerror or str(exc), self.engine.config.path
            )
            raise self._startup_failure(message) from None
        return sock

    def _startup_failure(self, message: str) -> BaseException:
        return startup_failure(message, daemon=self.daemon)

    def startService(self) -> None:
        engine = self.engine
        self._logfiles = DailyLogFiles(engine.log_dir, lambda: engine.config.logs.retention_days)
        globalLogPublisher.addObserver(self._logfiles)
        engine.events.start(engine.reactor)  # the web admin's queue actions are events too
        # The checker's start recovers every worker's working/ before any worker runs.
        super().startService()
        where = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in self.sockets)
        log.info("supervisor: starting {n} workers on {where}", n=self.count, where=where or "none")
        for index in range(1, self.count + 1):
            self.spawn(index)
        from twisted.internet import task

        self._poll = task.LoopingCall(self.poll_status)
        self._poll.clock = engine.reactor
        self._poll.start(STATUS_POLL_SECONDS, now=False).addErrback(
            lambda f: log.failure("polling the workers stopped", f)
        )

    def spawn(self, index: int) -> None:
        """Start worker ``index`` (again)."""
        self.restarts.pop(index, None)
        if self.stopping:
            return
        engine = self.engine
        worker = WorkerProcess(self, index, engine.reactor.seconds())
        listen = ",".join(
            f"{FIRST_LISTEN_FD + n}:{6 if s.family == socket.AF_INET6 else 4}"
            for n, s in enumerate(self.sockets)
        )
        argv = [sys.executable, "-m", "mailengine.worker", "--root", engine.root]
        argv += ["--index", str(index), "--workers", str(self.count), "--listen", listen]
        if self.config_path:
            argv += ["--config", os.path.abspath(self.config_path)]
        if engine.test_mode:
            argv.append("--test")
        child_fds: dict[int, Any] = {0: "w", 1: "r", 2: "r", AMP_IN_FD: "w", AMP_OUT_FD: "r"}
        for n, sock in enumerate(self.sockets):
            child_fds[FIRST_LISTEN_FD + n] = sock.fileno()
        env = dict(os.environ)
        package_dir = os.path.dirname(os.path.dirname(os.path.abspath(mailengine.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_dir, env.get("PYTHONPATH")]))
        engine.reactor.spawnProcess(
            worker, sys.executable, argv, env=env, path=engine.root, childFDs=child_fds
        )
        self.workers[index] = worker

    def worker_ready(self, worker: WorkerProcess) -> None:
        worker.is_ready = True
        for section_key in self._changed_since_start:
            self._push_setting(worker, *section_key)
        if (
            not self.has_said_started
            and all(w.is_ready for w in self.workers.values())
            and len(self.workers) == self.count
        ):
            self.has_said_started = True
            engine = self.engine
            where = (
                ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in self.sockets)
                or "none"
            )
            web = ", ".join(f"{p.getHost().host}:{p.getHost().port}" for p in self.ports)
            log.info(
                "MailEngine {v} started{test} with {n} workers: listening on {where}"
                "{web}; queue {q}",
                v=__version__,
                test=" in test mode" if engine.test_mode else "",
                n=self.count,
                where=where,
                web=f" (web admin {web})" if web else "",
                q=engine.store.root,
            )

    def worker_ended(self, worker: WorkerProcess, value: Any) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        self.statuses.pop(worker.index, None)
        given_back = self.caps.worker_ended(worker.link.caps_node)
        if given_back:
            log.info("worker {n}'s {k} connection leases given back", n=worker.index, k=given_back)
        if self.stopping:
            log.info("worker {n} (pid {pid}) stopped", n=worker.index, pid=worker.pid)
            return
        now = self.engine.reactor.seconds()
        delay = self.backoffs[worker.index].delay_after(worker.started, now)
        log.warn(
            "worker {n} (pid {pid}) ended ({how}); restarting it in {d:g} s",
            n=worker.index,
            pid=worker.pid,
            how=_how(value),
            d=delay,
        )
        self.restart_count += 1
        reactor = self.engine.reactor
        self.restarts[worker.index] = reactor.callLater(delay, self.spawn, worker.index)
        # A move it had in progress in a shared directory (retry/ -> its working/) is
        # finished once the running workers' own moves cannot be mistaken for it.
        reactor.callLater(MOVE_SETTLE_SECONDS + 1, self._repair_moves, now)

    def _repair_moves(self, crashed_at: float) -> None:
        if self.stopping:
            return
        store = self.engine.store
        others = tuple(d for d in DIRS if d != "working")

        def repair() -> list[str]:
            return store.repair_interrupted_moves(others, settled_before=crashed_at + 1)

        def done(repaired: list[str]) -> None:
            if repaired:
                log.warn("finished {n} queue moves cut short by a crash", n=len(repaired))

        d = self.engine.committer.submit(repair).addCallback(done)
        d.addErrback(lambda f: log.failure("repairing moves after a crash failed", f))

    # -- the box's status and settings ----------------------------------------

    def poll_status(self) -> defer.Deferred[Any]:
        """Ask every ready worker for its status; keep the answers (``statuses``)."""
        calls = []
        for index, worker in list(self.workers.items()):
            if not worker.is_ready:
                continue
            d = worker.call(Status)
            d.addCallback(self._keep_status, index)
            d.addErrback(lambda f: None)  # it is ending: its processEnded says so
            calls.append(d)
        self.webhook.poke()  # the workers append to the event files
        return defer.gatherResults(calls).addCallback(lambda _: self._write_destination_states())

    def _write_destination_states(self) -> None:
        """mailq/destinations.json for the box (the workers write none of their own)."""
        now = self.engine.reactor.seconds()
        try:
            self.engine.store.write_file(
                STATES_FILE, encode_states(merged_destinations(self.statuses), now)
            )
        except OSError as exc:
            log.warn("cannot write {name}: {error}", name=STATES_FILE, error=exc)

    async def combine(self, own: Snapshot) -> Snapshot:
        """The web admin's snapshot of the box: ``own`` with every ready worker's added."""
        reactor = self.engine.reactor
        calls = [
            w.call(TakeSnapshot).addTimeout(SNAPSHOT_SECONDS, reactor).addErrback(lambda f: None)
            for w in self.workers.values()
            if w.is_ready
        ]
        answers = await defer.gatherResults(calls)
        return combine(own, [snapshot_from_data(a["snapshot"]) for a in answers if a])

    def _keep_status(self, result: dict[str, Any], index: int) -> None:
        self.statuses[index] = result["status"]

    def _setting_changed(self, section: str, key: str, value: Any) -> None:
        if (section, key) not in self._changed_since_start:
            self._changed_since_start.append((section, key))
        for worker in list(self.workers.values()):
            if worker.is_ready:
                self._push_setting(worker, section, key)

    def _push_setting(self, worker: WorkerProcess, section: str, key: str) -> None:
        raw = self.engine.config.raw(section, key)

        def answered(result: dict[str, str]) -> None:
            if result["problem"]:
                log.warn(
                    "worker {n} refused [{s}] {k}: {why}",
                    n=worker.index,
                    s=section,
                    k=key,
                    why=result["problem"],
                )

        d = worker.call(ApplySetting, section=section, key=key, raw=raw)
        d.addCallback(answered).addErrback(lambda f: None)

    # -- stop ----------------------------------------------------------------

    def request_stop(self) -> None:
        """shutdown.txt or the web admin: stop the reactor (twistd runs stopService)."""
        if self.stopping:
            log.info("already stopping")
            return
        self.stopping = True
        self.engine.reactor.callLater(0, self.engine.reactor.stop)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        self.stopping = True
        log.info("stopping: each worker stops gracefully (SIGTERM)")
        for call in self.restarts.values():
            if call.active():
                call.cancel()
        self.restarts = {}
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        yield defer.gatherResults(
            [defer.maybeDeferred(p.stopListening) for p in self.ports], consumeErrors=True
        )
        self.ports = []
        workers = list(self.workers.values())
        for worker in workers:
            worker.signal("TERM")
        config = self.engine.config.server
        bound = config.stop_timeout_seconds + STOP_GRACE_SECONDS
        ended = defer.DeferredList([w.ended for w in workers])
        timer = self.engine.reactor.callLater(bound, self._kill_late, workers, bound)
        yield ended
        if timer.active():
            timer.cancel()
        self._close_sockets()
        self.engine.store.remove_file(STATES_FILE)  # no engine: no states to show
        yield defer.maybeDeferred(super().stopService)
        self.engine.events.stop()
        log.info("stopped; {n} messages wait in retry/", n=self.engine.store.count("retry"))
        if self._logfiles is not None:
            globalLogPublisher.removeObserver(self._logfiles)
            self._logfiles.close()

    def _kill_late(self, workers: list[WorkerProcess], bound: float) -> None:
        for worker in workers:
            if not worker.ended.called:
                log.error(
                    "worker {n} (pid {pid}) did not stop within {s} s: killed",
                    n=worker.index,
                    pid=worker.pid,
                    s=bound,
                )
                worker.signal("KILL")

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets = []
