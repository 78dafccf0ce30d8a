"""Workers' ClusterNodes asking their supervisor over AMP (workers/boxcaps.py), in memory:
two workers' pipes to one supervisor's store; leases, a dead worker's leases back at once,
reactions, rate tokens and hourly room round trips."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim

from mailengine.cluster.node import ClusterNode
from mailengine.scheduler.grants import WHEN_TOLD, Cap, SharedReaction
from mailengine.workers.boxcaps import BoxCaps, CapsServer, SupervisorStoreLink
from mailengine.workers.commands import Channel

PER_HOST = (Cap("host:192.0.2.1:25", 1), Cap("total", 0))


class SupervisorEnd(Channel, CapsServer):
    def __init__(self, caps: BoxCaps) -> None:
        super().__init__()
        self.caps = caps


class Listener:
    def __init__(self) -> None:
        self.heard: list[SharedReaction] = []
        self.rates: list[str] = []
        self.hourly = 0
        self.modes = 0

    def rate_granted(self, domain: str) -> None:
        self.rates.append(domain)

    def hourly_granted(self) -> None:
        self.hourly += 1

    def mode_changed(self) -> None:
        self.modes += 1

    def reaction_heard(self, reaction: SharedReaction) -> None:
        self.heard.append(reaction)


class Box:
    """A supervisor's store and ``count`` workers' nodes, each on its own AMP pipe."""

    def __init__(self, count: int = 2) -> None:
        self.reactor = MemoryReactorClock()
        self.caps = BoxCaps(self.reactor)
        self.ends: list[SupervisorEnd] = []
        self.nodes: list[ClusterNode] = []
        self.listeners: list[Listener] = []
        self.pumps: list[iosim.IOPump] = []
        for n in range(1, count + 1):
            self.add(n, count)
        for node in self.nodes:
            node.startService()
        self.flush()
        for node in self.nodes:
            node.beat()  # now every node sees the others
        self.flush()

    def add(self, n: int, count: int) -> ClusterNode:
        """Worker ``n``'s node on a pipe of its own (not started)."""
        worker, end, pump = iosim.connectedServerAndClient(
            lambda: SupervisorEnd(self.caps), Channel, greet=False
        )
        node = ClusterNode(
            SupervisorStoreLink(lambda w=worker: w), f"box-w{n}", self.reactor, count
        )
        listener = Listener()
        node.attach(listener)
        self.ends.append(end)
        self.nodes.append(node)
        self.listeners.append(listener)
        self.pumps.append(pump)
        return node

    def flush(self) -> None:
        for _ in range(3):
            for pump in self.pumps:
                pump.flush()

    def lease(self, node: ClusterNode):
        answers: list = []
        node.lease(PER_HOST, answers.append)
        self.flush()
        return answers[0]


def test_workers_share_caps_through_the_supervisor_once_it_answers():
    box = Box()
    assert all(node.book.is_shared for node in box.nodes)
    assert sorted(box.nodes[0].book.nodes) == ["box-w1", "box-w2"]
    view = box.caps.view()
    assert view.is_shared and [n.name for n in view.nodes] == ["box-w1", "box-w2"]


def test_a_lease_held_by_one_worker_is_refused_to_the_other_until_given_back():
    box = Box()
    w1, w2 = box.nodes
    lease = box.lease(w1)
    assert lease is not None
    assert box.lease(w2) is None
    w1.release(lease)
    box.reactor.advance(0.3)  # the lease lingers a quarter of a second
    box.flush()
    assert box.lease(w2) is not None


def test_a_dead_workers_leases_go_back_at_once():
    box = Box()
    w1, w2 = box.nodes
    assert box.lease(w1) is not None
    assert box.caps.worker_ended(box.ends[0].caps_node) == 1
    assert box.lease(w2) is not None


