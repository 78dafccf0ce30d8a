"""`mailengine send --wait` reads a message's fate from the queue files."""

import os

from mailengine.queue.envelope import Envelope
from mailengine.queue.follow import outcome, undeliverable_sizes
from mailengine.queue.store import QueueStore


def setup(tmp_path):
    store = QueueStore(str(tmp_path / "mailq"))
    store.ensure_dirs()
    store.write_message("retry", Envelope("F1@h", "s@y.test", ["a@x.test"], 0), b"x\r\n")
    return store, str(tmp_path)


def test_waiting_sending_moving_and_deferred(tmp_path):
    store, root = setup(tmp_path)
    sizes = undeliverable_sizes(root)
    assert outcome(store, root, "F1@h", ["a@x.test"], sizes).state == "waiting"
    os.rename(store.path("retry", "F1@h", ".inf"), store.path("retry", "F1@h", ".inf-moving"))
    moving = outcome(store, root, "F1@h", ["a@x.test"], sizes)
    assert moving.state == "waiting" and moving.code is None  # never "gone" mid-move
    os.rename(store.path("retry", "F1@h", ".inf-moving"), store.path("retry", "F1@h", ".inf"))
    store.move("F1@h", "retry", "working")
    assert outcome(store, root, "F1@h", ["a@x.test"], sizes).state == "sending"
    env = store.read_envelope("working", "F1@h", now=0)
    env.send_tries = 1
    env.add_log(0, "Finished send attempt 1, sent to 0 of 1 recipients")
    store.replace_inf("working", "F1@h", env.to_inf().encode())
    store.move("F1@h", "working", "retry")
    deferred = outcome(store, root, "F1@h", ["a@x.test"], sizes)
    assert deferred.code == 75 and "sent to 0 of 1" in deferred.text


def test_gone_is_delivered_unless_an_undeliverable_file_names_a_recipient(tmp_path):
    store, root = setup(tmp_path)
    with open(os.path.join(root, "hard-undeliverable.txt"), "w") as fh:
        fh.write("a@x.test\n")  # an older failure: not this message's
    sizes = undeliverable_sizes(root)
    store.delete("retry", "F1@h")
    assert outcome(store, root, "F1@h", ["<a@x.test>"], sizes).state == "delivered"
    with open(os.path.join(root, "hard-undeliverable.txt"), "a") as fh:
        fh.write("A@x.test\t550 5.1.1 no such user\n")
    failed = outcome(store, root, "F1@h", ["a@x.test"], sizes)
    assert failed.code == 1 and "hard-undeliverable.txt" in failed.text
