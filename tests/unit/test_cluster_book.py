"""A node's share of the cluster's caps (cluster/book.py): leases, fallback shares, batch
sizes, rate and hourly stashes, reactions; time comes in as ``now`` (no Redis here)."""

from __future__ import annotations

import math

import pytest

from mailengine.cluster.book import (
    FALLBACK,
    IDLE_ROOM_SECONDS,
    MAX_RATE_BATCH,
    MAX_RETRY_SECONDS,
    ROTATE_SECONDS,
    STALE_SECONDS,
    YIELD_SECONDS,
    ClusterBook,
    hourly_batch,
    rate_batch,
    share,
)
from mailengine.config import ConfigError, load_config
from mailengine.delivery.slots import shared_caps
from mailengine.scheduler.grants import WHEN_TOLD, Cap, NodeView, SharedReaction


def nodes(*names: str) -> dict[str, NodeView]:
    return {n: NodeView(n, 0.0) for n in names}


def shared_book(*others: str) -> ClusterBook:
    book = ClusterBook("a", 0.0)
    book.heard(nodes("a", *others))
    return book


@pytest.mark.parametrize(
    ("limit", "count", "expected"),
    [(3, 2, 1), (10, 3, 3), (20, 2, 10), (1, 4, 1), (0, 2, 0), (5, 1, 5), (5, 0, 5)],
)
def test_a_share_is_the_cap_divided_by_the_nodes_at_least_one_and_zero_stays_no_cap(
    limit, count, expected
):
    assert share(limit, count) == expected


def test_rate_batches_are_about_a_second_of_the_nodes_part_of_the_rate():
    assert rate_batch(60, 1) == 1  # one a second: asked one at a time
    assert rate_batch(600, 2) == 5  # 10 a second, half each
    assert rate_batch(1, 3) == 1
    assert rate_batch(10**6, 1) == MAX_RATE_BATCH


def test_hourly_batches_are_a_tenth_of_each_nodes_part_of_the_cap():
    assert hourly_batch(100, 2) == 5
    assert hourly_batch(100, 1) == 10
    assert hourly_batch(5, 2) == 1
    assert hourly_batch(10**7, 1) == 100


def test_leases_are_counted_per_cap_key_and_given_back_once():
    book = shared_book()
    caps = shared_caps("192.0.2.1", 25, per_host=3, total=10, site="g@mx", site_max=2)
    assert [c.key for c in caps] == ["total", "host:192.0.2.1:25", "site:g@mx"]
    first, second = book.new_lease(caps), book.new_lease(caps)
    assert first.lease_id != second.lease_id and first.lease_id.startswith("a|")
    book.hold(first)
    book.hold(second)
    assert book.held == {"total": 2, "host:192.0.2.1:25": 2, "site:g@mx": 2}
    assert book.drop(first)
    assert not book.drop(first)  # twice: nothing more to give back
    book.drop(second)
    assert book.held == {} and book.leases == {}
    assert len(shared_caps("192.0.2.1", 25, per_host=3, total=10)) == 2  # no rule site


def test_falling_back_each_node_keeps_to_its_share_of_the_nodes_last_seen():
    book = shared_book("b")
    host = (Cap("host:192.0.2.1:25", 3), Cap("total", 0))
    assert book.unreachable("connection refused", 5.0)
    assert not book.unreachable("again", 6.0)  # told once
    assert book.mode == FALLBACK and book.mode_since == 5.0 and book.node_count() == 2
    assert book.fallback_allows(host)  # 3 // 2 nodes = 1 each; total 0: no cap
    book.hold(book.new_lease(host))
    assert not book.fallback_allows(host)
    view = book.view(6.0, "redis://r:6379/0")
    assert not view.is_shared and view.problem == "again" and view.node_count == 2
    assert book.reachable(7.0) and book.is_shared and book.problem == ""


