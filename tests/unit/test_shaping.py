"""Traffic shaping's pure core on a fake clock: rules, reactions, rates, caps, parking."""

from __future__ import annotations

import math

import attrs
import pytest

from mailengine.scheduler.rules import (
    Reaction,
    Rule,
    Rulebook,
    Source,
    pools_from,
    reactions_from,
    rules_from,
)
from mailengine.scheduler.schedule import Schedule
from mailengine.scheduler.shaping import Pacer, Reason, Shaper, StateView, Throttle, Wait

GOOGLE = Rule("google", domains=("gmail.com", "googlemail.com"), mx_suffixes=(".google.com",))


def shaper(*rules: Rule, reactions: tuple[Reaction, ...] = (), per_host: int = 10) -> Shaper:
    return Shaper(Rulebook(rules, reactions), per_host=per_host)


def send_all(s: Shaper, domain: str, start: float, end: float, step: float = 0.01) -> list[float]:
    """Start a message whenever the shaper allows, on a fake clock; the start times."""
    times, now = [], start
    while now < end:
        if s.may_send(domain, now) is None:
            s.sending(domain, now)
            s.finished(domain, is_sent=True)
            times.append(now)
        now += step
    return times


# -- rules ---------------------------------------------------------------


def test_rule_matches_by_domain_first_match_wins():
    first = Rule("first", domains=("a.test",))
    second = Rule("second", domains=("a.test", "b.test"))
    book = Rulebook((first, second))
    assert book.for_domain("a.test") is first
    assert book.for_domain("b.test") is second
    assert book.for_domain("c.test") is None


def test_rule_matches_by_mx_suffix_with_or_without_leading_dot():
    bare = Rule("bare", mx_suffixes=("outlook.com",))
    book = Rulebook((GOOGLE, bare))
    assert book.for_mx(["alt1.gmail-smtp-in.l.google.com."]) is GOOGLE
    assert book.for_mx(["x.protection.OUTLOOK.com"]) is bare
    assert book.for_mx(["outlook.com"]) is bare
    assert book.for_mx(["notoutlook.com", "mx.example.org"]) is None
    assert book.for_mx(["google.com.evil.test"]) is None


def test_rulebook_without_mx_rules_never_matches_hosts():
    assert Rulebook((Rule("d", domains=("a.test",)),)).for_mx(["mx.google.com"]) is None


def test_rows_from_config_become_rules_reactions_and_pools():
    rules = rules_from([{"name": "g", "domains": ["gmail.com"], "max_connections": 3}])
    assert rules == (Rule("g", domains=("gmail.com",), max_connections=3),)
    (reaction,) = reactions_from([{"pattern": "tss04", "action": "suspend", "minutes": 0.5}])
    assert reaction.minutes == 0.5 and reaction.regex.search("421 4.7.0 [TSS04] later")
    assert pools_from([{"name": "bulk", "source_ips": ["127.0.0.2"]}])["bulk"].source_ips == (
        "127.0.0.2",
    )


def test_reaction_first_match_wins_case_insensitive_on_whole_reply():
    suspend = Reaction("TSS04|4\\.7\\.28", "suspend", 30)
    throttle = Reaction("rate limit|4\\.7\\.", "throttle", 5)
    book = Rulebook((), (suspend, throttle))
    assert book.reaction_to("421 4.7.0 [tss04] Messages from x temporarily deferred") is suspend
    assert book.reaction_to("421 4.7.28 Our system has detected") is suspend
    assert book.reaction_to("451 4.7.1 Rate Limit exceeded") is throttle
    assert book.reaction_to("450 4.2.1 mailbox busy") is None


# -- destinations: in-flight budget -------------------------------------


def test_rule_less_destination_may_hold_four_messages_per_host_connection_in_flight():
    s = shaper(per_host=10)
    for _ in range(40):
        assert s.may_send("a.test", 0.0) is None
        s.sending("a.test", 0.0)
    assert s.may_send("a.test", 0.0) == Wait(Reason.CONNECTION_CAP)
    assert s.room("a.test", 0.0) == 0
    assert s.may_send("b.test", 0.0) is None  # another destination is not held
    s.finished("a.test")
    assert s.may_send("a.test", 0.0) is None
    assert s.room("a.test", 0.0) == 1


