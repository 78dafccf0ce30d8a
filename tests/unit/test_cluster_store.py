"""The shared store in Python (cluster/store.py), what the supervisor of one box's workers
answers them with: leases that expire or go with their node, GCRA rates, the hourly
window, nodes, reactions with stamps, contended caps; time comes in as ``now``."""

from __future__ import annotations

import pytest

from mailengine.cluster.store import (
    CapStore,
    heard_data,
    heard_from_data,
    node_of,
    reaction_from_data,
)
from mailengine.scheduler.grants import NodeView, SharedReaction

HOST = "host:192.0.2.1:25"
TOTAL = "total"


def caps(per_host: int = 3, total: int = 0) -> list[tuple[str, int]]:
    return [(HOST, per_host), (TOTAL, total)]


def two_nodes(now: float = 0.0) -> CapStore:
    store = CapStore()
    for node in ("a", "b"):
        store.heartbeat(node, {}, [], 10.0, 10.0, now=now)
    return store


def test_leases_stop_at_the_cap_and_a_refusal_below_the_fair_part_marks_it_contended():
    store = two_nodes()
    granted = [store.acquire(f"a|1|{n}", caps(), 10.0, 2.0, now=0.0) for n in range(3)]
    assert granted == [True, True, True]
    assert not store.acquire("b|1|1", caps(), 10.0, 2.0, now=0.1)  # b holds 0 of its 2
    heard = store.heartbeat("a", {}, [], 10.0, 10.0, now=0.5)
    assert heard.contended == {HOST}
    assert store.heartbeat("a", {}, [], 10.0, 10.0, now=2.5).contended == frozenset()


def test_a_refusal_to_a_node_holding_its_fair_part_marks_nothing():
    store = two_nodes()
    assert store.acquire("a|1|1", caps(3), 10.0, 2.0, now=0.0)
    assert store.acquire("b|1|1", caps(3), 10.0, 2.0, now=0.0)
    assert store.acquire("b|1|2", caps(3), 10.0, 2.0, now=0.0)
    # b holds 2, its part of 3 among 2 nodes rounded up: nobody owes it a slot.
    assert not store.acquire("b|1|3", caps(3), 10.0, 2.0, now=0.1)
    assert store.heartbeat("a", {}, [], 10.0, 10.0, now=0.5).contended == frozenset()
    # a holds 1 of its 2: its refusal does mark the cap (b gives one back).
    assert not store.acquire("a|1|2", caps(3), 10.0, 2.0, now=0.6)
    assert store.heartbeat("a", {}, [], 10.0, 10.0, now=0.7).contended == {HOST}


