"""[server] workers and the supervisor's pure decisions: how many, when to restart, the box's
destination states (issue 13)."""

import pytest

from mailengine.config.kinds import Invalid
from mailengine.config.schema import setting
from mailengine.queue.destination_states import DestinationLine
from mailengine.workers.box import merged_destinations, total
from mailengine.workers.restarts import RestartBackoff, worker_count


def test_workers_takes_a_number_or_auto_and_names_what_is_allowed_otherwise():
    kind = setting("server", "workers").kind
    assert kind.parse(1) == 1 and kind.parse(8) == 8
    assert kind.parse("auto") == "auto" and kind.parse(" Auto ") == "auto"
    for bad in (0, -1, 257, 1.5, "two", True):
        with pytest.raises(Invalid, match=r'"auto" or a whole number from 1 to 256'):
            kind.parse(bad)
    with pytest.raises(Invalid, match="write 2 without quotes"):
        kind.parse("2")


def test_auto_is_one_worker_per_core_and_a_number_is_itself():
    assert worker_count("auto", 16) == 16
    assert worker_count("auto", None) == 1
    assert worker_count(3, 16) == 3


def test_a_worker_that_keeps_dying_waits_longer_each_time_up_to_a_minute():
    backoff = RestartBackoff()
    delays = [backoff.delay_after(started=t, ended=t + 2) for t in range(0, 80, 10)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]


def test_a_worker_that_ran_a_while_before_it_died_is_restarted_at_once_again():
    backoff = RestartBackoff()
    for _ in range(4):
        backoff.delay_after(0, 1)
    assert backoff.delay_after(started=100, ended=100 + 61) == 1
    assert backoff.delay_after(started=200, ended=201) == 2


def test_the_box_lists_each_unusual_destination_once_lowest_worker_first():
    a = {"domain": "a.test", "state": "suspended", "state_text": "suspended", "until": 9.0}
    a2 = {**a, "state": "throttled", "state_text": "throttled to 30/min", "until": 0.0}
    b = {"domain": "b.test", "state": "dns_failing", "state_text": "DNS failing"}
    lines = merged_destinations({2: {"destinations": [a2, b]}, 1: {"destinations": [a]}})
    assert lines == [DestinationLine(**a), DestinationLine(**b)]
    assert total([{"memory_messages": 2}, {"memory_messages": 3}, {}], "memory_messages") == 5


def test_a_status_bigger_than_one_amp_value_travels_in_pieces():
    from mailengine.workers.commands import CHUNK, BigJSON

    value = {"destinations": [{"domain": f"d{i}.test", "text": "x" * 50} for i in range(4000)]}
    strings: dict = {}
    BigJSON().toBox(b"status", strings, {"status": value}, None)
    assert len(strings) > 1 and all(len(v) <= CHUNK for v in strings.values())
    objects: dict = {}
    BigJSON().fromBox(b"status", strings, objects, None)
    assert objects == {"status": value} and strings == {}
