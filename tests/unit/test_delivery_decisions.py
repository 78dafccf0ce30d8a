"""Pure delivery decisions: grouping, targets, slots, outcomes -> .inf, retries, caps."""

import resource

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailengine.delivery.descriptors import descriptors_needed, plan_limit
from mailengine.delivery.outcome import (
    HARD,
    SENT,
    SOFT,
    UNTRIED,
    RecipientResult,
    apply_attempt,
    kind_of_code,
)
from mailengine.delivery.plan import (
    Hop,
    HostHealth,
    count_hosts,
    domain_of,
    group_by_domain,
    hops_for,
    next_hop,
)
from mailengine.delivery.slots import ConnectionSlots, wants_connection
from mailengine.dns.answer import Destination, Target
from mailengine.queue.envelope import Envelope
from mailengine.scheduler.caps import TokenBucket, bandwidth_cap, hourly_message_cap
from mailengine.scheduler.retry import priority_after_retry, retry_delay_seconds

NOW = 1_700_000_000.0
INTERVALS = (30.0, 120.0)


def envelope(*rcpts, **kw):
    return Envelope(
        message_id="M1@h", mail_from="s@src.test", rcpt_to_send=list(rcpts), time_created=NOW, **kw
    )


# -- grouping and targets --------------------------------------------------------


def test_recipients_at_one_domain_share_a_group_and_duplicates_go_once():
    groups = group_by_domain(["a@D1.test", "b@d2.test", "c@d1.test", "A@d1.test"])
    assert groups == [("d1.test", ["a@D1.test", "c@d1.test"]), ("d2.test", ["b@d2.test"])]


def test_more_than_one_hundred_recipients_at_a_domain_take_several_transactions():
    groups = group_by_domain([f"u{i}@d.test" for i in range(250)])
    assert [len(r) for _, r in groups] == [100, 100, 50]


def test_an_address_without_a_domain_is_grouped_under_the_empty_domain():
    assert group_by_domain(["nobody"]) == [("", ["nobody"])]
    assert domain_of("x@Example.COM.") == "example.com"


@given(st.lists(st.from_regex(r"[a-c]{1,3}@[d-f]\.test", fullmatch=True), max_size=300))
def test_grouping_keeps_every_distinct_recipient_exactly_once(rcpts):
    grouped = [a for _, group in group_by_domain(rcpts) for a in group]
    assert sorted(a.lower() for a in grouped) == sorted({a.lower() for a in rcpts})
    assert all(len(g) <= 100 for _, g in group_by_domain(rcpts))


def test_hops_follow_mx_preference_use_the_bypass_port_and_skip_rejected_addresses():
    dest = Destination(
        "d.test",
        (
            Target(20, "mx2.d.test", ("10.0.0.2",)),
            Target(10, "mx1.d.test", ("10.0.0.1", "10.0.0.9"), port=2525),
        ),
    )
    hops = hops_for(dest, 25, lambda ip: ip == "10.0.0.9")
    assert hops == (Hop("mx1.d.test", "10.0.0.1", 2525), Hop("mx2.d.test", "10.0.0.2", 25))
    assert count_hosts(hops) == 2
    assert hops[0].describe() == "mx1.d.test (10.0.0.1 2525)"


def test_a_server_that_failed_moments_ago_is_skipped_until_its_time_is_up():
    a, b = Hop("mx1", "10.0.0.1", 25), Hop("mx2", "10.0.0.2", 25)
    health = HostHealth(down_seconds=5)
    health.mark_down(a, NOW, "connection refused")
    assert next_hop([a, b], 0, NOW + 1, health) == (1, [(a, "connection refused")])
    assert next_hop([a, b], 0, NOW + 6, health) == (0, [])
    health.mark_down(b, NOW, "timeout")
    assert next_hop([a, b], 1, NOW + 1, health)[0] == 2  # none left
    assert len(health) == 1  # a is forgotten once asked about after its time
    health.forget_expired(NOW + 6)
    assert len(health) == 0


# -- connection slots ------------------------------------------------------------


