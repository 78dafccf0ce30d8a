"""The pooled SMTP client on the wire: StringTransport + MemoryReactorClock, no sockets."""

import pytest
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from mailengine.delivery.client import ClientSettings
from mailengine.delivery.job import Job
from mailengine.delivery.outcome import HARD, SENT, SOFT, UNTRIED
from mailengine.delivery.plan import Hop
from mailengine.delivery.pool import Pools

HOP = Hop("mx1.d.test", "192.0.2.1", 25)
EHLO_PIPELINING = b"250-mx1 hello\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
EHLO_PLAIN = b"250-mx1 hello\r\n250 8BITMIME\r\n"


class Wire:
    """Pools on a fake reactor; connections are made by hand and talk over StringTransports."""

    def __init__(self, per_host=2, total=10, test_mode=False, bandwidth=0):
        self.reactor = MemoryReactorClock()
        self.settings = ClientSettings(
            identity=b"me.test",
            read_timeout=30,
            write_timeout=30,
            body_timeout=60,
            connect_timeout=10,
            test_mode=test_mode,
        )
        self.failed_over = []
        self.pools = Pools(
            self.reactor,
            self.settings,
            caps=lambda: (per_host, total),
            fail_over=lambda job, reason: self.failed_over.append((job, reason)),
            bandwidth_limit=lambda: bandwidth,
            outbound_ip=lambda: "",
        )
        self.results = {}
        self.made = 0

    def job(self, recipients=("a@d.test",), body=b"Subject: x\r\n\r\nhello\r\n", name="M1"):
        job = Job(name, "d.test", list(recipients), "s@x.test", body, self._done)
        job.hops = (HOP,)
        return job

    def _done(self, job, results):
        self.results[job.message_id] = [(r.address, r.kind, r.code) for r in results]

    def submit(self, *jobs):
        pool = self.pools.pool_for(HOP)
        for job in jobs:
            pool.submit(job)
        return pool

    def dialled(self):
        """The next dialled connection, made but not greeted yet."""
        host, port, factory, timeout, bind = self.reactor.tcpClients[self.made]
        self.made += 1
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def connect(self, ehlo=EHLO_PIPELINING):
        """Complete the next dialled connection up to the first transaction."""
        proto, transport = self.dialled()
        proto.dataReceived(b"220 mx1 ESMTP\r\n")
        assert transport.value() == b"EHLO me.test\r\n"
        transport.clear()
        proto.dataReceived(ehlo)
        return proto, transport