def test_a_restarted_worker_opens_no_connection_until_the_supervisor_first_answers():
    box = Box()
    w1, w2 = box.nodes
    assert box.caps.worker_ended(box.ends[1].caps_node) == 0  # worker 2 died
    assert box.lease(w1) is not None  # the whole cap
    again = box.add(2, 2)
    again.startService()  # its first heartbeat is not answered yet
    answers: list = []
    again.lease(PER_HOST, answers.append)
    assert answers == [None]  # its share of the cap would be on top of worker 1's lease
    box.flush()
    assert again.book.is_shared
    assert box.lease(again) is None  # the supervisor's answer: the cap is held


def test_a_restarted_worker_takes_no_rate_token_or_hourly_room_until_first_answered():
    box = Box()
    w1, _ = box.nodes
    now = box.reactor.seconds()
    assert w1.hourly_room(4, now) == 0  # asked: worker 1 takes its batch of the hour
    box.flush()
    assert box.caps.worker_ended(box.ends[1].caps_node) == 0  # worker 2 died
    again = box.add(2, 2)
    again.startService()  # its first heartbeat is not answered yet
    listener = box.listeners[-1]
    listener.modes = 0
    assert again.rate_wait("paced.test", 1200.0, now) == WHEN_TOLD
    assert again.hourly_room(4, now) == 0  # not its local share (2 of the 4)
    assert again.hourly_wait(4, now) == WHEN_TOLD
    box.flush()  # the supervisor answers: shared, and the send loop is told
    assert again.book.is_shared and listener.modes == 1
    assert again.rate_wait("paced.test", 1200.0, now) is not None  # asks the store now
    box.flush()
    assert listener.rates == ["paced.test"]


def test_a_reaction_in_one_worker_reaches_the_other_on_its_next_heartbeat():
    box = Box()
    w1, w2 = box.nodes
    now = box.reactor.seconds()
    reaction = SharedReaction(
        "yahoo.test", now, suspended_until=now + 60, node="box-w1", expires=now + 60
    )
    w1.reacted(reaction)
    box.flush()
    box.reactor.advance(1.0)  # the heartbeat
    box.flush()
    assert box.listeners[1].heard == [reaction]
    assert box.listeners[0].heard == []  # its own is not applied again


def test_rate_tokens_and_hourly_room_come_in_batches_from_the_one_store():
    box = Box()
    w1, w2 = box.nodes
    now = box.reactor.seconds()
    assert w1.rate_wait("paced.test", 1200.0, now) is not None  # asked: a batch comes
    box.flush()
    assert box.listeners[0].rates == ["paced.test"]
    assert w1.rate_wait("paced.test", 1200.0, now) is None
    w2.rate_wait("paced.test", 1200.0, now)
    box.flush()
    # 20 a second between both: w1's batch of 10 (half a second) is the burst; w2 waits.
    tokens = (w1.book.rates["paced.test"].tokens, w2.book.rates["paced.test"].tokens)
    assert tokens == (10, 0)
    assert w1.hourly_room(40, now) == 0  # asked
    box.flush()
    assert w1.hourly_room(40, now) == 2 and box.listeners[0].hourly == 1


def test_a_supervisor_that_does_not_answer_leaves_each_worker_its_share_until_it_does():
    box = Box()
    w1 = box.nodes[0]
    answers: list = []
    w1.lease((Cap("host:192.0.2.1:25", 4), Cap("total", 0)), answers.append)  # not pumped
    box.reactor.advance(2.1)  # no answer within the link's timeout
    assert not w1.book.is_shared and w1.book.node_count() == 2
    assert answers and answers[0] is not None  # answered here: 1 of its share of 2
    more: list = []
    w1.lease((Cap("host:192.0.2.1:25", 4), Cap("total", 0)), more.append)
    w1.lease((Cap("host:192.0.2.1:25", 4), Cap("total", 0)), more.append)
    assert more[0] is not None and more[1] is None  # the share of 4 among 2 is 2
    box.flush()
    box.reactor.advance(1.0)  # the next heartbeat reaches the supervisor
    box.flush()
    assert w1.book.is_shared
    assert len(box.caps.store.leases["host:192.0.2.1:25"]) == 2  # its leases put back
