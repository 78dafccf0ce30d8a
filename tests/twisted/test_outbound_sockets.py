"""The connect and write timeouts against real loopback sockets (the kernel decides when a
connect hangs or a write blocks; fakes cannot show that the timers meet it)."""

import socket
import time

import pytest
import pytest_twisted
from twisted.internet import defer, protocol
from twisted.protocols import basic

from mailengine.delivery.client import ClientSettings
from mailengine.delivery.job import Job
from mailengine.delivery.outcome import SOFT
from mailengine.delivery.plan import Hop
from mailengine.delivery.pool import Pools


def make_pools(failed_over, **timeouts):
    from twisted.internet import reactor

    settings = ClientSettings(identity=b"me.test", **timeouts)
    return Pools(
        reactor,
        settings,
        caps=lambda: (1, 10),
        fail_over=lambda job, reason: failed_over.callback(reason),
        bandwidth_limit=lambda: 0,
        outbound_ip=lambda: "",
    )


def submit(pools, hop, body, finished):
    job = Job("M1", "d.test", ["a@d.test"], "s@x.test", body, lambda j, r: finished.callback(r))
    job.hops = (hop,)
    pools.pool_for(hop).submit(job)
    return job


@pytest.fixture
def full_listener():
    """A listening socket whose accept queue is full: the next connect hangs (SYN dropped)."""
    server = socket.socket()
    server.bind(("127.0.3.1", 0))
    server.listen(0)
    filler = socket.create_connection(server.getsockname(), timeout=2)
    yield server.getsockname()
    filler.close()
    server.close()


@pytest_twisted.inlineCallbacks
def test_a_connect_that_hangs_is_given_up_after_the_connect_timeout(full_listener):
    host, port = full_listener
    finished, failed_over = defer.Deferred(), defer.Deferred()
    pools = make_pools(failed_over, connect_timeout=0.3)
    started = time.monotonic()
    submit(pools, Hop("mx.d.test", host, port), b"x\r\n", finished)
    reason = yield failed_over
    assert "timeout" in reason.lower() and time.monotonic() - started < 3
    assert pools.health.down_reason(Hop("mx.d.test", host, port), pools.reactor.seconds())


class StopsReadingAfterDATA(basic.LineReceiver):
    """Answers everything, then after its 354 reads nothing more (a stuck server)."""

    def connectionMade(self):
        self.factory.connections.append(self)
        self.sendLine(b"220 stuck ESMTP")

    def lineReceived(self, line):
        verb = line[:4].upper()
        if verb == b"EHLO":
            self.transport.write(b"250-stuck\r\n250 PIPELINING\r\n")
        elif verb == b"DATA":
            self.sendLine(b"354 go ahead")
            self.transport.pauseProducing()
        else:
            self.sendLine(b"250 ok")


@pytest_twisted.inlineCallbacks
def test_a_body_the_server_stops_reading_is_given_up_after_the_write_timeout():
    from twisted.internet import reactor

    factory = protocol.Factory.forProtocol(StopsReadingAfterDATA)
    factory.connections = []
    port = reactor.listenTCP(0, factory, interface="127.0.3.2")
    try:
        finished, failed_over = defer.Deferred(), defer.Deferred()
        pools = make_pools(failed_over, write_timeout=0.3, body_timeout=30)
        body = (b"x" * 998 + b"\r\n") * 32_000  # 32 MB: more than the kernel buffers hold
        started = time.monotonic()
        job = submit(pools, Hop("mx.d.test", "127.0.3.2", port.getHost().port), body, finished)
        [result] = yield finished
        assert result.kind == SOFT and result.reply == "timeout writing to the server"
        assert time.monotonic() - started < 10  # not the 30 s body timeout
        assert job.lines[-1] == "<-- timeout writing to the server"
    finally:
        for server in factory.connections:
            server.transport.abortConnection()  # it reads nothing: it would never notice
        yield port.stopListening()
