"""Connection caps, per-address caps and priority peers (policy.admission)."""

from mailengine.policy.admission import Admission, Limits, Refusal, is_priority
from mailengine.policy.ipranges import parse_ip_ranges


def limits(total=2, per_ip=0, priority=()):
    return Limits(
        max_connections=total,
        max_connections_per_ip=per_ip,
        priority_ips=parse_ip_ranges(list(priority)),
    )


def test_sessions_are_admitted_up_to_max_connections_then_refused():
    a = Admission()
    assert a.admit("10.0.0.1", limits()) is None
    assert a.admit("10.0.0.2", limits()) is None
    assert a.admit("10.0.0.3", limits()) is Refusal.TOO_MANY_SESSIONS
    assert a.total == 2


def test_a_released_session_makes_room_again():
    a = Admission()
    a.admit("10.0.0.1", limits())
    a.admit("10.0.0.2", limits())
    a.release("10.0.0.1")
    assert a.admit("10.0.0.3", limits()) is None
    assert "10.0.0.1" not in a.by_ip


def test_priority_ips_are_always_admitted_and_still_counted():
    a = Admission()
    cap = limits(total=1, per_ip=1, priority=["10.9.0.0/16"])
    assert a.admit("10.0.0.1", cap) is None
    for _ in range(5):
        assert a.admit("10.9.1.1", cap) is None
    assert a.total == 6
    assert a.admit("10.0.0.2", cap) is Refusal.TOO_MANY_SESSIONS


def test_priority_zero_exempts_everyone():
    assert is_priority("198.51.100.7", parse_ip_ranges(["0"]))
    a = Admission()
    cap = limits(total=1, priority=["0"])
    assert all(a.admit(f"10.0.0.{i}", cap) is None for i in range(10))


def test_max_connections_per_ip_limits_one_address_only():
    a = Admission()
    cap = limits(total=100, per_ip=2)
    assert a.admit("10.0.0.1", cap) is None
    assert a.admit("10.0.0.1", cap) is None
    assert a.admit("10.0.0.1", cap) is Refusal.TOO_MANY_FROM_PEER
    assert a.admit("10.0.0.2", cap) is None
    a.release("10.0.0.1")
    assert a.admit("10.0.0.1", cap) is None


def test_per_ip_zero_means_no_per_address_limit():
    a = Admission()
    cap = limits(total=50, per_ip=0)
    assert all(a.admit("10.0.0.1", cap) is None for _ in range(50))
    assert a.check("10.0.0.1", cap) is Refusal.TOO_MANY_SESSIONS


def test_check_does_not_count():
    a = Admission()
    assert a.check("10.0.0.1", limits()) is None
    assert a.total == 0
