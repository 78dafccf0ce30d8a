"""The shaper asks a ``Grants`` (caps shared with other nodes) as well as itself: rates,
the hourly cap, and reactions told to and heard from the other nodes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from mailengine.scheduler.grants import WHEN_TOLD, Cap, ClusterView, Lease, SharedReaction
from mailengine.scheduler.rules import Reaction, Rule, Rulebook
from mailengine.scheduler.shaping import Reason, Shaper, Wait


@attrs.define
class FakeGrants:
    """Implements ``scheduler.grants.Grants``; answers from fields, records what it is told."""

    node: str = "a"
    rate_until: float | None = None
    room: int = 0
    took: list[tuple[str, float]] = attrs.Factory(list)
    hourly: list[int] = attrs.Factory(list)
    told: list[SharedReaction] = attrs.Factory(list)

    def lease(self, caps: Sequence[Cap], answer: Callable[[Lease | None], None]) -> None:
        answer(Lease("a|1", tuple(caps)))

    def release(self, lease: Lease) -> None:
        pass

    def is_over_share(self, lease: Lease) -> bool:
        return False

    def is_wanted(self, lease: Lease) -> bool:
        return False

    def should_rotate(self, lease: Lease) -> bool:
        return False

    def rate_wait(self, domain: str, per_minute: float, now: float) -> float | None:
        return self.rate_until

    def rate_took(self, domain: str, per_minute: float, now: float) -> None:
        self.took.append((domain, per_minute))

    def hourly_room(self, cap: int, now: float) -> int:
        return self.room

    def hourly_wait(self, cap: int, now: float) -> float | None:
        return None if self.room else WHEN_TOLD

    def hourly_took(self, count: int, cap: int, now: float) -> None:
        self.hourly.append(count)

    def reacted(self, reaction: SharedReaction) -> None:
        self.told.append(reaction)

    def view(self, now: float) -> ClusterView:
        return ClusterView(self.node, "redis://r/0", True, 0.0)

    def attach(self, listener: object) -> None:
        pass


def shaper(grants: FakeGrants) -> Shaper:
    rule = Rule("paced", domains=("p.test",), max_messages_per_minute=600)
    reactions = (
        Reaction("TSS04", "suspend", 1.0),
        Reaction("slow down", "throttle", 1.0),
    )
    s = Shaper(Rulebook((rule,), reactions))
    s.grants, s.node = grants, grants.node
    return s


def test_a_rate_capped_destination_waits_for_the_clusters_tokens():
    grants = FakeGrants(rate_until=WHEN_TOLD)
    s = shaper(grants)
    assert s.may_send("p.test", 0.0) == Wait(Reason.RATE, None, "cluster")  # woken later
    grants.rate_until = 3.0
    assert s.may_send("p.test", 0.0) == Wait(Reason.RATE, 3.0, "cluster")
    grants.rate_until = None
    assert s.may_send("p.test", 0.0) is None
    s.sending("p.test", 0.0)
    assert grants.took == [("p.test", 600.0)]
    assert s.may_send("free.test", 0.0) is None  # no rate: the cluster is not asked
    s.sending("free.test", 0.0)
    assert grants.took == [("p.test", 600.0)]


def test_the_hourly_cap_is_the_clusters_room():
    grants = FakeGrants(room=0)
    s = shaper(grants)
    assert s.global_wait(0.0, is_paused=False, hourly_cap=100) == Wait(Reason.HOURLY_CAP, None)
    grants.room = 7
    assert s.global_wait(0.0, is_paused=False, hourly_cap=100) is None
    assert s.hourly_room(100, 0.0) == 7
    s.took_messages(7, 100, 0.0)
    assert grants.hourly == [7]
    assert s.global_wait(0.0, is_paused=False, hourly_cap=0) is None  # no cap: not asked


def test_reactions_and_operator_actions_are_told_to_the_other_nodes():
    grants = FakeGrants()
    s = shaper(grants)
    s.react("y.test", "421 4.7.0 [TSS04] deferred", 100.0)
    told = grants.told[-1]
    assert (told.domain, told.suspended_until, told.node, told.stamp) == ("y.test", 160.0, "a", 100)
    assert told.suspended_by == "421 4.7.0 [TSS04] deferred" and told.expires == 160.0
    s.react("t.test", "451 4.7.1 slow down", 100.0)
    throttled = grants.told[-1]
    assert throttled.throttle_rate == 1.0 and throttled.expires == 100.0  # at the floor
    s.resume("y.test", 110.0)
    cleared = grants.told[-1]
    assert cleared.suspended_until == 0.0 and cleared.stamp == 110.0


def test_a_reaction_heard_from_another_node_suspends_or_throttles_here_too():
    s = shaper(FakeGrants())
    heard = SharedReaction("y.test", 5.0, suspended_until=65.0, suspended_by="421 TSS04", node="b")
    assert s.adopt(heard, 10.0)  # newly suspended: its waiting jobs go back
    assert s.may_send("y.test", 10.0) == Wait(Reason.SUSPENDED, 65.0, "421 TSS04")
    assert not s.adopt(heard, 11.0)
    throttle = SharedReaction(
        "p.test",
        5.0,
        throttle_rate=300.0,
        throttle_ceiling=600.0,
        throttle_step_seconds=60.0,
        throttle_since=5.0,
        throttle_reply="451 slow down",
        node="b",
    )
    s.adopt(throttle, 10.0)
    assert s.per_minute(s.destination("p.test"), 10.0) == 300.0
    s.adopt(SharedReaction("y.test", 12.0, node="b"), 12.0)  # resumed on node b
    assert s.may_send("y.test", 12.0) is None