def test_a_node_alone_is_owed_nothing_at_its_full_cap():
    store = CapStore()
    store.heartbeat("a", {}, [], 10.0, 10.0, now=0.0)
    assert [store.acquire(f"a|1|{n}", caps(), 10.0, 2.0, now=0.0) for n in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert store.heartbeat("a", {}, [], 10.0, 10.0, now=0.5).contended == frozenset()


def test_a_cap_of_zero_is_no_cap_and_the_same_lease_asked_twice_counts_once():
    store = CapStore()
    assert all(store.acquire(f"a|1|{n}", caps(0), 10.0, 2.0, now=0.0) for n in range(50))
    store = CapStore()
    assert store.acquire("a|1|1", caps(1), 10.0, 2.0, now=0.0)
    assert store.acquire("a|1|1", caps(1), 10.0, 2.0, now=1.0)  # renewed, not a second


def test_a_full_cap_refuses_without_taking_a_lease_under_the_others():
    store = CapStore()
    assert store.acquire("a|1|1", [("site:x", 1)], 10.0, 2.0, now=0.0)
    assert not store.acquire("a|1|2", [(TOTAL, 5), ("site:x", 1)], 10.0, 2.0, now=0.0)
    assert store.leases.get(TOTAL, {}) == {}


def test_a_released_lease_frees_its_slot_under_every_cap():
    store = CapStore()
    for n in range(3):
        store.acquire(f"a|1|{n}", caps(3, 3), 10.0, 2.0, now=0.0)
    store.release("a|1|0", [HOST, TOTAL])
    assert store.acquire("b|1|1", caps(3, 3), 10.0, 2.0, now=0.1)


def test_leases_not_renewed_expire_and_renewed_ones_stay():
    store = CapStore()
    store.acquire("a|1|1", caps(1), 10.0, 2.0, now=0.0)
    store.heartbeat("a", {}, [("a|1|1", [HOST, TOTAL])], 10.0, 10.0, now=8.0)
    assert not store.acquire("b|1|1", caps(1), 10.0, 2.0, now=12.0)  # renewed at 8: to 18
    assert store.acquire("b|1|1", caps(1), 10.0, 2.0, now=18.5)


def test_a_heartbeat_puts_back_the_leases_a_node_held_while_falling_back():
    store = CapStore()
    store.heartbeat("a", {}, [("a|1|1", [HOST]), ("a|1|2", [HOST])], 10.0, 10.0, now=0.0)
    assert store.acquire("b|1|1", caps(3), 10.0, 2.0, now=0.1)
    assert not store.acquire("b|1|2", caps(3), 10.0, 2.0, now=0.1)


def test_a_forgotten_node_gives_back_its_leases_at_once_and_leaves_the_list():
    store = CapStore()
    store.heartbeat("box-w1", {"leases": 2}, [], 10.0, 10.0, now=0.0)
    store.heartbeat("box-w2", {}, [], 10.0, 10.0, now=0.0)
    store.acquire("box-w1|ab|1", caps(2), 10.0, 2.0, now=0.0)
    store.acquire("box-w1|ab|2", caps(2), 10.0, 2.0, now=0.0)
    assert not store.acquire("box-w2|cd|1", caps(2), 10.0, 2.0, now=0.0)
    assert store.forget("box-w1") == 2  # two leases (under two caps each)
    assert store.acquire("box-w2|cd|1", caps(2), 10.0, 2.0, now=0.1)
    assert set(store.node_views()) == {"box-w2"}
    assert node_of("box-w1|ab|1") == "box-w1"


def test_nodes_not_heard_from_go_and_say_what_they_hold():
    store = CapStore()
    store.heartbeat("a", {"leases": 3, "mode": "shared"}, [], 10.0, 10.0, now=0.0)
    heard = store.heartbeat("b", {}, [], 10.0, 10.0, now=5.0)
    assert heard.nodes["a"] == NodeView("a", 0.0, 3, "shared")
    assert set(store.heartbeat("b", {}, [], 10.0, 10.0, now=10.5).nodes) == {"b"}
    store.leave("b")
    assert store.node_views() == {}


def test_the_newest_reaction_wins_and_one_that_stopped_mattering_goes():
    store = CapStore()
    newer = SharedReaction("y.test", 5.0, suspended_until=65.0, node="a", expires=65.0)
    older = SharedReaction("y.test", 4.0, node="b", expires=4.0)
    store.publish(newer)
    store.publish(older)
    assert store.heartbeat("a", {}, [], 10.0, 10.0, now=6.0).reactions == [newer]
    assert store.heartbeat("a", {}, [], 10.0, 10.0, now=76.0).reactions == []


def test_gcra_grants_a_batch_at_once_then_the_rate():
    store = CapStore()
    interval = 0.1  # 600 a minute
    assert store.rate("d", interval, 4 * interval, 5, now=0.0) == (5, 0.0)
    granted, wait = store.rate("d", interval, 4 * interval, 5, now=0.0)
    assert granted == 0 and wait == pytest.approx(0.1)
    assert store.rate("d", interval, 4 * interval, 5, now=0.35)[0] == 3  # 0.35 s later
    total = 5 + 3
    for step in range(1, 101):  # ten more seconds, asking every 0.1 s: the rate, no more
        total += store.rate("d", interval, 4 * interval, 5, now=0.35 + step * 0.1)[0]
    assert 8 + 99 <= total <= 8 + 101


def test_rates_of_different_domains_are_apart():
    store = CapStore()
    assert store.rate("a", 1.0, 0.0, 1, now=0.0) == (1, 0.0)
    assert store.rate("b", 1.0, 0.0, 1, now=0.0) == (1, 0.0)
    assert store.rate("a", 1.0, 0.0, 1, now=0.0)[0] == 0


def test_the_hourly_cap_is_a_sliding_hour_of_minute_buckets():
    store = CapStore()
    assert store.hourly_take(10, 6, now=30.0) == (6, 0, 0.0)
    assert store.hourly_take(10, 6, now=90.0) == (4, 1, 0.0)
    granted, minute, wait = store.hourly_take(10, 6, now=100.0)
    assert (granted, minute) == (0, 1) and wait == pytest.approx(3600.0 - 100.0)
    assert store.hourly_take(10, 6, now=3600.0) == (6, 60, 0.0)  # minute 0 has left
    assert store.hourly_take(10, 6, now=3601.0)[0] == 0


def test_hourly_room_given_back_can_be_taken_again_but_no_more_than_was_taken():
    store = CapStore()
    store.hourly_take(10, 10, now=0.0)
    assert store.hourly_give_back(0, 4) == 4
    assert store.hourly_give_back(0, 40) == 6
    assert store.hourly_take(10, 10, now=1.0)[0] == 10


def test_old_minutes_and_rates_are_dropped_on_a_heartbeat():
    store = CapStore()
    store.hourly_take(10, 1, now=0.0)
    store.rate("d", 1.0, 0.0, 1, now=0.0)
    store.heartbeat("a", {}, [], 10.0, 10.0, now=3700.0)
    assert store.hourly == {} and store.rates == {}


def test_a_heartbeats_answer_and_a_reaction_survive_the_trip_over_a_pipe():
    store = CapStore()
    reaction = SharedReaction("y.test", 5.0, throttle_rate=30.0, node="a", expires=99.0)
    store.publish(reaction)
    store.acquire("a|1|1", caps(1), 10.0, 2.0, now=0.0)
    store.acquire("b|1|1", caps(1), 10.0, 2.0, now=0.0)
    heard = store.heartbeat("a", {"leases": 1, "mode": "shared"}, [], 10.0, 10.0, now=1.0)
    assert heard_from_data(heard_data(heard)) == heard
    assert reaction_from_data({"domain": "y.test", "stamp": 5.0, "junk": 1}) == SharedReaction(
        "y.test", 5.0
    )
    assert reaction_from_data({"stamp": 5.0}) is None
    assert reaction_from_data("not a reaction") is None


def test_the_view_lists_the_nodes_the_leases_and_the_reactions_in_force():
    store = CapStore()
    store.heartbeat("w1", {"leases": 1}, [], 10.0, 10.0, now=0.0)
    store.acquire("w1|1|1", caps(3), 10.0, 2.0, now=0.0)
    held = SharedReaction("y.test", 1.0, suspended_until=60.0, node="w1", expires=60.0)
    store.publish(held)
    store.publish(SharedReaction("z.test", 1.0, node="w1", expires=60.0))  # a resume
    view = store.view("supervisor", "the supervisor", 0.0, now=1.0)
    assert [n.name for n in view.nodes] == ["w1"] and view.node_count == 1
    assert view.leases == 1 and view.is_shared
    assert view.reactions == (held,)
