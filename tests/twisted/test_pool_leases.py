"""Connection pools under caps shared with other nodes: a lease before each dial, given
back at the close; a full cap is asked again later; over the share, a connection ends."""

from __future__ import annotations

import pytest
from twisted.python.failure import Failure

from mailengine.delivery.pool import IDLE_SECONDS, LEASE_RETRY_SECONDS, WANTED_IDLE_SECONDS
from mailengine.scheduler.grants import Lease
from tests.twisted.test_outbound_protocol import Wire


class PendingGrants:
    """The lease half of ``scheduler.grants.Grants``: answers when the test says."""

    def __init__(self):
        self.asked = []  # (caps, answer) not answered yet
        self.released = []
        self.over_share = False
        self.wanted = False
        self.rotate = False
        self.count = 0

    def lease(self, caps, answer):
        self.asked.append((tuple(caps), answer))

    def answer(self, granted: bool):
        caps, answer = self.asked.pop(0)
        self.count += 1
        answer(Lease(f"n|{self.count}", caps) if granted else None)

    def release(self, lease):
        self.released.append(lease.lease_id)

    def is_over_share(self, lease):
        return self.over_share

    def is_wanted(self, lease):
        return self.wanted

    def should_rotate(self, lease):
        return self.rotate


def wire_with(grants, per_host=3):
    wire = Wire(per_host=per_host)
    wire.pools.grants = grants
    return wire


def test_each_connection_waits_for_its_lease_and_a_full_cap_is_asked_again_later():
    grants = PendingGrants()
    wire = wire_with(grants)
    wire.submit(*[wire.job(name=f"M{i}") for i in range(10)])
    assert len(grants.asked) == 3 and not wire.reactor.tcpClients  # none dialled yet
    keys = [c.key for c in grants.asked[0][0]]
    assert keys == ["total", "host:192.0.2.1:25"]
    assert [c.limit for c in grants.asked[0][0]] == [10, 3]
    grants.answer(True)
    grants.answer(True)
    grants.answer(False)  # another node holds the third
    assert len(wire.reactor.tcpClients) == 2 and not grants.asked
    wire.reactor.advance(LEASE_RETRY_SECONDS)
    assert len(grants.asked) == 1
    grants.answer(True)
    assert len(wire.reactor.tcpClients) == 3


def test_a_closed_connection_gives_its_lease_back():
    grants = PendingGrants()
    wire = wire_with(grants, per_host=1)
    wire.submit(wire.job())
    grants.answer(True)
    proto, _ = wire.connect()
    proto.connectionLost(Failure(ConnectionError()))
    assert grants.released == ["n|1"]


def test_a_lease_granted_after_the_work_went_elsewhere_is_given_back_at_once():
    grants = PendingGrants()
    wire = wire_with(grants, per_host=1)
    pool = wire.submit(wire.job())
    pool.pending.clear()  # e.g. suspended meanwhile: its jobs went back to the queue
    grants.answer(True)
    assert grants.released == ["n|1"] and not wire.reactor.tcpClients


@pytest.mark.parametrize(
    "why",
    [
        "over_share",  # Redis lost: this node holds more than its share
        "rotate",  # another node waits below its part: its turn
    ],
)
def test_a_connection_over_its_share_or_turn_ends_after_its_transaction(why):
    grants = PendingGrants()
    wire = wire_with(grants, per_host=1)
    wire.submit(wire.job(name="M1"), wire.job(name="M2"))
    grants.answer(True)
    proto, transport = wire.connect()
    transport.clear()
    setattr(grants, why, True)
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    assert transport.value().endswith(b"QUIT\r\n")
    assert "M2" not in wire.results  # it waits for a lease of its own again


def sent_one_while_wanted():
    """A connection that has delivered its one message while another node waits for its
    cap: (wire, grants, transport), the transport cleared."""
    grants = PendingGrants()
    wire = wire_with(grants, per_host=1)
    wire.submit(wire.job(name="M1"))
    grants.answer(True)
    proto, transport = wire.connect()
    grants.wanted = True
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")  # nothing more to do here
    transport.clear()
    return wire, grants, transport


def test_an_idle_connection_under_a_cap_another_node_waits_for_ends_soon():
    wire, _, transport = sent_one_while_wanted()
    wire.reactor.advance(WANTED_IDLE_SECONDS - 0.01)
    assert transport.value() == b""  # the next message may come
    wire.reactor.advance(0.01)
    assert transport.value() == b"QUIT\r\n"  # not the IDLE_SECONDS of an unwanted cap
    assert WANTED_IDLE_SECONDS < IDLE_SECONDS


def test_a_message_arriving_while_a_wanted_connection_idles_takes_it():
    wire, grants, transport = sent_one_while_wanted()
    wire.reactor.advance(WANTED_IDLE_SECONDS / 2)
    wire.submit(wire.job(name="M2"))
    assert b"MAIL FROM" in transport.value()  # the same connection, no new lease asked
    assert not grants.asked