def test_connections_held_over_the_new_share_end_after_their_transaction():
    book = shared_book("b", "c")
    caps = (Cap("host:192.0.2.1:25", 6),)
    leases = [book.new_lease(caps) for _ in range(4)]
    for lease in leases:
        book.hold(lease)
    assert not book.is_over_share(leases[0])  # shared: Redis granted them
    book.contended = {"host:192.0.2.1:25"}  # another node was refused one
    assert book.is_over_share(leases[0])  # 4 held, a fair part is 6 / 3 = 2
    book.drop(leases[3])
    book.drop(leases[2])
    assert not book.is_over_share(leases[0])
    assert book.is_wanted(leases[0])
    assert not book.may_ask(
        leases[0].caps, 0.0
    )  # holds its fair part: the next slot is the other's
    book.contended = set()
    assert book.may_ask(leases[0].caps, 0.0) and not book.is_wanted(leases[0])
    for lease in leases[2:]:
        book.hold(lease)
    book.unreachable("timeout", 1.0)  # 6 // 3 = 2 each
    assert book.is_over_share(leases[0])
    book.drop(leases[0])
    book.drop(leases[1])
    assert not book.is_over_share(leases[2])


def test_holders_take_turns_when_the_fair_parts_add_up_to_more_than_the_cap():
    book = shared_book("b", "c")  # 3 nodes, a cap of 2: a part of 1 each
    caps = (Cap("host:192.0.2.1:25", 2),)
    lease = book.new_lease(caps)
    book.hold(lease)
    assert not book.should_rotate(lease, 0.0)  # nobody waits
    book.heard_contended(frozenset({"host:192.0.2.1:25"}))  # c waits, holding none
    assert not book.is_over_share(lease)  # a holds just its part: not over
    assert not book.should_rotate(lease, 1.0)  # its turn runs from now
    assert not book.should_rotate(lease, 1.0 + ROTATE_SECONDS - 0.1)
    assert book.should_rotate(lease, 1.0 + ROTATE_SECONDS)  # this connection ends
    book.drop(lease)
    later = 1.0 + ROTATE_SECONDS
    assert not book.may_ask(caps, later + YIELD_SECONDS - 0.1)  # the waiter's turn
    assert book.may_ask(caps, later + YIELD_SECONDS)
    book.hold(lease)
    assert not book.should_rotate(lease, later + 1.0)  # one connection per turn
    book.heard_contended(frozenset())  # nobody waits any more: its turns start afresh
    book.heard_contended(frozenset({"host:192.0.2.1:25"}))
    assert not book.should_rotate(lease, later + ROTATE_SECONDS)


def test_no_turns_when_the_fair_parts_add_up_to_the_cap():
    book = shared_book("b")  # 2 nodes, a cap of 4: a part of 2 each, over-share covers it
    caps = (Cap("host:192.0.2.1:25", 4),)
    lease = book.new_lease(caps)
    book.hold(lease)
    book.heard_contended(frozenset({"host:192.0.2.1:25"}))
    assert not book.should_rotate(lease, 0.0)
    assert not book.should_rotate(lease, 100.0)


def test_rate_tokens_come_in_batches_and_one_ask_is_out_at_a_time():
    book = shared_book("b")
    assert book.rate_wait("d.test", 600, 0.0) == WHEN_TOLD
    assert book.rate_to_ask("d.test", 600, 0.0) == 5
    assert book.rate_to_ask("d.test", 600, 0.0) == 0  # already asking
    book.rate_granted("d.test", 5, 0.0, 0.1)
    for _ in range(2):
        assert book.rate_wait("d.test", 600, 0.2) is None
        book.rate_took("d.test", 600, 0.2)
    assert book.rate_to_ask("d.test", 600, 0.2) == 0  # 3 left: more than half a batch
    book.rate_took("d.test", 600, 0.3)
    assert book.rate_to_ask("d.test", 600, 0.3) == 5  # 2 left: the next batch, ahead


def test_none_left_waits_for_the_store_but_asks_again_at_least_every_second():
    book = shared_book()
    book.rate_to_ask("d.test", 60, 0.0)
    book.rate_granted("d.test", 0, 30.0, 0.0)  # "one conforms in 30 s"
    assert book.rate_wait("d.test", 60, 0.5) == MAX_RETRY_SECONDS
    assert book.rate_to_ask("d.test", 60, 0.5) == 0
    assert book.rate_to_ask("d.test", 60, MAX_RETRY_SECONDS) == 1