def test_rule_connections_size_the_budget():
    s = shaper(Rule("r", domains=("a.test",), max_connections=1, max_messages_per_minute=9))
    assert s.state("a.test", 0.0).label == "sending"  # not known yet
    s.destination("a.test")
    assert s.state("a.test", 0.0).label == "at most 9/min"
    s.destination("a.test").in_flight = 31
    assert s.may_send("a.test", 0.0) is None
    s.destination("a.test").in_flight = 32
    assert s.may_send("a.test", 0.0) == Wait(Reason.CONNECTION_CAP)
    assert s.state("a.test", 0.0).kind == "connection_capped"


def test_finished_keeps_last_error_and_a_success_clears_it():
    s = shaper()
    s.sending("a.test", 0.0)
    s.finished("a.test", error="451 try later")
    assert s.destinations["a.test"].last_error == "451 try later"
    s.sending("a.test", 0.0)
    s.finished("a.test", is_sent=True)
    assert s.destinations["a.test"].last_error == ""
    s.finished("unknown.test")  # never started: ignored


# -- rate --------------------------------------------------------------------


def test_pacer_spaces_evenly_with_one_second_of_slack():
    p = Pacer()
    assert p.wait_until(100.0) is None
    p.take(60, 100.0)  # slack: next_at = 99 + 1
    assert p.wait_until(100.0) is None
    p.take(60, 100.0)
    assert p.wait_until(100.0) == 101.0


def test_max_messages_per_minute_holds_over_two_minutes():
    s = shaper(Rule("r", domains=("a.test",), max_messages_per_minute=60))
    times = send_all(s, "a.test", 0.0, 120.0)
    assert 118 <= len(times) <= 122
    assert send_all(s, "b.test", 0.0, 1.0) == pytest.approx([i / 100 for i in range(100)], abs=1e-6)


def test_rate_wait_says_until_when():
    s = shaper(Rule("r", domains=("a.test",), max_messages_per_minute=6))
    s.sending("a.test", 50.0)
    s.sending("a.test", 50.0)  # the second second of slack is used up
    wait = s.may_send("a.test", 50.0)
    assert wait is not None and wait.reason is Reason.RATE
    assert wait.until == pytest.approx(59.0 + 10 + 10 - 10)  # 49 + 10 + 10
    assert s.room("a.test", 50.0) == 0
    assert s.room("a.test", wait.until) == 1


# -- reactions: suspend ------------------------------------------------------


def test_suspend_reaction_holds_the_destination_for_its_minutes_then_lets_go():
    s = shaper(reactions=(Reaction("TSS04", "suspend", 0.5),))
    reply = "421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred"
    assert s.react("yahoo.test", reply, 100.0) is not None
    wait = s.may_send("yahoo.test", 100.0)
    assert wait == Wait(Reason.SUSPENDED, 130.0, reply)
    assert s.may_send("yahoo.test", 129.99) is not None
    assert s.may_send("other.test", 110.0) is None
    assert s.may_send("yahoo.test", 130.0) is None
    assert s.state("yahoo.test", 110.0) == StateView("suspended", "suspended", reply, 130.0)
    assert s.state("yahoo.test", 131.0) == StateView("sending", "sending")
    assert s.state_counts(110.0)["suspended"] == 1
    assert s.unusual(110.0, 5) == ["yahoo.test"] and s.unusual(131.0, 5) == []


def test_a_later_shorter_suspension_does_not_shorten_it():
    s = shaper(reactions=(Reaction("long", "suspend", 10), Reaction("short", "suspend", 1)))
    s.react("a.test", "421 long", 0.0)
    s.react("a.test", "421 short", 10.0)
    assert s.destinations["a.test"].suspended_until == 600.0


def test_unmatched_reply_changes_nothing():
    s = shaper(reactions=(Reaction("TSS04", "suspend", 1),))
    assert s.react("a.test", "450 mailbox busy", 0.0) is None
    assert s.may_send("a.test", 0.0) is None


def test_operator_suspend_and_resume():
    s = shaper()
    s.suspend("a.test", 1000.0)
    assert s.may_send("a.test", 10.0) == Wait(Reason.SUSPENDED, 1000.0, "operator")
    assert s.is_suspended("a.test", 10.0)
    s.resume("a.test")
    assert s.may_send("a.test", 10.0) is None


# -- reactions: throttle -----------------------------------------------------


