"""Signs in a separate process (signing/worker.py), so a second core makes the DKIM
signatures while the reactor receives and delivers. Twisted side.

Measured through bench/relay.py (durable relay, 4 KB messages): an RSA-2048 signature
costs about 0.35 ms of OpenSSL, which cryptography makes holding the GIL, so a thread
cannot overlap it with the reactor; this process can. Per message the reactor only
writes the content to a pipe and reads back the fields (the signer's whole work,
parsing included, happens in the process).

A message is stored (and 250 given) only when its signature is back. When the process
is not there (it failed to start, died, or stopped answering for ``STUCK_SECONDS``)
every message waiting for it, and every message after, is signed in the engine instead
(``Unavailable``; the caller counts it), never refused or lost; the failure is logged
once and a new process is started ``RESTART_SECONDS`` later.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Protocol

from twisted.application import service
from twisted.internet import defer, error, protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailengine.signing import multibuffer, wire
from mailengine.signing.keys import pem
from mailengine.signing.signer import Signer

log = Logger(namespace="mailengine.signing")

STUCK_SECONDS = 30.0  # no answer for the oldest message this long: the process is stuck
RESTART_SECONDS = 60.0  # after a failure, sign in the engine this long, then start anew
STOP_SECONDS = 5.0  # at stop, the process gets this long to end after its stdin closes


class Unavailable(Exception):
    """No signing process to ask: the engine signs the message itself."""


class ProcessParts(Protocol):
    """What the signing process needs of the engine (``Engine``)."""

    @property
    def signer(self) -> Signer: ...

    @property
    def reactor(self) -> Any: ...


class _Child(protocol.ProcessProtocol):
    def __init__(self, owner: SigningProcess) -> None:
        self.owner = owner
        self.frames = wire.Frames()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 1:
            self.owner.answered(self.frames.feed(data))
        else:
            for line in data.decode("utf-8", "replace").splitlines():
                log.warn("DKIM signing process: {line}", line=line)

    def processEnded(self, reason: Failure) -> None:
        self.owner.ended(self, reason)


class SigningProcess(service.Service):
    """The engine's one signing process: ``sign`` fires with a ``Signed``, or fails with
    ``Unavailable`` (sign in the engine) or ``wire.RemoteError`` (the signer raised)."""

    def __init__(self, engine: ProcessParts, argv: list[str] | None = None) -> None:
        self.engine = engine
        self.argv = argv or [sys.executable, "-m", "mailengine.signing.worker"]
        self.child: _Child | None = None
        self.transport: Any = None
        self.pending: dict[int, tuple[defer.Deferred, float]] = {}
        self.last_id = 0
        self.settings_sent: tuple[tuple[str, ...], str] | None = None
        self.restart_at: float | None = None
        # [dkim] rsa_multi_buffer, until a process crashes with it (``ended``).
        self.multi_buffer = engine.signer.multi_buffer
        self.starts = 0
        self._ended_waiters: list[defer.Deferred] = []
        self._watch = LoopingCall(self.check_stuck)
        self._watch.clock = engine.reactor

    # -- life ------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.start_child()
        self._watch.start(1.0, now=False)

    def start_child(self) -> None:
        self.restart_at = None
        child = _Child(self)
        # The same code as the engine's, wherever it was imported from.
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
        try:
            transport = self.engine.reactor.spawnProcess(
                child, self.argv[0], self.argv, env=env, childFDs={0: "w", 1: "r", 2: "r"}
            )
        except OSError as exc:
            self._failed(f"cannot start: {exc}")
            return
        self.starts += 1
        self.child, self.transport = child, transport
        self.settings_sent = None
        signer = self.engine.signer
        keys = [k for found in signer.by_domain.values() for k in found]
        rows = [(k.domain, k.selector, pem(k.private)) for k in keys]
        transport.write(wire.keys_frame(rows, self.multi_buffer))
        if self.starts > 1:
            log.info("DKIM signing process started again")

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._watch.running:
            self._watch.stop()
        transport = self.transport
        if transport is None:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        self._ended_waiters.append(waiter)
        transport.closeStdin()  # it answers what it has, then ends

        def kill(_: Any) -> None:
            if self.transport is transport:
                transport.signalProcess("KILL")

        return waiter.addTimeout(STOP_SECONDS, self.engine.reactor).addErrback(kill)

    def ended(self, child: _Child, reason: Failure) -> None:
        if child is not self.child:
            return
        self.child = self.transport = None
        if self.running:
            why = reason.value
            if isinstance(why, error.ProcessTerminated):
                text = f"exit code {why.exitCode}, signal {why.signal}"
            else:
                text = "it ended"
            self._failed(text)
            if self.multi_buffer and not multibuffer.keep_after_death(getattr(why, "signal", None)):
                self.multi_buffer = False
                log.error(
                    "the DKIM signing process crashed with multi-buffer RSA on; the next "
                    "one signs RSA with OpenSSL alone (until the engine restarts)"
                )
        else:
            self._unavailable()
        waiters, self._ended_waiters = self._ended_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _failed(self, why: str) -> None:
        log.error(
            "the DKIM signing process failed ({why}); mail is signed in the engine "
            "process until a new one starts in {s:.0f} s",
            why=why,
            s=RESTART_SECONDS,
        )
        self.restart_at = self.engine.reactor.seconds() + RESTART_SECONDS
        self._unavailable()

    def _unavailable(self) -> None:
        pending, self.pending = self.pending, {}
        for d, _ in pending.values():
            d.errback(Unavailable())

    def check_stuck(self) -> None:
        if not self.pending or self.transport is None:
            return
        _, oldest = next(iter(self.pending.values()))
        if self.engine.reactor.seconds() - oldest >= STUCK_SECONDS:
            log.error(
                "the DKIM signing process has not answered for {s:.0f} s; ending it",
                s=STUCK_SECONDS,
            )
            try:
                self.transport.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass

    # -- signing ---------------------------------------------------------------

    def sign(
        self, content: bytes, now: float, headers: list[str], canonicalization: str
    ) -> defer.Deferred:
        transport = self.transport
        if transport is None:
            due = self.restart_at
            if due is None or not self.running or self.engine.reactor.seconds() < due:
                return defer.fail(Unavailable())
            self.start_child()
            transport = self.transport
            if transport is None:
                return defer.fail(Unavailable())
        settings = (tuple(headers), canonicalization)
        if settings != self.settings_sent:
            transport.write(wire.settings_frame(headers, canonicalization))
            self.settings_sent = settings
        self.last_id = ident = (self.last_id + 1) & 0xFFFFFFFF
        d: defer.Deferred = defer.Deferred()
        self.pending[ident] = (d, self.engine.reactor.seconds())
        transport.writeSequence([wire.sign_head(ident, now, len(content)), content])
        return d

    def answered(self, frames: list[tuple[bytes, int, bytes]]) -> None:
        pending = self.pending
        for kind, ident, payload in frames:
            if kind == wire.NOTE:
                log.info("DKIM RSA signatures: {note}", note=payload.decode("utf-8", "replace"))
                continue
            entry = pending.pop(ident, None)
            if entry is None:
                continue
            try:
                result = wire.read_result(kind, payload)
            except wire.RemoteError as exc:
                entry[0].errback(exc)
            else:
                entry[0].callback(result)
