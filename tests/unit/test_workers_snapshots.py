"""The box's picture from its workers' snapshots (issue 13): traffic, memory and connections
add up; the supervisor's directory counts and settings stay; the index is not counted twice."""

import json

import attrs

from mailengine.delivery.status import DomainStatus, HostStatus
from mailengine.observe.books import Books
from mailengine.observe.counters import Interval
from mailengine.observe.recent import FinalFailure
from mailengine.scheduler.grants import ClusterView, NodeView, SharedReaction
from mailengine.web.cluster import cluster_card
from mailengine.web.snapshot import QueueDepth, Snapshot, Totals
from mailengine.workers.snapshots import combine, snapshot_data, snapshot_from_data


def interval(end, sent):
    return Interval(end, 10.0, 0, sent, sent, 0, 0, 0)


def snapshot(*, sent=0, memory=0, indexed=0, working=0, hosts=(), destinations=(), **kw):
    values = dict(
        now=1000.0,
        started=0.0,
        hostname="box",
        version="2",
        test_mode=False,
        paused=False,
        held_by_rate_cap=False,
        rate_cap=0,
        delivery_running=True,
        stats_interval_seconds=10,
        intervals=(interval(990, sent), interval(1000, sent)),
        last_hour=interval(1000, 2 * sent),
        totals=Totals(sent, sent, 0, 0, 0, 0, bounces={"spam": 1} if sent else {}),
        queue=QueueDepth({"retry": 7, "working": working}, memory, memory * 10, indexed),
        open_connections=len(hosts),
        hosts=tuple(hosts),
        destinations=tuple(destinations),
        oldest_seconds=float(sent),
        failures=(FinalFailure(float(sent), f"m{sent}", "a@b", True, "550"),),
        books=Books(received=sent, sent=sent),
        destination_states=(("sending", 1),),
        rule_events=(("r", "suspended", sent),),
    )
    values.update(kw)
    return Snapshot(**values)


def test_a_worker_snapshot_crosses_the_pipe_as_json_unchanged():
    s = snapshot(
        sent=3,
        hosts=[HostStatus("mx (1.2.3.4:25)", 1, 3, 0)],
        destinations=[DomainStatus("a.test", 2, 5.0)],
    )
    assert snapshot_from_data(json.loads(json.dumps(snapshot_data(s)))) == s


def test_the_box_adds_the_workers_traffic_memory_connections_and_books():
    own = snapshot(delivery_running=False, working=0)
    host = HostStatus("mx (1.2.3.4:25)", 1, 3, 0)
    w1 = snapshot(sent=3, memory=2, indexed=50, working=1, hosts=[host])
    w2 = snapshot(
        sent=4,
        memory=5,
        indexed=60,
        working=2,
        hosts=[host],
        destinations=[DomainStatus("a.test", 2, 9.0, state="suspended")],
    )
    box = combine(own, [w1, w2])
    assert box.totals.sent == 7 and box.totals.bounces == {"spam": 2}
    assert box.last_hour.sent == 14 and [iv.sent for iv in box.intervals] == [7, 7]
    assert box.queue.memory_messages == 7 and box.queue.memory_bytes == 70
    assert box.queue.indexed == 60  # each worker indexes the one retry/
    assert box.queue.dirs == {"retry": 7, "working": 3}  # the supervisor's count + theirs
    assert box.open_connections == 2
    assert box.hosts == (HostStatus("mx (1.2.3.4:25)", 2, 6, 0),)
    assert box.destinations[0].state == "suspended"
    assert box.books == Books(received=7, sent=7)
    assert box.delivery_running and box.hostname == "box"
    assert [f.message_id for f in box.failures] == ["m4", "m3"]
    assert box.rule_events == (("r", "suspended", 7),)
    assert box.destination_states == (("sending", 2),)


def test_a_box_whose_workers_do_not_answer_shows_delivery_not_running():
    assert not combine(snapshot(), []).delivery_running


def redis_view(node, leases, shared=True):
    nodes = (NodeView("box-w1", 999.0, 2), NodeView("box-w2", 999.5, 1), NodeView("other", 998.0))
    reaction = SharedReaction("y.test", 990.0, 2000.0, "421 TSS04", node="other", expires=2000.0)
    return ClusterView(
        node, "redis://r:6379/0", shared, 900.0, "" if shared else "refused", 3, nodes, leases,
        (reaction,),
    )  # fmt: skip


def test_with_redis_the_box_shows_the_cluster_its_workers_see():
    w1, w2 = redis_view("box-w1", 2), redis_view("box-w2", 1)
    s = snapshot(sent=1, cluster=w1)
    assert snapshot_from_data(json.loads(json.dumps(snapshot_data(s)))) == s
    box = combine(snapshot(), [snapshot(cluster=w1), snapshot(cluster=w2)])
    assert box.cluster == attrs.evolve(w1, node="box-w1, box-w2", leases=3)
    card = str(cluster_card(box.cluster, 1000.0))
    assert "by 3 nodes; this box&#x27;s workers are box-w1, box-w2." in card
    assert "box-w1 (this node)" in card and "box-w2 (this node)" in card
    assert "other (this node)" not in card
    # One worker cannot reach Redis: the box says so.
    w2_alone = redis_view("box-w2", 0, shared=False)
    box = combine(snapshot(), [snapshot(cluster=w1), snapshot(cluster=w2_alone)])
    assert box.cluster.is_shared is False and box.cluster.problem == "refused"


def test_the_supervisors_own_cluster_view_wins_and_none_is_none():
    own = ClusterView("supervisor", "the supervisor", True, 0.0)
    assert combine(snapshot(cluster=own), [snapshot(), snapshot()]).cluster == own
    assert combine(snapshot(), [snapshot(), snapshot()]).cluster is None
