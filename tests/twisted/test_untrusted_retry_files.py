"""Files dropped into retry/ are untrusted: FIFOs, symlinks, controls in values (issue 9)."""

import os

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from mailengine.queue.inf import InfError, parse_inf
from mailengine.queue.store import NotARegularFile
from tests.twisted.test_live_queue import Consumer, SyncThreads, make_parts

GOOD_INF = "mailfrom=s@y.test\nrcpttosend=a@x.test\n"


@pytest.fixture
def parts(tmp_path):
    return make_parts(tmp_path)


@pytest.fixture
def warnings():
    """The text of every log event while the test runs (twisted.logger, not logging)."""
    events = []
    globalLogPublisher.addObserver(events.append)
    yield lambda: "\n".join(formatEvent(e) for e in events)
    globalLogPublisher.removeObserver(events.append)


def drop(store, message_id, inf_text, data=b"Subject: x\r\n\r\nbody\r\n"):
    with open(store.path("retry", message_id, ".dat"), "wb") as fh:
        fh.write(data)
    with open(store.path("retry", message_id, ".inf"), "w", newline="") as fh:
        fh.write(inf_text)


def scan_in_threads(queue):
    """The engine's scan: listing and reading in (here: inline) worker threads."""
    reports = []
    queue.scan_retry_in_background(SyncThreads()).addCallback(reports.append)
    [report] = reports
    return report


def test_a_fifo_named_like_an_inf_or_dat_is_skipped_without_blocking(parts, warnings):
    store, clock, config, queue, syncs, _ = parts
    os.mkfifo(store.path("retry", "F1@h", ".inf"))
    with open(store.path("retry", "F1@h", ".dat"), "wb") as fh:
        fh.write(b"x\r\n")
    with open(store.path("retry", "F2@h", ".inf"), "w") as fh:
        fh.write(GOOD_INF)
    os.mkfifo(store.path("retry", "F2@h", ".dat"))
    drop(store, "OK@h", GOOD_INF)
    report = scan_in_threads(queue)  # would hang for ever on open() without O_NONBLOCK
    assert (report.new, report.invalid) == (1, 2)
    assert list(queue.messages) == ["OK@h"]
    assert "not a regular file" in warnings()
    assert os.path.exists(store.path("retry", "F1@h", ".inf"))  # left in place
    assert os.path.exists(store.path("retry", "F2@h", ".dat"))


def test_a_symlinked_dat_is_never_followed_or_mailed(parts, tmp_path, warnings):
    store, clock, config, queue, syncs, _ = parts
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0\r\n")
    with open(store.path("retry", "L1@h", ".inf"), "w") as fh:
        fh.write(GOOD_INF)
    os.symlink(secret, store.path("retry", "L1@h", ".dat"))
    assert scan_in_threads(queue).invalid == 1
    assert "symbolic link" in warnings()
    assert queue.messages == {}
    with pytest.raises(NotARegularFile):
        store.read_data("retry", "L1@h")


def test_a_dat_swapped_for_a_symlink_after_the_scan_is_not_sent(parts, tmp_path):
    store, clock, config, queue, syncs, _ = parts
    queue.consumer = Consumer()
    drop(store, "S1@h", GOOD_INF)
    queue.scan_retry()
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"secret\r\n")
    os.unlink(store.path("retry", "S1@h", ".dat"))
    os.symlink(secret, store.path("retry", "S1@h", ".dat"))
    assert queue.take_due(10) == []
    assert os.path.islink(store.path("retry", "S1@h", ".dat"))  # back in retry/, untouched
    assert queue.scan_retry().invalid == 1  # and not picked up again


def test_a_symlinked_inf_is_not_followed(parts, tmp_path):
    store, clock, config, queue, syncs, _ = parts
    target = tmp_path / "elsewhere.inf"
    target.write_text(GOOD_INF)
    with open(store.path("retry", "I1@h", ".dat"), "wb") as fh:
        fh.write(b"x\r\n")
    os.symlink(target, store.path("retry", "I1@h", ".inf"))
    assert queue.scan_retry().invalid == 1


@pytest.mark.parametrize(
    "inf_text,why",
    [
        ("mailfrom=s@y.test\nrcpttosend=a@x.test\x00evil@z.test\n", "control character"),
        ("mailfrom=s@y.test\nrcpttosend=a@x.test\rmailfrom=evil@z.test\n", "control character"),
        ("mailfrom=s@y.test\nrcpttosend=a b@x.test\n", "not an address"),
        ("mailfrom=s@y.test\nrcpttosend=a@x.test>\n", "not an address"),
        ("mailfrom=s y@z\nrcpttosend=a@x.test\n", "not an address"),
        ("mailfrom=s@y.test\nrcpttosend=nobody\n", "not an address"),
        ("mailfrom=s@y.test\nrcpttosend=a@x.test\npriority=1_0\n", "whole number"),
        ("mailfrom=s@y.test\nrcpttosend=a@x.test\nsendtries=\u0663\n", "whole number"),
        ("mailfrom=s@y.test\nrcpttosend=a@x.test\ndatasize=12k\n", "whole number"),
        ("mailfrom=s@y.test\nrcpttosend=a@x.test\nretrytime=2030010\u0661000000\n", "YYYYMMDD"),
    ],
)
def test_values_are_validated_and_a_damaged_file_is_left_in_place(parts, inf_text, why, warnings):
    store, clock, config, queue, syncs, _ = parts
    drop(store, "D1@h", inf_text)
    assert scan_in_threads(queue).invalid == 1
    assert why in warnings()
    assert queue.messages == {}
    assert os.path.exists(store.path("retry", "D1@h", ".inf"))
    assert os.path.exists(store.path("retry", "D1@h", ".dat"))


def test_a_cr_inside_a_value_does_not_start_a_new_key():
    with pytest.raises(InfError):
        parse_inf("rcpttosend=a@x.test\rmailfrom=evil@z.test\nmailfrom=s@y.test\n")
    # U+2028 and friends split lines for str.splitlines, not for the .inf format.
    fields = parse_inf("log=one\u2028mailfrom=evil@z.test\nmailfrom=s@y.test\n")
    assert fields["mailfrom"] == "s@y.test" and fields["log"] == "one\u2028mailfrom=evil@z.test"


def test_lines_ending_in_crlf_from_windows_writers_still_parse(parts):
    store, clock, config, queue, syncs, _ = parts
    drop(store, "W1@h", "mailfrom=s@y.test\r\nrcpttosend=a@x.test,b@x.test,\r\n")
    assert queue.scan_retry().new == 1
    assert queue.messages["W1@h"].envelope.rcpt_to_send == ["a@x.test", "b@x.test"]


def test_an_oversized_inf_is_refused_unread(parts):
    store, clock, config, queue, syncs, _ = parts
    drop(store, "B1@h", GOOD_INF + "x-note=" + "y" * (2 * 1024 * 1024) + "\n")
    assert queue.scan_retry().invalid == 1


def test_the_scan_reads_in_worker_threads_and_indexes_on_return(parts):
    store, clock, config, queue, syncs, _ = parts
    for i in range(3):
        drop(store, f"T{i}@h", GOOD_INF)
    threads = SyncThreads(hold=True)
    reports = []
    queue.scan_retry_in_background(threads).addCallback(reports.append)
    assert queue.scan_retry_in_background(threads) is not None  # the same pass, not a second
    assert queue.messages == {}  # nothing read on the calling (reactor) thread
    while threads.waiting:
        threads.release()
    assert reports[0].new == 3 and sorted(queue.messages) == ["T0@h", "T1@h", "T2@h"]