def test_throttle_halves_the_rule_rate_then_ramps_ten_percent_per_step():
    rule = Rule("r", domains=("a.test",), max_messages_per_minute=60)
    s = shaper(rule, reactions=(Reaction("slow down", "throttle", 5),))
    s.react("a.test", "451 4.7.1 slow down", 0.0)
    dest = s.destinations["a.test"]
    assert s.per_minute(dest, 0.0) == 30
    assert s.per_minute(dest, 299.0) == 30
    assert s.per_minute(dest, 300.0) == pytest.approx(33)
    assert s.per_minute(dest, 600.0) == pytest.approx(36.3)
    view = s.state("a.test", 600.0)
    assert (view.kind, view.label, view.reason) == (
        "throttled",
        "throttled to 36/min",
        "451 4.7.1 slow down",
    )
    steps = math.ceil(math.log(2) / math.log(1.1))  # 30 * 1.1**8 >= 60
    assert s.per_minute(dest, steps * 300.0) == 60
    assert dest.throttle is None  # ramped all the way back: throttle over


def test_a_further_deferral_halves_again_and_restarts_the_ramp():
    rule = Rule("r", domains=("a.test",), max_messages_per_minute=64)
    s = shaper(rule, reactions=(Reaction("slow", "throttle", 1),))
    s.react("a.test", "451 slow", 0.0)
    s.sending("a.test", 30.0)  # sent at the new rate
    s.react("a.test", "451 slow", 90.0)  # 32 * 1.1 = 35.2 -> 17.6
    dest = s.destinations["a.test"]
    assert s.per_minute(dest, 90.0) == pytest.approx(17.6)
    assert dest.throttle is not None and dest.throttle.ceiling == 64


def test_deferrals_of_messages_started_before_the_cut_only_restart_the_ramp():
    rule = Rule("r", domains=("a.test",), max_messages_per_minute=64)
    s = shaper(rule, reactions=(Reaction("slow", "throttle", 1),))
    for _ in range(5):
        s.sending("a.test", 0.0)
    for t in (1.0, 1.1, 1.2, 70.0):  # five in flight at the old rate come back deferred
        s.react("a.test", "451 slow", t)
    dest = s.destinations["a.test"]
    assert s.per_minute(dest, 70.0) == 32  # halved once, its recovery restarted at 70 s
    assert s.per_minute(dest, 130.0) == pytest.approx(35.2)


def test_throttle_floor_is_one_per_minute():
    rule = Rule("r", domains=("a.test",), max_messages_per_minute=1)
    s = shaper(rule, reactions=(Reaction("slow", "throttle", 1),))
    for t in range(5):
        s.react("a.test", "451 slow", float(t))
    assert s.per_minute(s.destinations["a.test"], 5.0) == 1


def test_throttle_without_a_rule_rate_halves_the_rate_seen_over_the_last_minute():
    s = shaper(reactions=(Reaction("slow", "throttle", 1),))
    for i in range(40):  # 40 messages in the last minute
        s.sending("a.test", 20.0 + i)
        s.finished("a.test")
    s.react("a.test", "451 slow", 60.0)
    dest = s.destinations["a.test"]
    assert s.per_minute(dest, 60.0) == pytest.approx(20)
    times = send_all(s, "a.test", 60.0, 120.0, step=0.05)
    assert 19 <= len(times) <= 23
    assert s.per_minute(dest, 60.0 + 60 * 7) == pytest.approx(20 * 1.1**7)
    assert s.per_minute(dest, 60.0 + 60 * 8) == 0  # 20 * 1.1**8 > 40: unlimited again
    assert dest.throttle is None


def test_throttle_ramp_never_overflows():
    t = Throttle(rate=1, ceiling=10, step_seconds=1, since=0, reply="")
    assert t.current(10**9) == 10 and t.is_over(10**9)


def test_observed_rate_forgets_old_windows():
    s = shaper()
    s.sending("a.test", 0.0)
    dest = s.destinations["a.test"]
    assert dest.observed_per_minute(30.0) == 1
    assert dest.observed_per_minute(90.0) == pytest.approx(0.5)
    assert dest.observed_per_minute(200.0) == 0
    dest.count_started(200.0)
    assert dest.count_before == 0 and dest.count_now == 1


# -- paths, connection caps and egress ----------------------------------------