def test_a_host_gets_another_connection_only_while_work_waits_and_caps_allow():
    assert wants_connection(pending_jobs=3, connecting=1, idle=1)
    assert not wants_connection(pending_jobs=2, connecting=1, idle=1)
    slots = ConnectionSlots()
    for _ in range(2):
        assert slots.may_open("h1", per_host_max=2, total_max=3)
        slots.opened("h1")
    assert not slots.may_open("h1", per_host_max=2, total_max=3)
    assert not slots.blocked_by_total("h1", per_host_max=2, total_max=3)
    slots.opened("h2")
    assert slots.blocked_by_total("h2", per_host_max=2, total_max=3)
    slots.wait_for_slot("h2")
    slots.wait_for_slot("h2")
    slots.closed("h1")
    assert slots.may_open("h2", per_host_max=2, total_max=3)
    assert slots.next_waiting() == "h2" and slots.next_waiting() is None
    assert slots.total == 2 and slots.open_count("h1") == 1


# -- outcomes and the .inf -------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"), [(250, SENT), (251, SENT), (550, HARD), (554, HARD), (421, SOFT), (451, SOFT)]
)
def test_reply_codes_mean_sent_hard_or_soft(code, kind):
    assert kind_of_code(code) == kind


def test_a_partly_failed_first_attempt_updates_every_key_of_the_manual():
    env = envelope("a@d.test", "b@d.test", "c@d.test")
    summary = apply_attempt(
        env,
        [
            RecipientResult("a@d.test", SENT, 250),
            RecipientResult("b@d.test", HARD, 550, "550 no such user"),
            RecipientResult("c@d.test", SOFT, 451, "451 try later"),
        ],
        now=NOW,
        intervals_minutes=INTERVALS,
    )
    assert (env.rcpt_sent, env.rcpt_failed) == (["a@d.test"], ["b@d.test"])
    assert env.rcpt_transient == ["c@d.test"] and env.rcpt_to_send == ["c@d.test"]
    assert env.send_tries == 1 and env.priority == 1
    assert env.retry_time == NOW + 30 * 60 and env.time_finished == NOW
    assert env.log[-1].endswith(": Finished send attempt 1, sent to 1 of 3 recipients")
    assert not summary.done and [r.address for r in summary.soft_retry] == ["c@d.test"]
    fields = env.to_fields()
    assert fields["rcpttosend"].strip(",") == "c@d.test" and fields["sendtries"] == "1"


def test_after_the_last_interval_a_soft_failure_is_final_and_the_message_done():
    env = envelope("c@d.test", send_tries=2, priority=2, rcpt_transient=["c@d.test"])
    summary = apply_attempt(
        env,
        [RecipientResult("c@d.test", SOFT, 451, "451 later")],
        now=NOW,
        intervals_minutes=INTERVALS,
    )
    assert summary.done and [r.address for r in summary.soft_final] == ["c@d.test"]
    assert env.rcpt_to_send == [] and env.rcpt_transient == ["c@d.test"]
    assert env.log[-1].endswith("sent to 0 of 1 recipients, now done sending")
    assert env.retry_time is None


def test_never_retry_makes_the_first_soft_failure_final():
    env = envelope("c@d.test")
    summary = apply_attempt(
        env, [RecipientResult("c@d.test", SOFT, 421)], now=NOW, intervals_minutes=()
    )
    assert summary.done and len(summary.soft_final) == 1


def test_a_retry_that_succeeds_clears_the_transient_entry():
    env = envelope("c@d.test", send_tries=1, rcpt_transient=["c@d.test"])
    summary = apply_attempt(
        env, [RecipientResult("c@d.test", SENT, 250)], now=NOW, intervals_minutes=INTERVALS
    )
    assert summary.done and env.rcpt_sent == ["c@d.test"] and env.rcpt_transient == []
    assert env.log[-1].endswith(
        "Finished send attempt 2, sent to 1 of 1 recipients, now done sending"
    )


def test_an_attempt_cut_short_before_anything_went_out_is_not_counted():
    env = envelope("a@d.test")
    summary = apply_attempt(
        env, [RecipientResult("a@d.test", UNTRIED)], now=NOW, intervals_minutes=INTERVALS
    )
    assert not summary.counted and env.send_tries == 0 and env.priority == 0
    assert env.retry_time == NOW and env.rcpt_to_send == ["a@d.test"] and env.log == []


