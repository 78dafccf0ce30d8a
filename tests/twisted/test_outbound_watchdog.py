"""Watchdog: the real pools and connections against misbehaving receivers on a fake
clock. Every job is handed back exactly once, none outlives every timeout, no
connection slot is left counted (issue 9: "mail stuck in memory")."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from mailengine.delivery.client import ClientSettings
from mailengine.delivery.job import Job
from mailengine.delivery.outcome import SENT, SOFT
from mailengine.delivery.plan import Hop
from mailengine.delivery.pool import IDLE_SECONDS, Pools
from tests.misbehaving import CLOSE, STALL, Receiver, faults

HOP = Hop("mx.bad.test", "192.0.2.1", 25)
TIMEOUT = 30  # read, write, body and connect timeouts of this test
EVERY_TIMEOUT = 4 * TIMEOUT + IDLE_SECONDS


class Network:
    """Connections the pools dial are refused or served by a fresh Receiver each."""

    def __init__(self, receivers, refusals, refuse_the_rest):
        self.reactor = MemoryReactorClock()
        settings_ = ClientSettings(
            identity=b"me.test",
            read_timeout=TIMEOUT,
            write_timeout=TIMEOUT,
            body_timeout=TIMEOUT,
            connect_timeout=TIMEOUT,
        )
        self.pools = Pools(
            self.reactor,
            settings_,
            caps=lambda: (2, 10),
            fail_over=lambda job, reason: job.finish_all(SOFT, reason),
            bandwidth_limit=lambda: 0,
            outbound_ip=lambda: "",
        )
        self.receivers = list(receivers)
        self.refusals = list(refusals)
        self.refuse_the_rest = refuse_the_rest  # once the list is used up
        self.made = 0
        self.live = []  # (protocol, transport, receiver)
        self.finished = {}

    def job(self, name, rcpts):
        job = Job(
            name, "d.test", rcpts, "s@x.test", b"Subject: " + name.encode() + b"\r\n", self._done
        )
        job.hops = (HOP,)
        return job

    def _done(self, job, results):
        self.finished.setdefault(job.message_id, []).append(results)

    def run(self, seconds):
        for _ in range(int(seconds)):
            self._accept()
            self._pump()
            self.reactor.advance(1)
        self._accept()
        self._pump()

    def _accept(self):
        while self.made < len(self.reactor.tcpClients):
            factory = self.reactor.tcpClients[self.made][2]
            self.made += 1
            assert self.made < 100, "a reconnect storm"
            refuse = self.refusals.pop(0) if self.refusals else self.refuse_the_rest
            if refuse:
                factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
                continue
            receiver = self.receivers.pop(0) if self.receivers else Receiver()
            proto = factory.buildProtocol(None)
            transport = StringTransport()
            proto.makeConnection(transport)
            self.live.append((proto, transport, receiver, list(receiver.connected())))

    def _pump(self):
        for entry in list(self.live):
            proto, transport, receiver, inbox = entry
            while True:
                if transport.disconnecting or not proto.transport:
                    self.live.remove(entry)
                    proto.connectionLost(Failure(ConnectionError("closed")))
                    break
                data = transport.value()
                transport.clear()
                if data:
                    inbox.extend(receiver.received(data))
                if not inbox or inbox[0] == STALL:
                    break
                segment = inbox.pop(0)
                if segment == CLOSE:
                    self.live.remove(entry)
                    proto.connectionLost(Failure(ConnectionError("closed by the server")))
                    break
                proto.dataReceived(segment)


@given(
    st.lists(
        st.builds(
            Receiver,
            faults=st.lists(faults, max_size=3),
            pipelining=st.booleans(),
            split=st.booleans(),
        ),
        max_size=6,
    ),
    st.lists(st.booleans(), max_size=4),
    st.booleans(),
    st.integers(1, 6),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_job_outlives_every_timeout_and_each_is_handed_back_once(
    receivers, refusals, refuse_the_rest, n
):
    net = Network(receivers, refusals, refuse_the_rest)
    jobs = [
        net.job(f"M{i}", ["a@d.test", "bad@d.test"] if i % 2 else ["b@d.test"]) for i in range(n)
    ]
    pool = net.pools.pool_for(HOP)
    for job in jobs:
        pool.submit(job)
    net.run(EVERY_TIMEOUT * 2)
    assert sorted(net.finished) == sorted(j.message_id for j in jobs)  # none stuck
    assert all(len(calls) == 1 for calls in net.finished.values())  # none handed back twice
    assert not pool.pending and pool.connecting == 0
    assert net.pools.open_connections() == 0  # no phantom connection on the dashboard
    for calls in net.finished.values():
        assert all(r.kind in (SENT, SOFT) or r.code for r in calls[0])