def test_mx_suffix_rule_is_learnt_from_the_mx_hosts_and_shared_by_domains():
    rule = Rule("provider", mx_suffixes=(".mx.test",), max_connections=2)
    s = shaper(rule)
    paths = [s.path_for(f"d{i}.test", ["in.mx.test"]) for i in range(5)]
    assert all(p is not None and p.key == "provider@in.mx.test" for p in paths)
    assert s.destinations["d3.test"].rule is rule
    assert s.path_for("other.test", ["mx.other.test"]) is None
    path = paths[0]
    assert s.connection_wait(path) is None
    s.connection_opened(path)
    s.connection_opened(paths[4])
    wait = s.connection_wait(paths[2])
    assert wait is not None and wait.reason is Reason.CONNECTION_CAP
    s.connection_closed(path)
    assert s.connection_wait(paths[2]) is None
    s.connection_closed(path)
    s.connection_closed(path)  # never below zero
    assert s.connections == {}


def test_rule_less_path_has_no_extra_cap_or_source():
    s = shaper()
    assert s.path_for("a.test", ["mx.a.test"]) is None
    assert s.connection_wait(None) is None and s.source_for(None) is None
    s.connection_opened(None)
    s.connection_closed(None)


def test_egress_pool_sources_are_used_in_turn():
    rule = Rule("bulk", domains=("a.test",), pool="bulk")
    s = Shaper(
        Rulebook(
            (rule,), (), pools_from([{"name": "bulk", "source_ips": ["127.0.0.2", "127.0.0.3"]}])
        )
    )
    path = s.path_for("a.test", ["mx.a.test"])
    assert [s.source_for(path) for _ in range(4)] == [
        Source("127.0.0.2"),
        Source("127.0.0.3"),
    ] * 2
    named = pools_from(
        [{"name": "bulk", "source_ips": ["127.0.0.2", "127.0.0.3"], "helo_names": ["a.me", "b.me"]}]
    )
    s = Shaper(Rulebook((rule,), (), named))
    path = s.path_for("a.test", ["mx.a.test"])
    assert [s.source_for(path) for _ in range(3)] == [
        Source("127.0.0.2", "a.me"),
        Source("127.0.0.3", "b.me"),
        Source("127.0.0.2", "a.me"),
    ]
    unknown = Shaper(Rulebook((Rule("x", domains=("a.test",), pool="gone"),)))
    assert unknown.source_for(unknown.path_for("a.test", ["m"])) is None


def test_configure_matches_known_destinations_again():
    s = shaper()
    s.sending("a.test", 0.0)
    rule = Rule("r", domains=("a.test",), max_messages_per_minute=5)
    s.configure(Rulebook((rule,)), per_host=9)
    assert s.destinations["a.test"].rule is rule
    assert s.budget(s.destination("b.test")) == 36
    s.configure(Rulebook((rule,)), per_host=1)
    assert s.budget(s.destination("b.test")) == 32  # never below MIN_IN_FLIGHT


# -- the whole engine ----------------------------------------------------------


def test_global_wait_paused_and_hourly_cap():
    s = shaper()
    assert s.global_wait(0.0, is_paused=True, hourly_cap=0) == Wait(Reason.PAUSED)
    assert s.global_wait(0.0, is_paused=False, hourly_cap=0) is None
    room = s.hourly_room(3600, 0.0)
    s.took_messages(room, 3600, 0.0)
    wait = s.global_wait(0.0, is_paused=False, hourly_cap=3600)
    assert wait is not None and wait.reason is Reason.HOURLY_CAP and wait.until > 0


def test_bandwidth_wait_counts_only_sends_that_go():
    s = shaper()
    assert s.bandwidth_wait(10**6, 0, 0.0) is None
    assert s.bandwidth_wait(6000, 60000, 0.0) is None
    wait = s.bandwidth_wait(10, 60000, 0.0)
    assert wait is not None and wait.reason is Reason.BANDWIDTH


def test_rule_counters_count_reactions_and_connections():
    rule = Rule("r", domains=("a.test",))
    s = shaper(rule, reactions=(Reaction("x", "suspend", 1),))
    s.react("a.test", "421 x", 0.0)
    s.connection_opened(s.path_for("a.test", ["m"]))
    assert s.rule_counts == {"r": {"suspend": 1, "connections": 1}}