def test_pipelining_sends_mail_rcpt_and_data_in_one_write_and_the_body_with_its_dot():
    wire = Wire()
    wire.submit(wire.job(("a@d.test", "b@d.test")))
    proto, t = wire.connect()
    assert t.value() == (
        b"MAIL FROM:<s@x.test> SIZE=21\r\nRCPT TO:<a@d.test>\r\nRCPT TO:<b@d.test>\r\nDATA\r\n"
    )
    t.clear()
    proto.dataReceived(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    assert t.value() == b"Subject: x\r\n\r\nhello\r\n.\r\n"
    proto.dataReceived(b"250 queued\r\n")
    assert wire.results["M1"] == [("a@d.test", SENT, 250), ("b@d.test", SENT, 250)]


def test_dot_stuffed_bodies_are_sent_as_given():
    wire = Wire()
    wire.submit(wire.job(body=b"..first\r\nx\r\n..\r\n"))
    proto, t = wire.connect()
    t.clear()
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert t.value() == b"..first\r\nx\r\n..\r\n.\r\n"


def test_one_connection_sends_message_after_message_without_rset_until_one_fails():
    wire = Wire(per_host=1)
    wire.submit(wire.job(name="M1"), wire.job(name="M2"), wire.job(name="M3"))
    assert len(wire.reactor.tcpClients) == 1
    proto, t = wire.connect()
    t.clear()
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    # M1's body, then M2's commands: no RSET after a completed transaction
    assert b"RSET" not in t.value() and t.value().endswith(b"RCPT TO:<a@d.test>\r\nDATA\r\n")
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    t.clear()
    proto.dataReceived(b"554 5.7.1 rejected\r\n")  # M2's final reply fails
    assert t.value().startswith(b"RSET\r\nMAIL FROM:<s@x.test>")
    proto.dataReceived(b"250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    assert wire.results == {
        "M1": [("a@d.test", SENT, 250)],
        "M2": [("a@d.test", HARD, 554)],
        "M3": [("a@d.test", SENT, 250)],
    }
    assert len(wire.reactor.tcpClients) == 1


def test_without_pipelining_each_command_waits_for_its_reply():
    wire = Wire()
    wire.submit(wire.job(("a@d.test", "b@d.test")))
    proto, t = wire.connect(EHLO_PLAIN)
    assert t.value() == b"MAIL FROM:<s@x.test> BODY=8BITMIME\r\n"
    t.clear()
    proto.dataReceived(b"250 ok\r\n")
    assert t.value() == b"RCPT TO:<a@d.test>\r\n"
    t.clear()
    proto.dataReceived(b"450 4.2.0 greylisted\r\n")
    assert t.value() == b"RCPT TO:<b@d.test>\r\n"
    t.clear()
    proto.dataReceived(b"250 ok\r\n")
    assert t.value() == b"DATA\r\n"
    proto.dataReceived(b"354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    assert wire.results["M1"] == [("a@d.test", SOFT, 450), ("b@d.test", SENT, 250)]


def test_ehlo_refused_falls_back_to_helo():
    wire = Wire()
    wire.submit(wire.job())
    proto, t = wire.dialled()
    proto.dataReceived(b"220 old server\r\n")
    proto.dataReceived(b"502 what?\r\n")
    assert t.value() == b"EHLO me.test\r\nHELO me.test\r\n"
    t.clear()
    proto.dataReceived(b"250 hi\r\n")
    assert t.value() == b"MAIL FROM:<s@x.test>\r\n"


def test_test_mode_sessions_send_rset_instead_of_data():
    wire = Wire(test_mode=True)
    wire.submit(wire.job())
    proto, t = wire.connect()
    assert t.value().endswith(b"RCPT TO:<a@d.test>\r\nRSET\r\n") and b"DATA" not in t.value()
    proto.dataReceived(b"250 ok\r\n250 ok\r\n250 reset\r\n")
    assert wire.results["M1"] == [("a@d.test", SENT, 250)]


def test_a_message_bigger_than_the_servers_size_fails_hard_without_being_sent():
    wire = Wire()
    wire.submit(wire.job(body=b"x" * 2000 + b"\r\n"))
    proto, t = wire.connect()  # SIZE 1000
    assert t.value() == b""
    assert wire.results["M1"] == [("a@d.test", HARD, 552)]


def test_a_silent_server_times_out_and_the_recipient_is_soft():
    wire = Wire()
    wire.submit(wire.job())
    proto, t = wire.connect()
    wire.reactor.advance(29)
    assert "M1" not in wire.results
    wire.reactor.advance(2)
    assert wire.results["M1"] == [("a@d.test", SOFT, 0)]
    assert t.disconnecting


def test_the_end_of_data_reply_gets_the_body_timeout():
    wire = Wire()
    wire.submit(wire.job())
    proto, t = wire.connect()
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    wire.reactor.advance(45)  # past the read timeout, within the body timeout
    assert "M1" not in wire.results
    wire.reactor.advance(20)
    assert wire.results["M1"] == [("a@d.test", SOFT, 0)]


def test_a_blocked_write_times_out():
    wire = Wire()
    wire.submit(wire.job())
    proto, t = wire.connect()
    proto.pauseProducing()  # what the transport does when its buffer is full
    wire.reactor.advance(31)
    assert wire.results["M1"] == [("a@d.test", SOFT, 0)]


def test_a_421_greeting_fails_the_waiting_jobs_over_to_the_next_server():
    wire = Wire()
    job = wire.job()
    wire.submit(job)
    proto, t = wire.dialled()
    proto.dataReceived(b"421 too busy\r\n")
    assert wire.failed_over == [(job, "421 too busy")]
    assert t.value() == b"QUIT\r\n"


def test_a_refused_connection_fails_over_and_marks_the_server_down():
    wire = Wire()
    job = wire.job()
    wire.submit(job)
    host, port, factory, timeout, bind = wire.reactor.tcpClients[0]
    assert (host, port, timeout) == ("192.0.2.1", 25, 10)
    factory.clientConnectionFailed(None, Failure(ConnectionRefusedError("refused")))
    assert [j for j, _ in wire.failed_over] == [job]
    assert wire.pools.health.down_reason(HOP, wire.reactor.seconds()) is not None
    assert wire.pools.open_connections() == 0


def test_no_more_connections_than_the_per_host_cap_however_many_jobs_wait():
    wire = Wire(per_host=3)
    wire.submit(*[wire.job(name=f"M{i}") for i in range(50)])
    assert len(wire.reactor.tcpClients) == 3


def test_the_total_cap_closes_an_idle_connection_for_a_host_that_waits():
    wire = Wire(per_host=2, total=1)
    wire.submit(wire.job(name="M1"))
    proto, t = wire.connect()
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")  # now idle
    t.clear()
    other = Hop("mx2.e.test", "192.0.2.2", 25)
    job = Job("M2", "e.test", ["x@e.test"], "s@x.test", b"x\r\n", wire._done)
    job.hops = (other,)
    wire.pools.pool_for(other).submit(job)
    assert t.value() == b"QUIT\r\n"
    proto.connectionLost(Failure(ConnectionError()))
    assert [c[0] for c in wire.reactor.tcpClients] == ["192.0.2.1", "192.0.2.2"]


def test_an_idle_connection_quits_after_a_while():
    wire = Wire()
    wire.submit(wire.job())
    proto, t = wire.connect()
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    t.clear()
    wire.reactor.advance(10)
    assert t.value() == b"QUIT\r\n" and t.disconnecting


def test_stopping_ends_waiting_jobs_untried_and_aborts_the_rest_as_soft():
    wire = Wire(per_host=1)
    wire.submit(wire.job(name="M1"), wire.job(name="M2"))
    proto, t = wire.connect()
    wire.pools.stop_taking()
    assert wire.results == {"M2": [("a@d.test", UNTRIED, 0)]}
    wire.pools.abort_all("engine stopping")
    assert wire.results["M1"] == [("a@d.test", SOFT, 0)]


@pytest.mark.parametrize("bandwidth", [60])
def test_bandwidth_cap_delays_the_next_message(bandwidth):
    wire = Wire(per_host=1, bandwidth=bandwidth)  # one byte a second
    wire.submit(wire.job(name="M1"), wire.job(name="M2"))
    proto, t = wire.connect()
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    t.clear()
    wire.reactor.advance(1)
    assert t.value() == b""  # M2 waits for the 23 bytes of M1 to be paid
    wire.reactor.advance(30)
    assert t.value().startswith(b"MAIL FROM")


def test_an_idle_connection_that_times_out_takes_no_more_jobs():
    from mailengine.delivery.pool import IDLE_SECONDS

    wire = Wire(per_host=1)
    pool = wire.submit(wire.job(name="M1"))
    proto, t = wire.connect()
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    assert pool.idle == [proto]
    wire.reactor.advance(IDLE_SECONDS)
    assert pool.idle == [] and t.value().endswith(b"QUIT\r\n") and t.disconnecting
    wire.submit(wire.job(name="M2"))  # arrives as the QUIT goes out: waits for the slot
    assert len(wire.reactor.tcpClients) == 1 and b"MAIL" not in t.value().split(b"QUIT")[-1]
    proto.connectionLost(Failure(ConnectionError("closed")))
    assert len(wire.reactor.tcpClients) == 2
    second, t2 = wire.connect()
    second.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    second.dataReceived(b"250 queued\r\n")
    assert wire.results["M2"] == [("a@d.test", SENT, 250)]


def test_a_reused_connection_closed_before_any_reply_sends_the_job_again_fresh():
    wire = Wire(per_host=1)
    wire.submit(wire.job(name="M1"))
    proto, t = wire.connect()
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    wire.submit(wire.job(name="M2"))  # given to the idle connection at once
    assert t.value().endswith(b"RCPT TO:<a@d.test>\r\nDATA\r\n")
    proto.connectionLost(Failure(ConnectionError("reset by peer")))  # server's idle close
    assert "M2" not in wire.results  # not a failure: nothing was answered
    second, t2 = wire.connect()
    assert t2.value().startswith(b"MAIL FROM:<s@x.test>")
    second.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    second.dataReceived(b"250 queued\r\n")
    assert wire.results["M2"] == [("a@d.test", SENT, 250)]


def test_a_first_transaction_whose_connection_drops_is_a_soft_failure():
    wire = Wire(per_host=1)
    wire.submit(wire.job(name="M1"))
    proto, t = wire.connect()
    proto.connectionLost(Failure(ConnectionError("reset by peer")))
    assert wire.results["M1"][0][1] == SOFT


def test_a_reused_connection_answered_421_before_the_transaction_sends_the_job_again_fresh():
    wire = Wire(per_host=1)
    wire.submit(wire.job(name="M1"))
    proto, t = wire.connect()
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    job = wire.job(name="M2")
    wire.submit(job)  # given to the idle connection at once
    proto.dataReceived(b"421 4.7.0 too many messages on this connection\r\n")
    assert t.disconnecting and "M2" not in wire.results
    proto.connectionLost(Failure(ConnectionError("closed")))
    second, t2 = wire.connect()
    second.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    second.dataReceived(b"250 queued\r\n")
    assert wire.results["M2"] == [("a@d.test", SENT, 250)]
    assert (
        "<-- 421 4.7.0 too many messages on this connection; sending again on a new connection"
        in job.lines
    )


def test_a_421_on_a_fresh_connection_is_a_soft_failure_not_sent_again():
    wire = Wire(per_host=1)
    wire.submit(wire.job(name="M1"))
    proto, t = wire.connect()
    proto.dataReceived(b"421 4.3.2 shutting down\r\n")
    proto.connectionLost(Failure(ConnectionError("closed")))
    assert wire.results["M1"] == [("a@d.test", SOFT, 421)]
    assert len(wire.reactor.tcpClients) == 1


def test_a_job_waiting_for_bandwidth_on_a_connection_that_closes_goes_to_a_new_one_once():
    wire = Wire(per_host=1, bandwidth=60)  # one byte a second
    wire.submit(wire.job(name="M1"), wire.job(name="M2"))
    proto, t = wire.connect()
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")  # M2 now waits
    proto.connectionLost(Failure(ConnectionError("closed by the server")))
    wire.reactor.advance(30)  # M1's bytes are paid: M2 may go
    second, t2 = wire.connect()
    assert t2.value().startswith(b"MAIL FROM:<s@x.test>")
    second.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    second.dataReceived(b"250 queued\r\n")
    assert wire.results["M2"] == [("a@d.test", SENT, 250)]
    assert len(wire.reactor.tcpClients) == 2 and t.value().count(b"MAIL FROM") == 1


def test_stopping_sends_nothing_again_and_opens_no_connection():
    wire = Wire(per_host=1)
    wire.submit(wire.job(name="M1"))
    proto, t = wire.connect()
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    wire.submit(wire.job(name="M2"))  # on the reused connection
    wire.pools.stop_taking()
    proto.connectionLost(Failure(ConnectionError("reset by peer")))  # unanswered
    wire.submit(wire.job(name="M3"))  # a late DNS answer routes another job here
    assert wire.results["M2"] == wire.results["M3"] == [("a@d.test", UNTRIED, 0)]
    assert len(wire.reactor.tcpClients) == 1


def test_a_silent_greeting_times_out_and_fails_over():
    wire = Wire()
    job = wire.job()
    wire.submit(job)
    proto, t = wire.dialled()
    wire.reactor.advance(29)
    assert wire.failed_over == []
    wire.reactor.advance(2)
    assert wire.failed_over == [(job, "timeout waiting for the greeting")]


def test_a_write_that_resumes_in_time_is_not_aborted_and_one_that_does_not_is():
    wire = Wire()
    job = wire.job()
    wire.submit(job)
    proto, t = wire.connect()
    proto.pauseProducing()
    wire.reactor.advance(20)
    proto.resumeProducing()  # the buffer drained: the write timer stops
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")  # the body goes out
    proto.pauseProducing()
    wire.reactor.advance(29)
    assert "M1" not in wire.results and not t.disconnecting
    wire.reactor.advance(2)
    assert wire.results["M1"] == [("a@d.test", SOFT, 0)] and t.disconnecting
    assert job.lines[-1] == "<-- timeout writing to the server"


def test_running_out_of_descriptors_keeps_the_jobs_waiting_and_dials_again_a_moment_later():
    from twisted.internet.error import ConnectBindError

    from mailengine.delivery.pool import SHORTAGE_SECONDS

    shortages = []
    wire = Wire()
    wire.pools.on_descriptor_shortage = shortages.append
    job = wire.job()
    pool = wire.submit(job)
    for client in list(wire.reactor.tcpClients):
        client[2].clientConnectionFailed(None, Failure(ConnectBindError(24, "Too many open files")))
    assert wire.failed_over == [] and list(pool.pending) == [job]
    assert wire.pools.health.down_reason(HOP, wire.reactor.seconds()) is None
    assert shortages == ["Couldn't bind: 24: Too many open files."]
    wire.submit(wire.job(name="M2"))  # no dialling while short
    assert len(wire.reactor.tcpClients) == 1
    wire.reactor.advance(SHORTAGE_SECONDS)
    assert len(wire.reactor.tcpClients) == 3  # one for each waiting job
    wire.made = 1
    proto, t = wire.connect()
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    assert wire.results["M1"] == [("a@d.test", SENT, 250)]


def test_a_domain_whose_certificate_must_verify_is_never_sent_in_plain_text():
    wire = Wire()
    job = wire.job()
    wire.pools.pool_for(HOP, "mx1.d.test").submit(job)
    proto, t = wire.dialled()
    proto.dataReceived(b"220 mx1 ESMTP\r\n")
    proto.dataReceived(EHLO_PIPELINING)  # no STARTTLS offered
    assert b"MAIL" not in t.value()
    [(failed, reason)] = wire.failed_over
    assert failed is job and "TLS required for this domain" in reason
    # the server is not down for domains that need no certificate
    assert wire.pools.health.down_reason(HOP, wire.reactor.seconds()) is None


def test_a_refused_starttls_is_retried_in_plain_text_on_a_new_connection():
    wire = Wire()
    wire.submit(wire.job())
    proto, t = wire.dialled()
    proto.dataReceived(b"220 mx1 ESMTP\r\n")
    proto.dataReceived(b"250-mx1 hello\r\n250 STARTTLS\r\n")
    assert t.value().endswith(b"STARTTLS\r\n")
    proto.dataReceived(b"454 4.7.0 TLS not available right now\r\n")
    proto.connectionLost(Failure(ConnectionError("closed")))
    assert wire.failed_over == [] and len(wire.reactor.tcpClients) == 2
    second, t2 = wire.dialled()
    second.dataReceived(b"220 mx1 ESMTP\r\n")
    second.dataReceived(b"250-mx1 hello\r\n250 STARTTLS\r\n")
    assert b"STARTTLS" not in t2.value() and b"MAIL FROM:<s@x.test>" in t2.value()


def test_past_the_bound_idle_pools_with_the_least_traffic_are_forgotten_busy_ones_never():
    wire = Wire()
    quiet, busy_hop = Hop("mx.q.test", "192.0.2.7", 25), Hop("mx.b.test", "192.0.2.8", 25)
    wire.pools.pool_for(quiet).sent = 1
    wire.pools.pool_for(Hop("mx.l.test", "192.0.2.9", 25)).sent = 50
    job = Job("M9", "b.test", ["x@b.test"], "s@x.test", b"x\r\n", wire._done)
    job.hops = (busy_hop,)
    wire.pools.pool_for(busy_hop).submit(job)  # dialling: busy, with no traffic yet
    assert wire.pools.forget_idle(keep=2) == 1
    assert sorted(k[0] for k in wire.pools.pools) == ["192.0.2.8", "192.0.2.9"]
    assert wire.pools.forget_idle(keep=0) == 1  # the busy one stays whatever the bound
    assert list(wire.pools.pools) == [("192.0.2.8", 25, "", "")]


class TCPTransport(StringTransport):
    """A StringTransport with the TCP option the client sets."""

    no_delay = False

    def setTcpNoDelay(self, enabled):
        self.no_delay = enabled


def test_every_connection_turns_nagle_off_so_the_final_dot_is_not_held_back():
    wire = Wire()
    wire.submit(wire.job())
    proto = wire.reactor.tcpClients[0][2].buildProtocol(None)
    t = TCPTransport()
    proto.makeConnection(t)
    assert t.no_delay is True
