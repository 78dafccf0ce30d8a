"""The pooled client against servers that fail sessions or answer out of step
(StringTransport + MemoryReactorClock): no reconnect storms, misbehaving hosts shown."""

import pytest
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from mailengine.delivery.outcome import SENT, SOFT
from mailengine.delivery.plan import HostHealth
from tests.twisted.test_outbound_protocol import EHLO_PIPELINING, HOP, Wire


class TLSTransport(StringTransport):
    """A StringTransport that can be told to start TLS (and records it)."""

    tls = None

    def startTLS(self, context):
        self.tls = context


def dial(wire, transport_class=StringTransport):
    host, port, factory, timeout, bind = wire.reactor.tcpClients[wire.made]
    wire.made += 1
    proto = factory.buildProtocol(None)
    transport = transport_class()
    proto.makeConnection(transport)
    return proto, transport


def fail_session(wire, connection, how):
    """A dialled connection fails the way a storm-making receiver does."""
    proto, t = connection
    if how == "never greets" and not t.disconnecting:
        wire.reactor.advance(31)  # (both connections time out together)
    elif how == "endless line":
        proto.dataReceived(b"x" * 70000)
    elif how == "closes after STARTTLS 220":
        proto.dataReceived(b"220 mx\r\n")
        proto.dataReceived(b"250-mx\r\n250 STARTTLS\r\n")
        proto.dataReceived(b"220 2.0.0 Ready to start TLS\r\n")
        assert t.tls is not None
    proto.connectionLost(Failure(ConnectionError("closed by the server")))


@pytest.mark.parametrize(
    "how", ["closes at once", "never greets", "endless line", "closes after STARTTLS 220"]
)
def test_a_host_that_fails_every_session_gets_no_reconnect_storm(how):
    wire = Wire(per_host=2)
    jobs = [wire.job(name=f"M{i}") for i in range(2)]
    wire.submit(*jobs)
    assert len(wire.reactor.tcpClients) == 2
    connections = [dial(wire, TLSTransport) for _ in range(2)]
    for connection in connections:
        fail_session(wire, connection, how)
    if how == "closes after STARTTLS 220":
        # RFC 7435: opportunistic TLS that fails is tried again in plain text once.
        assert not wire.failed_over and len(wire.reactor.tcpClients) == 4
        for connection in [dial(wire, TLSTransport) for _ in range(2)]:
            fail_session(wire, connection, "closes at once")
    dialled = len(wire.reactor.tcpClients)
    assert sorted(j.message_id for j, _ in wire.failed_over) == ["M0", "M1"]
    assert wire.pools.health.is_down(HOP, wire.reactor.seconds())
    wire.submit(wire.job(name="M2"))  # more mail for it while it is down: no new dial
    assert len(wire.reactor.tcpClients) == dialled
    assert [j.message_id for j, _ in wire.failed_over][-1] == "M2"


def test_a_failing_host_waits_longer_after_each_failure_and_counts_failures_together_once():
    health = HostHealth(down_seconds=5)
    health.mark_down(HOP, 0, "closed")
    health.mark_down(HOP, 1, "closed")  # a second connection of the same round
    assert health.is_down(HOP, 4.9) and not health.is_down(HOP, 5)
    health.mark_down(HOP, 5, "closed")
    assert health.is_down(HOP, 14.9) and not health.is_down(HOP, 15)
    health.mark_down(HOP, 15, "closed")
    assert health.is_down(HOP, 34.9)
    for n in range(10):
        health.mark_down(HOP, 1000 * (n + 1), "closed")
    assert not health.is_down(HOP, 10000 + 300)  # at most five minutes
    health.mark_up(HOP)
    health.mark_down(HOP, 20000, "closed")
    assert not health.is_down(HOP, 20005)  # a success forgets the failures


def test_a_reply_out_of_step_marks_the_host_misbehaving_and_down_and_defers_the_job():
    wire = Wire(per_host=1)
    wire.submit(wire.job(name="M1"), wire.job(name="M2"))
    proto, t = wire.connect()
    proto.dataReceived(b"250 ok\r\n250 ok\r\n250 ok\r\n")  # 250 to DATA
    assert wire.results["M1"] == [("a@d.test", SOFT, 0)]
    assert t.disconnecting
    pool = wire.pools.pool_for(HOP)
    assert pool.protocol_errors == 1 and "is no reply to DATA" in pool.misbehaving
    proto.connectionLost(Failure(ConnectionError("aborted")))
    assert [j.message_id for j, _ in wire.failed_over] == ["M2"]  # not sent there again now
    assert wire.pools.health.is_down(HOP, wire.reactor.seconds())
    assert len(wire.reactor.tcpClients) == 1


def test_the_body_and_the_reply_to_its_dot_must_not_arrive_in_one_read():
    wire = Wire()
    wire.submit(wire.job())
    proto, t = wire.connect()
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n")
    assert wire.results["M1"] == [("a@d.test", SOFT, 0)]  # the 250 was sent before our body


def test_bare_lf_replies_split_anywhere_are_read_as_lines():
    wire = Wire()
    wire.submit(wire.job())
    proto, t = wire.dialled()
    for chunk in (b"22", b"0 mx\n"):
        proto.dataReceived(chunk)
    for chunk in (b"250-mx\n250-PIPE", b"LINING\n250 ", b"SIZE 1000\n"):
        proto.dataReceived(chunk)
    assert t.value().endswith(b"DATA\r\n")
    proto.dataReceived(b"250 ok\n250 ok\n354 go\n")
    proto.dataReceived(b"250 " + b"y" * 20000 + b"\n")  # long: cut, the session goes on
    assert wire.results["M1"] == [("a@d.test", SENT, 250)]


def test_a_handshake_cut_after_220_is_retried_in_plain_text_on_a_new_connection():
    wire = Wire()
    wire.submit(wire.job())
    proto, t = dial(wire, TLSTransport)
    proto.dataReceived(b"220 mx\r\n")
    proto.dataReceived(b"250-mx\r\n250 STARTTLS\r\n")
    proto.dataReceived(b"220 2.0.0 Ready to start TLS\r\n")
    assert t.tls is not None and t.value().endswith(b"STARTTLS\r\nEHLO me.test\r\n")
    proto.connectionLost(Failure(ConnectionError("connection was closed cleanly")))
    assert wire.failed_over == [] and len(wire.reactor.tcpClients) == 2
    second, t2 = dial(wire)
    second.dataReceived(b"220 mx\r\n")
    second.dataReceived(b"250-mx\r\n250 STARTTLS\r\n")
    assert b"STARTTLS" not in t2.value() and b"MAIL FROM" in t2.value()


def test_debug_logs_the_connect_and_the_timeout_of_a_server_that_never_greets():
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        wire = Wire()
        wire.settings.debug = True
        wire.submit(wire.job())
        dial(wire)
        wire.reactor.advance(31)
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [e.get("line", "") for e in events if e.get("log_namespace") == "mailengine.smtp_out"]
    assert "connected; waiting for the greeting" in lines
    assert "timeout waiting for the greeting" in lines


def test_a_421_while_idle_closes_politely_and_is_no_protocol_error():
    wire = Wire()
    wire.submit(wire.job())
    proto, t = wire.connect(EHLO_PIPELINING)
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    t.clear()
    proto.dataReceived(b"421 4.4.2 idle timeout\r\n")
    assert t.value() == b"QUIT\r\n" and t.disconnecting
    assert wire.pools.pool_for(HOP).protocol_errors == 0