def test_forget_idle_keeps_busy_suspended_failing_and_waiting_destinations():
    s = shaper()
    for d in ("idle1.test", "idle2.test", "busy.test", "susp.test", "err.test", "wait.test"):
        s.destination(d)
    s.sending("busy.test", 0.0)
    s.suspend("susp.test", 100.0)
    s.dns_failed("err.test", "NXDOMAIN")
    assert s.forget_idle(1.0, keep=10) == 0
    assert s.forget_idle(1.0, keep=1, is_waiting=["wait.test"]) == 2
    assert set(s.destinations) == {"busy.test", "susp.test", "err.test", "wait.test"}
    assert s.state("err.test", 1.0) == StateView("dns_failing", "DNS failing", "NXDOMAIN")
    assert s.state("busy.test", 1.0).kind == "sending"
    assert s.state("never.test", 1.0).kind == "sending"


def test_dns_wait_says_lookup_in_progress_then_failing_until_the_answer_expires():
    s = shaper()
    assert s.dns_wait("slow.test", 0.0) is None
    s.dns_started("slow.test")
    assert s.dns_wait("slow.test", 0.0) == Wait(Reason.DNS_WAIT, None, "MX lookup in progress")
    assert s.state("slow.test", 0.0) == StateView(
        "dns_lookup", "waiting for DNS", "MX lookup in progress"
    )
    assert not s.destinations["slow.test"].is_idle(0.0)
    s.dns_done("slow.test")
    s.dns_failed("slow.test", "DNS lookup failed: SERVFAIL", until=30.0)
    wait = Wait(Reason.DNS_WAIT, 30.0, "DNS lookup failed: SERVFAIL")
    assert s.dns_wait("slow.test", 10.0) == wait
    assert s.state("slow.test", 10.0) == StateView(
        "dns_failing", "DNS failing", "DNS lookup failed: SERVFAIL", 30.0
    )
    assert s.dns_wait("slow.test", 31.0) == attrs.evolve(wait, until=None)  # still failing
    assert s.state_counts(10.0)["dns_failing"] == 1
    assert s.unusual(10.0, 5) == ["slow.test"]
    s.dns_started("slow.test")
    assert s.state("slow.test", 31.0).kind == "dns_failing"  # failing wins over asking
    s.dns_done("slow.test")
    s.dns_resolved("slow.test")
    assert s.dns_wait("slow.test", 31.0) is None
    assert s.state("slow.test", 31.0).kind == "sending"


# -- the schedule: parking -------------------------------------------------------


def test_parked_keys_stay_scheduled_but_are_not_due_until_released():
    sched = Schedule()
    sched.park("m1", "slow.test", 0.0, 1)
    sched.park("m2", "slow.test", 0.0, 0)
    sched.add("m3", 0.0)
    assert len(sched) == 3 and "m1" in sched
    assert sched.pop_due(10.0, 10) == ["m3"]
    assert not sched.has_due(10.0)
    assert sched.parked_count("slow.test") == 2
    assert sched.release("slow.test", 1) == 1
    assert sched.pop_due(10.0, 10) == ["m2"]  # best priority first
    assert sched.release("slow.test", 5) == 1
    assert sched.parked_groups() == []
    assert sched.pop_due(10.0, 10) == ["m1"]


def test_removed_or_rescheduled_parked_keys_are_not_released():
    sched = Schedule()
    sched.park("gone", "d", 0.0)
    sched.park("moved", "d", 0.0)
    sched.remove("gone")
    sched.add("moved", 50.0)
    assert sched.release("d", 5) == 0
    assert sched.pop_due(10.0, 5) == []
    assert sched.pop_due(60.0, 5) == ["moved"]


# -- DNS: a failing or slow lookup holds only its own destination's mail ----------


def let_in(s: Shaper, domain: str, now: float, keys: list[str]) -> list[str]:
    """Start each message the shaper lets in now; the keys it let in."""
    taken = []
    for key in keys:
        if s.may_send(domain, now) is None:
            s.sending(domain, now, key)
            taken.append(key)
    return taken