def test_a_message_without_recipients_is_done_rather_than_due_again():
    summary = apply_attempt(envelope(), [], now=NOW, intervals_minutes=INTERVALS)
    assert summary.done and not summary.counted


def test_untried_recipients_beside_sent_ones_are_due_again_at_once():
    env = envelope("a@d.test", "b@e.test")
    apply_attempt(
        env,
        [RecipientResult("a@d.test", SENT), RecipientResult("b@e.test", UNTRIED)],
        now=NOW,
        intervals_minutes=INTERVALS,
    )
    assert env.rcpt_to_send == ["b@e.test"] and env.retry_time == NOW


def test_the_log_entry_can_be_skipped_when_the_inf_is_discarded():
    env = envelope("a@d.test")
    apply_attempt(
        env,
        [RecipientResult("a@d.test", SENT)],
        now=NOW,
        intervals_minutes=INTERVALS,
        should_log=False,
    )
    assert env.log == []


# -- retries and priority --------------------------------------------------------


def test_retry_delays_follow_the_intervals_then_end():
    assert retry_delay_seconds((30, 120), 1) == 1800
    assert retry_delay_seconds((30, 120), 2) == 7200
    assert retry_delay_seconds((30, 120), 3) is None
    assert retry_delay_seconds((0.05,), 1) == pytest.approx(3.0)
    assert retry_delay_seconds((), 1) is None


def test_priority_drops_by_one_per_retry_and_stops_at_99():
    assert priority_after_retry(0) == 1
    assert priority_after_retry(99) == 99


# -- caps ------------------------------------------------------------------------


def test_no_cap_means_no_waiting():
    bucket = hourly_message_cap()
    assert bucket.available(0, NOW) > 10**6
    assert bucket.wait_seconds(0, NOW) == 0


def test_the_hourly_cap_never_lets_more_than_the_cap_through_in_any_hour():
    bucket = hourly_message_cap()
    cap, sent, t = 3600, 0, NOW
    while t < NOW + 3600:
        n = bucket.available(cap, t)
        bucket.take(cap, n, t)
        sent += n
        t += 0.5
    assert cap * 0.97 <= sent <= cap


def test_the_hourly_cap_says_how_long_to_wait_when_used_up():
    bucket = hourly_message_cap()
    cap = 7200  # 2 a second, a burst of 4
    assert bucket.available(cap, NOW) == 4
    bucket.take(cap, 4, NOW)
    assert bucket.available(cap, NOW) == 0
    wait = bucket.wait_seconds(cap, NOW)
    assert 0.4 < wait < 0.6
    assert bucket.available(cap, NOW + wait) == 1


def test_bandwidth_runs_into_debt_for_a_big_message_and_later_ones_wait():
    bucket = bandwidth_cap()
    limit = 60_000  # 1,000 bytes a second
    assert bucket.wait_seconds(limit, NOW) == 0
    bucket.take(limit, 5_000, NOW)
    assert bucket.wait_seconds(limit, NOW) == pytest.approx(4.0 * 60 / 59, rel=0.05)


def test_a_changed_cap_applies_at_once():
    bucket = TokenBucket(period_seconds=60, burst_seconds=1)
    bucket.take(60, 1, NOW)
    assert bucket.available(60, NOW) == 0
    assert bucket.available(6000, NOW) == 0  # what was used stays used...
    assert bucket.available(6000, NOW + 0.1) >= 9  # ...but it refills at the new rate
    assert bucket.limit == 6000


# -- open files -------------------------------------------------------------------


def test_the_open_file_limit_is_raised_to_what_the_caps_need_or_the_warning_is_due():
    infinity = resource.RLIM_INFINITY
    assert descriptors_needed(500, 100) == 800
    assert plan_limit(1024, 4096, 800) == (None, False)  # enough already
    assert plan_limit(256, 4096, 800) == (800, False)  # raised within the hard limit
    assert plan_limit(256, infinity, 800) == (800, False)
    assert plan_limit(256, 512, 800) == (512, True)  # as far as allowed, and the warning
    assert plan_limit(512, 512, 800) == (None, True)
    assert plan_limit(infinity, infinity, 800) == (None, False)
