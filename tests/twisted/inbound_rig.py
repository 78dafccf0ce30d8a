"""An inbound factory on a real queue in tmp_path, driven through StringTransport."""

from __future__ import annotations

import errno
import os

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from mailengine.config.model import Config
from mailengine.engine import Engine
from mailengine.inbound.server import InboundFactory
from mailengine.observe.counters import Counters
from mailengine.queue.commit import GroupCommit
from mailengine.queue.ids import MessageIdFactory
from mailengine.queue.live import LiveQueue
from mailengine.queue.store import QueueStore


class HeldThreads:
    """'Thread' work runs inline, or waits until ``release()`` (a slow disk)."""

    def __init__(self) -> None:
        self.hold = False
        self.waiting: list[tuple[object, defer.Deferred]] = []

    def __call__(self, fn):
        if not self.hold:
            return defer.maybeDeferred(fn)
        d: defer.Deferred = defer.Deferred()
        self.waiting.append((fn, d))
        return d

    def release(self) -> None:
        self.hold = False
        self.step()

    def step(self) -> None:
        """Run the work waiting now; work it leads to waits again while ``hold``."""
        waiting, self.waiting = self.waiting, []
        for fn, d in waiting:
            defer.maybeDeferred(fn).chainDeferred(d)


@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):
    """A StringTransport that records startTLS (bytes written after it are 'encrypted')."""

    tls_started = False

    def startTLS(self, contextFactory, normal=True):
        self.tls_started = True


class IdleSender:
    """A delivery engine that is told about due mail and never takes any: relay mail
    stays in memory (and, with use_disk_for_relay, in the receipt journal)."""

    def __init__(self) -> None:
        self.told = 0

    def messages_due(self) -> None:
        self.told += 1


class FullDisk(QueueStore):
    """A queue store on a disk that is full: writing any queue file fails with ENOSPC."""

    full = True

    def _write_file(self, path: str, data: bytes, durable: bool) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        super()._write_file(path, data, durable)


class Rig:
    def __init__(
        self, tmp_path, settings=None, tls=None, *, sender=False, store=QueueStore
    ) -> None:
        self.root = str(tmp_path)
        self.config = Config.defaults(os.path.join(self.root, "config", "mailengine.toml"))
        os.makedirs(os.path.join(self.root, "config"), exist_ok=True)
        for (section, key), value in (settings or {}).items():
            self.config.apply(section, key, value)
        self.clock = task.Clock()
        self.clock.advance(1_000_000_000)
        self.store = store(os.path.join(self.root, "mailq"))
        self.store.ensure_dirs()
        self.threads = HeldThreads()
        self.committer = GroupCommit(self.threads, self.store.sync_all)
        self.counters = Counters(started=self.clock.seconds())
        self.queue = LiveQueue(self.store, self.config, self.clock, self.committer, self.counters)
        self.sender = IdleSender() if sender else None
        self.queue.consumer = self.sender
        self.engine = Engine(
            root=self.root,
            config=self.config,
            reactor=self.clock,
            store=self.store,
            queue=self.queue,
            counters=self.counters,
            committer=self.committer,
            ids=MessageIdFactory(7, 1, "mx.test"),
            hostname="mx.test",
        )
        self.factory = InboundFactory(self.engine, run_in_thread=defer.maybeDeferred)
        if tls is not None:
            self.factory.tls = tls

    def connect(self, peer="127.0.0.1", tls_capable=False):
        address = IPv4Address("TCP", peer, 40000)
        proto = self.factory.buildProtocol(address)
        kind = TLSStringTransport if tls_capable else StringTransport
        transport = kind(peerAddress=address, hostAddress=IPv4Address("TCP", "127.0.0.1", 25))
        proto.callLater = self.clock.callLater
        proto.makeConnection(transport)
        session = Session(proto, transport)
        session.greeting = session.replies()
        return session

    def files(self, dirname):
        return sorted(os.listdir(self.store.dir(dirname)))

    def read(self, dirname, name):
        with open(os.path.join(self.store.dir(dirname), name), "rb") as fh:
            return fh.read()


class Session:
    def __init__(self, proto, transport) -> None:
        self.proto = proto
        self.transport = transport
        self._seen = 0
        self.greeting: list[bytes] = []

    def send(self, data: bytes) -> list[bytes]:
        """Feed ``data``; return the reply lines written since the last call."""
        self.proto.dataReceived(data)
        return self.replies()

    def replies(self) -> list[bytes]:
        out = self.transport.value()[self._seen :]
        self._seen = len(self.transport.value())
        return out.splitlines()

    def codes(self, data: bytes) -> list[int]:
        return [int(line[:3]) for line in self.send(data) if line[3:4] == b" "]

    def close(self) -> None:
        self.proto.connectionLost(None)
