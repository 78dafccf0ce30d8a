"""The dashboard and /metrics of a node of a cluster, in memory: shared or falling back,
the nodes seen, the suspensions and throttles every node applies."""

import attrs
from prometheus_client.parser import text_string_to_metric_families

from mailengine.delivery.status import DeliveryStatus
from mailengine.scheduler.grants import ClusterView, NodeView, SharedReaction


class Delivery:
    def __init__(self, view):
        self.view = view

    def status(self, now, top=20):
        return DeliveryStatus(paused=False, open_connections=0, cluster=self.view(now))


def shared(now):
    return ClusterView(
        node="mta1",
        store="redis://10.0.0.5:6379/0",
        is_shared=True,
        since=now - 60,
        node_count=2,
        nodes=(NodeView("mta1", now - 0.4, 3, "shared"), NodeView("mta2", now - 0.9, 2, "shared")),
        leases=3,
        reactions=(
            SharedReaction(
                "yahoo.test",
                now - 5,
                suspended_until=now + 55,
                suspended_by="421 4.7.0 [TSS04] deferred",
                node="mta2",
                expires=now + 55,
            ),
        ),
    )


def falling_back(now):
    return ClusterView(
        "mta1", "redis://10.0.0.5:6379/0", False, now - 8, "Connection refused", node_count=2
    )


def metrics(admin):
    return {
        s.name: s.value
        for family in text_string_to_metric_families(admin.get("/metrics").text)
        for s in family.samples
        if s.name.startswith("mailengine_cluster")
    }


def test_the_dashboard_shows_the_nodes_seen_and_the_shared_throttle_state(admin):
    admin.running.delivery = Delivery(shared)
    page = admin.get("/gui/admin").text
    assert "SHARED" in page and "shared through Redis at redis://10.0.0.5:6379/0" in page
    assert "mta1 (this node)" in page and "mta2" in page
    assert "yahoo.test" in page and "suspended until" in page
    assert "421 4.7.0 [TSS04] deferred" in page
    assert metrics(admin) == {
        "mailengine_cluster_fallback": 0,
        "mailengine_cluster_nodes_seen": 2,
        "mailengine_cluster_leases_held": 3,
    }


def test_falling_back_is_shown_with_its_reason_and_gauge(admin):
    admin.running.delivery = Delivery(falling_back)
    page = admin.get("/gui/admin").text
    assert "FALLBACK" in page and "Connection refused" in page and "1/2 of it" in page
    assert metrics(admin)["mailengine_cluster_fallback"] == 1


def test_a_node_on_its_own_shows_no_cluster(admin):
    admin.running.delivery = Delivery(lambda now: None)
    assert "Cluster" not in admin.get("/gui/admin").text
    assert metrics(admin) == {}


def box(now):
    """The supervisor's view of its two workers (no Redis)."""
    workers = (NodeView("mx-w1", now - 0.2, 2, "shared"), NodeView("mx-w2", now - 0.7, 1))
    return attrs.evolve(shared(now), node="supervisor", store="the supervisor", nodes=workers)


def test_the_supervisors_dashboard_shows_the_workers_sharing_the_boxs_caps(admin):
    admin.running.delivery = Delivery(box)
    page = admin.get("/gui/admin").text
    assert "SHARED" in page and "Caps are granted by the supervisor to 2 workers" in page
    assert "mx-w1" in page and "mx-w2" in page and "(this node)" not in page
    assert "yahoo.test" in page  # the suspension every worker applies
    assert metrics(admin) == {
        "mailengine_cluster_fallback": 0,
        "mailengine_cluster_nodes_seen": 2,
        "mailengine_cluster_leases_held": 3,
    }
