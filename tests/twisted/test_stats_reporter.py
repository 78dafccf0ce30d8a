"""The stats lines of a running engine on a fake clock (manual §8)."""

import attrs
import pytest
from twisted.internet import task
from twisted.logger import globalLogPublisher

from mailengine.config.model import Config
from mailengine.observe.counters import Counters
from mailengine.observe.stats import StatsReporter


@attrs.define
class HeldInMemory:
    memory_count: int = 0
    memory_bytes: int = 0


@attrs.define
class FakeEngine:
    counters: Counters
    config: Config
    reactor: task.Clock
    queue: HeldInMemory


@pytest.fixture
def rig():
    clock = task.Clock()
    clock.advance(1_000_000_000)
    engine = FakeEngine(Counters(clock.seconds()), Config.defaults(), clock, HeldInMemory())
    engine.config.override("logs", "stats_interval_seconds", 10)
    lines: list[str] = []

    def observe(event):
        if event.get("log_namespace") == "mailengine.stats":
            lines.append(event["line"])

    globalLogPublisher.addObserver(observe)
    reporter = StatsReporter(engine)
    reporter.startService()
    yield engine, reporter, lines
    globalLogPublisher.removeObserver(observe)


def test_every_interval_in_which_mail_moved_logs_the_manuals_lines_and_the_queue(rig):
    engine, _, lines = rig
    engine.counters.received("inbound", 300)
    engine.counters.received("relay", 101)
    engine.counters.delivered(445)
    engine.queue.memory_count, engine.queue.memory_bytes = 7, 5 * 1024 + 1
    engine.reactor.advance(10)
    assert lines == [
        "401 recv [300 inbound, 101 relay] (144360/h avg, 401 total)",
        "445 sent (160200/h avg, 445 total)",
        "queue size: 7 messages in memory",
        "queue memory: 6 KB",
    ]


def test_a_quiet_interval_logs_nothing_and_the_queue_lines_can_be_switched_off(rig):
    engine, _, lines = rig
    engine.reactor.advance(10)
    assert lines == []
    engine.config.override("logs", "log_queue_size", False)
    engine.config.override("logs", "log_queue_memory", False)
    engine.counters.delivered(3)
    engine.reactor.advance(10)
    assert lines == ["3 sent (1080/h avg, 3 total)"]


def test_stopping_logs_the_last_part_interval_so_the_totals_cover_the_whole_run(rig):
    engine, reporter, lines = rig
    engine.counters.received("relay", 2)
    engine.reactor.advance(4)
    reporter.stopService()
    assert lines[0] == "2 recv [0 inbound, 2 relay] (1800/h avg, 2 total)"
    assert engine.reactor.getDelayedCalls() == []


def test_an_interval_of_zero_turns_the_lines_off(rig):
    engine, _, lines = rig
    engine.config.override("logs", "stats_interval_seconds", 0)
    engine.counters.delivered(3)
    engine.reactor.advance(10)
    assert lines == []


def test_a_shorter_stats_interval_set_at_run_time_counts_from_the_change(rig):
    engine, _, lines = rig
    engine.config.apply("logs", "stats_interval_seconds", 600)
    engine.reactor.advance(5)
    engine.counters.received("inbound", 3)
    engine.config.apply("logs", "stats_interval_seconds", 2)  # the web admin's edit
    engine.reactor.advance(2)
    assert lines and lines[0].startswith("3 recv [3 inbound, 0 relay]")