def test_unused_rate_tokens_go_stale():
    book = shared_book()
    book.rate_to_ask("d.test", 6000, 0.0)
    book.rate_granted("d.test", 3, 0.0, 0.0)
    assert book.rate_wait("d.test", 6000, 1.0) is None
    assert book.rate_wait("d.test", 6000, STALE_SECONDS + 1) == WHEN_TOLD
    book.forget_rates(2 * STALE_SECONDS + 2)
    assert "d.test" not in book.rates


def test_falling_back_a_rate_is_paced_locally_at_the_nodes_share():
    book = shared_book("b")
    book.unreachable("down", 0.0)
    assert book.rate_to_ask("d.test", 60, 0.0) == 0  # nothing asked of Redis
    assert book.rate_wait("d.test", 60, 10.0) is None
    book.rate_took("d.test", 60, 10.0)
    assert book.rate_wait("d.test", 60, 10.5) == pytest.approx(11.0)  # 60/min / 2 nodes
    book.rate_took("d.test", 60, 11.0)
    assert book.rate_wait("d.test", 60, 11.0) == pytest.approx(13.0)


def test_hourly_room_is_used_then_idle_room_goes_back_for_other_nodes():
    book = shared_book("b")
    assert book.hourly_room(100, 0.0) == 0
    assert book.hourly_to_ask(100, 0.0) == 5
    assert book.hourly_wait(100, 0.0) == WHEN_TOLD  # the answer wakes the send loop
    book.hourly_granted(5, 29_000_000, 0.0, 0.0)
    assert book.hourly_room(100, 0.0) == 5 and book.hourly_wait(100, 0.0) is None
    book.hourly_took(4, 100, 0.1)
    assert book.hourly_to_give_back(0.2) == (0, 0)  # used a moment ago
    assert book.hourly_to_give_back(0.1 + IDLE_ROOM_SECONDS) == (1, 29_000_000)
    assert book.hourly_room(100, 2.0) == 0


def test_hourly_cap_falling_back_is_a_local_bucket_of_the_nodes_share():
    book = shared_book("b")
    book.unreachable("down", 0.0)
    room = book.hourly_room(7200, 0.0)  # 3600 an hour here: up to 2 s at once
    assert room == 2
    book.hourly_took(2, 7200, 0.0)
    until = book.hourly_wait(7200, 0.0)
    assert until == pytest.approx(1.0, abs=0.01)  # 3600 an hour: one a second


def test_reactions_read_back_apply_only_when_newer_than_what_the_node_knows():
    book = shared_book("b")
    mine = SharedReaction("y.test", stamp=10.0, suspended_until=70.0, node="a", expires=70.0)
    book.published(mine)
    older = SharedReaction("y.test", stamp=5.0, node="b", expires=5.0)
    newer = SharedReaction("z.test", stamp=11.0, suspended_until=80.0, node="b", expires=80.0)
    assert book.news([older, newer]) == [newer]
    assert book.news([newer]) == []
    held = book.view(20.0, "redis://r/0").reactions
    assert [r.domain for r in held] == ["y.test", "z.test"]
    book.forget_reactions(200.0)
    assert book.reactions == {}
    assert math.isinf(WHEN_TOLD)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:6379", "redis://", "redis://host:0/0", "redis://host/99", "redis://a b"],
)
def test_a_bad_redis_url_names_the_key_the_value_and_what_is_allowed(tmp_path, url):
    path = tmp_path / "mailengine.toml"
    path.write_text(f'[cluster]\nredis_url = "{url}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    text = "\n".join(caught.value.problems)
    assert "redis_url" in text and url in text and "redis://127.0.0.1:6379/0" in text


def test_no_cluster_section_means_no_redis_and_a_node_named_after_the_host(tmp_path):
    path = tmp_path / "mailengine.toml"
    path.write_text("[server]\n", encoding="utf-8")
    config = load_config(str(path))
    assert config.cluster.redis_url == "" and config.cluster.node_name == ""