def test_a_new_destination_lets_in_only_a_few_messages_until_its_lookup_is_answered():
    s = shaper()
    assert let_in(s, "new.test", 0.0, ["m1", "m2", "m3", "m4"]) == ["m1", "m2"]
    assert s.may_send("new.test", 0.0) == Wait(Reason.DNS_WAIT, None, "MX lookup in progress")
    assert s.room("new.test", 0.0) == 0
    s.dns_resolved("new.test")
    assert s.dns_answered("new.test", "m1") is True
    assert s.dns_answered("new.test", "m1") is False  # once
    assert s.room("new.test", 0.0) == s.budget(s.destinations["new.test"]) - 2
    assert let_in(s, "new.test", 0.0, [f"n{i}" for i in range(10)]) == [f"n{i}" for i in range(10)]


def test_a_lookup_on_the_wire_bounds_the_destination_again_until_it_is_answered():
    s = shaper()
    s.dns_resolved("a.test")
    assert len(let_in(s, "a.test", 0.0, ["m1", "m2", "m3"])) == 3  # answered from the cache
    s.dns_asked("a.test")  # its cached answer expired: the next lookup goes out
    assert let_in(s, "a.test", 0.0, ["m4", "m5", "m6"]) == ["m4", "m5"]
    assert s.room("a.test", 0.0) == 0
    s.dns_answered("a.test", "m4")
    assert s.room("a.test", 0.0) == 1  # still unknown: one probe slot free
    s.dns_resolved("a.test")
    s.dns_answered("a.test", "m5")
    assert s.may_send("a.test", 0.0) is None and s.room("a.test", 0.0) > 1


def test_a_cached_transient_failure_holds_the_destination_until_it_expires():
    s = shaper()
    let_in(s, "broken.test", 0.0, ["m1", "m2"])
    s.dns_failed("broken.test", "DNS lookup failed: SERVFAIL", until=30.0, is_transient=True)
    s.dns_answered("broken.test", "m1")
    s.dns_answered("broken.test", "m2")
    wait = Wait(Reason.DNS_WAIT, 30.0, "DNS lookup failed: SERVFAIL")
    assert s.may_send("broken.test", 10.0) == wait
    assert s.may_send("broken.test", 29.9) == wait and s.room("broken.test", 29.9) == 0
    assert s.may_send("other.test", 10.0) is None  # only its own mail waits
    # The answer expired: a few go to ask again; the rest wait for them.
    assert let_in(s, "broken.test", 30.0, ["m3", "m4", "m5"]) == ["m3", "m4"]
    s.dns_failed("broken.test", "DNS lookup failed: SERVFAIL", until=60.0, is_transient=True)
    s.dns_answered("broken.test", "m3")
    assert s.may_send("broken.test", 31.0) == attrs.evolve(wait, until=60.0)
    s.dns_resolved("broken.test")  # the second probe got an answer after all
    s.dns_answered("broken.test", "m4")
    assert s.may_send("broken.test", 31.0) is None
    assert s.state("broken.test", 31.0).kind == "sending"


def test_a_transient_failure_without_a_known_expiry_only_bounds_the_probes():
    s = shaper()
    let_in(s, "x.test", 0.0, ["m1"])
    s.dns_failed("x.test", "DNS timeout", is_transient=True)
    s.dns_answered("x.test", "m1")
    assert let_in(s, "x.test", 1.0, ["m2", "m3", "m4"]) == ["m2", "m3"]


def test_no_such_domain_does_not_hold_its_mail_it_fails_at_once():
    s = shaper()
    let_in(s, "gone.test", 0.0, ["m1"])
    s.dns_failed("gone.test", "NXDOMAIN", until=300.0)
    s.dns_answered("gone.test", "m1")
    assert len(let_in(s, "gone.test", 1.0, [f"m{i}" for i in range(2, 12)])) == 10
    assert s.state("gone.test", 1.0).kind == "dns_failing"


def test_a_probe_that_ends_without_an_answer_frees_its_slot():
    s = shaper()
    let_in(s, "a.test", 0.0, ["m1", "m2"])
    s.finished("a.test", key="m1")  # a stop ended it while its lookup was out
    assert let_in(s, "a.test", 0.0, ["m3", "m4"]) == ["m3"]
    assert not s.destinations["a.test"].is_idle(0.0)


def test_a_suspension_is_told_before_a_dns_wait():
    s = shaper()
    s.dns_failed("a.test", "SERVFAIL", until=30.0, is_transient=True)
    s.suspend("a.test", 20.0)
    assert s.may_send("a.test", 0.0).reason == Reason.SUSPENDED
    assert s.may_send("a.test", 25.0).reason == Reason.DNS_WAIT
