"""What the retry/ watch does with the names inotify reports (no inotify needed here)."""

import os

import attrs
import pytest

from mailengine.queue.watcher import RetryWatcher, changed_ids
from tests.twisted.test_live_queue import Consumer, SyncThreads, env, make_parts


@pytest.fixture
def parts(tmp_path):
    return make_parts(tmp_path)


def checked(queue, ids):
    reports = []
    queue.scanner.check_ids(ids, SyncThreads()).addCallback(reports.append)
    return reports[0]


def test_only_inf_names_of_valid_ids_count():
    names = {"A@h.inf", "A@h.dat", ".B@h.inf.tmp", "C@h.inf-moving", "../x.inf", "D@h.inf"}
    assert changed_ids(names) == {"A@h", "D@h"}


def test_a_changed_file_is_indexed_reread_when_replaced_and_forgotten_when_gone(parts):
    store, clock, config, queue, syncs, _ = parts
    queue.consumer = Consumer()
    first = env(1)
    first.retry_time = clock.seconds() + 3600
    store.write_message("retry", first, b"x\r\n")
    assert checked(queue, ["M1@h"]).new == 1
    assert checked(queue, ["M1@h"]).new == 0  # same file: not read again
    # `mailengine queue retry-now`: a new .inf (new inode), due now.
    first.retry_time = clock.seconds()
    store.replace_inf("retry", "M1@h", first.to_inf().encode())
    assert checked(queue, ["M1@h"]).new == 1
    assert queue.schedule.due_time("M1@h") == clock.seconds()
    # `mailengine queue hold`: gone from retry/.
    store.move("M1@h", "retry", "hold")
    assert checked(queue, ["M1@h"]).removed == 1 and "M1@h" not in queue.messages


def test_a_message_of_ours_in_flight_is_left_alone(parts):
    store, clock, config, queue, syncs, _ = parts
    queue.consumer = Consumer()
    queue.accept_relay(env(2), b"x\r\n")  # in memory: no file in retry/
    assert checked(queue, ["M2@h"]).removed == 0
    assert queue.messages["M2@h"].location == "memory"


@attrs.define
class Engine:
    store: object
    queue: object
    reactor: object


def test_shutdown_txt_stops_and_other_names_go_to_the_scanner(parts):
    store, clock, config, queue, syncs, _ = parts
    stops, rescans = [], []
    watcher = RetryWatcher(
        Engine(store, queue, clock),
        lambda: stops.append(1),
        SyncThreads(),
        lambda: rescans.append(1),
    )
    store.write_message("retry", env(3), b"x\r\n")
    watcher._names = {"M3@h.inf", "M3@h.dat"}
    watcher.handle()
    assert "M3@h" in queue.messages and stops == []
    with open(os.path.join(store.dir("retry"), "shutdown.txt"), "w") as fh:
        fh.write("stop\n")
    watcher._names = {"shutdown.txt"}
    watcher.handle()
    assert stops == [1] and not os.path.exists(os.path.join(store.dir("retry"), "shutdown.txt"))


def test_a_damaged_file_read_by_a_scan_and_an_event_is_reported_once(parts):
    from twisted.logger import globalLogPublisher

    store, clock, config, queue, syncs, _ = parts
    with open(store.path("retry", "lonely@h", ".inf"), "w") as fh:
        fh.write("mailfrom=a@b.test\nrcpttosend=c@d.test\n")  # and no .dat
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        assert queue.scan_retry().invalid == 1
        checked(queue, ["lonely@h"])  # the file's close event arrives after the scan
        assert queue.scan_retry().invalid == 1
    finally:
        globalLogPublisher.removeObserver(events.append)
    warned = [e for e in events if "skipped and left in place" in e.get("log_format", "")]
    assert len(warned) == 1
