import os

import pytest

from mailengine import enqueue
from mailengine.queue.envelope import Envelope
from mailengine.queue.inf import InfError
from mailengine.queue.store import BadMessageId, QueueStore


@pytest.fixture
def store(tmp_path):
    s = QueueStore(str(tmp_path / "mailq"))
    s.ensure_dirs()
    return s


def envelope(message_id="P1T1C1@h", rcpts=("a@x.test",)):
    return Envelope(
        message_id=message_id,
        mail_from="s@y.test",
        rcpt_to_send=list(rcpts),
        time_created=1_000_000_000,
    )


def test_directories_are_created(store):
    for name in ("incoming", "retry", "working", "done"):
        assert os.path.isdir(os.path.join(store.root, name))


def test_dat_is_renamed_into_place_before_inf_from_temp_files_in_the_same_dir(store, monkeypatch):
    renames = []
    real = os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: (renames.append((a, b)), real(a, b)))
    store.write_message("retry", envelope(), b"Subject: x\r\n\r\nhi\r\n", durable=True)
    finals = [os.path.basename(b) for _, b in renames]
    assert finals == ["P1T1C1@h.dat", "P1T1C1@h.inf"]
    for a, b in renames:
        assert os.path.dirname(a) == os.path.dirname(b)
        assert os.path.basename(a).startswith(".")  # the scan ignores temp files
    assert sorted(os.listdir(store.dir("retry"))) == ["P1T1C1@h.dat", "P1T1C1@h.inf"]


def test_move_is_a_rename_of_both_files_and_a_second_claim_fails(store):
    store.write_message("retry", envelope(), b"x\r\n")
    store.move("P1T1C1@h", "retry", "working")
    assert sorted(os.listdir(store.dir("working"))) == ["P1T1C1@h.dat", "P1T1C1@h.inf"]
    assert os.listdir(store.dir("retry")) == []
    with pytest.raises(FileNotFoundError):
        store.move("P1T1C1@h", "retry", "hold")


def test_working_is_moved_to_retry_at_start(store):
    store.write_message("working", envelope("A@h"), b"x\r\n")
    store.write_message("working", envelope("B@h"), b"x\r\n")
    assert sorted(store.recover_working()) == ["A@h", "B@h"]
    assert sorted(i for i, _, _ in store.scan("retry")) == ["A@h", "B@h"]
    assert os.listdir(store.dir("working")) == []


def test_a_move_cut_short_by_a_crash_is_finished(store):
    store.write_message("retry", envelope(), b"x\r\n")
    os.rename(
        store.path("retry", "P1T1C1@h", ".inf"), store.path("retry", "P1T1C1@h", ".inf-moving")
    )
    os.rename(store.path("retry", "P1T1C1@h", ".dat"), store.path("working", "P1T1C1@h", ".dat"))
    assert store.repair_interrupted_moves() == ["P1T1C1@h"]
    assert sorted(os.listdir(store.dir("working"))) == ["P1T1C1@h.dat", "P1T1C1@h.inf"]


def test_an_inf_without_its_dat_is_an_error(store):
    with open(store.path("retry", "lonely@h", ".inf"), "w") as fh:
        fh.write("mailfrom=a@b\nrcpttosend=c@d\n")
    with pytest.raises(InfError, match="missing"):
        store.read_envelope("retry", "lonely@h", now=0)


def test_path_tricks_are_refused(store):
    for bad in ("../../etc/passwd", "a/b", ".x"):
        with pytest.raises(BadMessageId):
            store.path("retry", bad, ".inf")
    with pytest.raises(ValueError):
        store.dir("../")


def test_retention_removes_only_old_messages(store):
    store.write_message("done", envelope("old@h"), b"x\r\n")
    store.write_message("done", envelope("new@h"), b"x\r\n")
    for ext in (".dat", ".inf"):
        os.utime(store.path("done", "old@h", ext), (1000, 1000))
    assert store.remove_older_than("done", cutoff=2000) == 1
    assert sorted(os.listdir(store.dir("done"))) == ["new@h.dat", "new@h.inf"]


def test_shutdown_file_is_taken_once(store):
    open(os.path.join(store.dir("retry"), "shutdown.txt"), "w").close()
    assert store.take_shutdown_request() is True
    assert store.take_shutdown_request() is False


def test_enqueue_writes_a_message_the_engine_can_read(tmp_path):
    mailq = str(tmp_path / "mailq")
    mid = enqueue(
        mailq,
        "joe@hotmail.com",
        "munster@yahoo.com,dracula@aol.com",
        "Subject: hi\nTo: x",
        "Message text",
    )
    store = QueueStore(mailq)
    env = store.read_envelope("retry", mid, now=0)
    assert env.rcpt_to_send == ["munster@yahoo.com", "dracula@aol.com"]
    assert env.mail_from == "joe@hotmail.com" and env.retry_time is not None
    assert store.read_data("retry", mid) == b"Subject: hi\r\nTo: x\r\n\r\nMessage text\r\n"
    assert enqueue(mailq, "", ["a@b.c"], "", "x") != mid


@pytest.mark.parametrize("rcpts", [[], ["no-at-sign"], ["a@b.c, d@e.f\n"]])
def test_enqueue_refuses_bad_recipients(tmp_path, rcpts):
    with pytest.raises(ValueError):
        enqueue(str(tmp_path), "a@b.c", rcpts, "", "x")
