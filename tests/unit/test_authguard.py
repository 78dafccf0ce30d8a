"""AUTH failures per address and the lock-out (pure)."""

from mailengine.policy.authguard import AuthGuard


def fail(guard, address, now, n=3, window=60.0):
    return guard.failed(address, now, max_failures=n, window_seconds=window)


def test_failures_within_the_window_lock_the_address_out_for_the_window():
    guard = AuthGuard()
    assert fail(guard, "a", 0).failures == 1
    assert fail(guard, "a", 30).locked_for_seconds == 0
    verdict = fail(guard, "a", 59)
    assert (verdict.failures, verdict.locked_for_seconds) == (3, 60)
    assert guard.locked_for("a", 100) == 19 and guard.locked_for("b", 100) == 0
    assert guard.locked_for("a", 119) == 0


def test_failures_spread_wider_than_the_window_never_lock_out():
    guard = AuthGuard()
    for t in range(0, 600, 31):
        assert fail(guard, "a", t).failures <= 2
    assert guard.locked_for("a", 600) == 0


def test_memory_stays_bounded_by_forgetting_stale_addresses_first():
    guard = AuthGuard(max_addresses=3)
    for i, address in enumerate("abc"):
        fail(guard, address, i)
    fail(guard, "d", 100)  # a, b and c are stale by now
    assert len(guard) == 1
    for address in "efg":
        fail(guard, address, 101)
    assert len(guard) == 3 and guard.locked_for("g", 101) == 0
