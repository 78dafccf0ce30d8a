from mailengine.observe import statslines
from mailengine.observe.counters import Counters
from mailengine.scheduler.schedule import Schedule, has_memory_room


def test_due_keys_come_out_best_priority_first_and_future_ones_wait():
    s = Schedule()
    s.add("retry-later", due=100, priority=0)
    s.add("old-retry", due=5, priority=3)
    s.add("new", due=10, priority=0)
    assert s.pop_due(now=20, limit=10) == ["new", "old-retry"]
    assert s.next_due() == 100
    assert s.pop_due(now=99, limit=10) == []
    assert s.pop_due(now=100, limit=10) == ["retry-later"]
    assert len(s) == 0


def test_rescheduling_and_removal_replace_earlier_entries():
    s = Schedule()
    s.add("a", due=1)
    s.add("a", due=50)
    assert s.pop_due(now=10, limit=5) == []
    assert s.remove("a") and not s.remove("a")
    assert s.pop_due(now=100, limit=5) == [] and s.next_due() is None


def test_limit_is_respected():
    s = Schedule()
    for i in range(10):
        s.add(i, due=0)
    assert s.pop_due(now=1, limit=3) == [0, 1, 2]
    assert len(s) == 7


def test_memory_room():
    assert has_memory_room(0, 0, 4096, max_messages=1, max_kb=1000)
    assert not has_memory_room(1, 0, 4096, max_messages=1, max_kb=1000)
    assert not has_memory_room(1, 1000 * 1024 - 100, 4096, max_messages=10, max_kb=1000)
    # larger than the whole limit: alone, or never
    assert has_memory_room(0, 0, 5_000_000, max_messages=10, max_kb=1000)
    assert not has_memory_room(1, 4096, 5_000_000, max_messages=10, max_kb=1000)


def test_stats_lines_are_the_manuals_format():
    assert statslines.recv_line(401, 0, 7, 4971) == (
        "401 recv [401 inbound, 0 relay] (206228/h avg, 4971 total)"
    )
    assert statslines.sent_line(445, 6, 7960) == "445 sent (267000/h avg, 7960 total)"


def test_counters_close_intervals_and_keep_totals():
    c = Counters(started=0)
    c.received("inbound", 3)
    c.received("relay")
    c.delivered(2)
    iv = c.close_interval(10)
    assert (iv.recv_inbound, iv.recv_relay, iv.sent, iv.elapsed) == (3, 1, 2, 10)
    assert c.total_recv == 4 and c.recv_inbound == 0
    c.close_interval(4000)
    assert len(c.history) == 1  # the first interval is older than an hour
