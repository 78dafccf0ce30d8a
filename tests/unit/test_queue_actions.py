"""Operator actions on queue files (mailengine/queue/actions.py) and the queue's shape."""

import os

import pytest

from mailengine.queue.actions import CLAIM, QueueActions, QueueFilter, parse_age
from mailengine.queue.envelope import Envelope
from mailengine.queue.shape import AGE_BUCKETS_MINUTES, bucket_index, format_age, queue_shape
from mailengine.queue.store import BadMessageId, QueueStore

NOW = 1_700_000_000.0


@pytest.fixture
def store(tmp_path):
    s = QueueStore(str(tmp_path / "mailq"))
    s.ensure_dirs()
    return s


@pytest.fixture
def actions(store):
    return QueueActions(store)


def put(store, dirname, message_id, rcpts, *, age=60.0, sender="s@example.org"):
    envelope = Envelope(
        message_id=message_id,
        mail_from=sender,
        rcpt_to_send=list(rcpts),
        time_created=NOW - age,
        retry_time=NOW + 3600,
    )
    store.write_message(dirname, envelope, b"Subject: " + message_id.encode() + b"\r\n\r\nhi\r\n")
    return envelope


def files(store, dirname):
    return sorted(os.listdir(store.dir(dirname)))


def envelope_in(store, dirname, message_id):
    return store.read_envelope(dirname, message_id, now=NOW, require_recipients=False)


def test_hold_moves_a_message_to_hold_and_release_brings_it_back_due_now(store, actions):
    put(store, "retry", "M1", ["a@x.test"])
    held = actions.act("hold", "M1", NOW)
    assert held.ok and held.source == "retry" and held.dest == "hold"
    assert files(store, "retry") == [] and files(store, "hold") == ["M1.dat", "M1.inf"]
    assert envelope_in(store, "hold", "M1").retry_time == NOW + 3600
    released = actions.act("release", "M1", NOW + 10)
    assert released.ok and released.dest == "retry"
    assert files(store, "hold") == [] and files(store, "retry") == ["M1.dat", "M1.inf"]
    envelope = envelope_in(store, "retry", "M1")
    assert envelope.retry_time == NOW + 10
    assert [line.split(": ", 1)[1] for line in envelope.log] == [
        "held by the operator",
        "released by the operator",
    ]


def test_retry_now_writes_a_new_inf_file_due_now(store, actions):
    put(store, "retry", "M1", ["a@x.test"])
    before = store.inode("retry", "M1")
    result = actions.act("retry-now", "M1", NOW)
    assert result.ok and result.dest == "retry"
    assert store.inode("retry", "M1") != before  # the engine's scan sees a new file
    assert envelope_in(store, "retry", "M1").retry_time == NOW
    assert files(store, "retry") == ["M1.dat", "M1.inf"]  # no claim or temp file left


def test_delete_by_domain_removes_only_that_domains_recipients(store, actions):
    put(store, "retry", "only", ["a@x.test", "b@x.test"])
    put(store, "retry", "mixed", ["c@x.test", "d@y.test"])
    put(store, "retry", "other", ["e@y.test"])
    results = actions.act_on_matching("delete", QueueFilter(dirs=("retry",), domain="x.test"), NOW)
    assert {r.message_id: r.ok for r in results} == {"only": True, "mixed": True}
    assert files(store, "retry") == ["mixed.dat", "mixed.inf", "other.dat", "other.inf"]
    assert envelope_in(store, "retry", "mixed").rcpt_to_send == ["d@y.test"]
    assert envelope_in(store, "retry", "other").rcpt_to_send == ["e@y.test"]


def test_delete_by_domain_leaves_a_message_whose_pending_recipients_are_elsewhere(store, actions):
    envelope = put(store, "retry", "M1", ["d@y.test"])
    envelope.rcpt_sent = ["c@x.test"]
    store.replace_inf("retry", "M1", envelope.to_inf().encode())
    [result] = actions.act_on_matching("delete", QueueFilter(domain="x.test"), NOW)
    assert not result.ok and "left alone" in result.text
    assert files(store, "retry") == ["M1.dat", "M1.inf"]


def test_an_action_loses_to_the_engine_when_the_engine_claimed_first(store, actions):
    put(store, "retry", "M1", ["a@x.test"])
    # The engine's move renames ID.inf first: the message is the engine's now.
    os.rename(store.path("retry", "M1", ".inf"), store.path("retry", "M1", ".inf-moving"))
    result = actions._act_in("delete", "retry", "M1", NOW, domain="")
    assert not result.ok and "taken" in result.text
    assert files(store, "retry") == ["M1.dat", "M1.inf-moving"]


def test_messages_being_sent_are_left_to_the_engine(store, actions):
    put(store, "working", "M1", ["a@x.test"])
    for action in ("delete", "hold", "retry-now", "release"):
        result = actions.act(action, "M1", NOW)
        assert not result.ok
    assert "being sent now" in actions.act("hold", "M1", NOW).text
    assert files(store, "working") == ["M1.dat", "M1.inf"]


@pytest.mark.parametrize(
    "bad", ["../M1", "..", "a/b", ".hidden", "M1/../../x", "", "x\x00y", "/etc/passwd"]
)
def test_ids_that_could_reach_outside_the_queue_are_refused(store, actions, bad):
    put(store, "retry", "M1", ["a@x.test"])
    with pytest.raises(BadMessageId):
        actions.act("delete", bad, NOW)
    with pytest.raises(BadMessageId):
        actions.show(bad, NOW)
    assert files(store, "retry") == ["M1.dat", "M1.inf"]


def test_an_unreadable_inf_is_listed_and_can_be_deleted_but_not_held(store, actions):
    with open(store.path("retry", "bad", ".dat"), "wb") as fh:
        fh.write(b"x\r\n")
    with open(store.path("retry", "bad", ".inf"), "w") as fh:
        fh.write("this is not key=value\nno equals sign here\n")
    [entry], total = actions.page(QueueFilter(), NOW)
    assert total == 1 and entry.envelope is None and "not key=value" in entry.error
    held = actions.act("hold", "bad", NOW)
    assert not held.ok and files(store, "retry") == ["bad.dat", "bad.inf"]
    assert actions.act("delete", "bad", NOW).ok
    assert files(store, "retry") == []


def test_an_interrupted_claim_is_put_back_beside_its_dat(store, actions):
    put(store, "retry", "M1", ["a@x.test"])
    # A hold that crashed after moving the .dat: the claim is left in retry/.
    os.rename(store.path("retry", "M1", ".inf"), store.path("retry", "M1", CLAIM))
    os.rename(store.path("retry", "M1", ".dat"), store.path("hold", "M1", ".dat"))
    assert actions.restore_stale_claims(NOW + 10**9, min_age=600) == ["M1"]
    assert files(store, "hold") == ["M1.dat", "M1.inf"] and files(store, "retry") == []


def test_a_fresh_claim_is_left_to_the_action_in_progress(store, actions):
    put(store, "retry", "M1", ["a@x.test"])
    os.rename(store.path("retry", "M1", ".inf"), store.path("retry", "M1", CLAIM))
    ctime = os.stat(store.path("retry", "M1", CLAIM)).st_ctime
    assert actions.restore_stale_claims(ctime + 1, min_age=600) == []
    assert files(store, "retry") == ["M1.dat", "M1.inf-claimed"]


def test_list_filters_by_domain_address_text_and_age(store, actions):
    put(store, "retry", "A1", ["one@x.test"], age=30)
    put(store, "retry", "A2", ["two@y.test"], age=7200, sender="boss@corp.test")
    put(store, "hold", "A3", ["three@x.test"], age=90)

    def ids(**kw):
        return [e.message_id for e in actions.entries(QueueFilter(**kw), NOW)]

    assert ids(domain="x.test") == ["A1"]
    assert ids(dirs=("retry", "hold"), domain="X.TEST") == ["A1", "A3"]
    assert ids(address="boss@corp.test") == ["A2"]
    assert ids(address="two@y.test") == ["A2"]
    assert ids(text="three", dirs=("hold",)) == ["A3"]
    assert ids(older_than_seconds=3600) == ["A2"]
    page, total = actions.page(QueueFilter(dirs=("retry", "hold")), NOW, offset=1, limit=1)
    assert total == 3 and len(page) == 1


def test_summary_counts_recipients_per_domain_with_their_oldest_age(store, actions):
    put(store, "retry", "B1", ["a@x.test", "b@x.test", "c@y.test"], age=120)
    put(store, "retry", "B2", ["d@x.test"], age=3 * 3600)
    put(store, "hold", "B3", ["e@z.test"])
    shapes = actions.summary(("retry", "working"), NOW)
    assert [(s.domain, s.recipients, s.messages) for s in shapes] == [
        ("x.test", 3, 2),
        ("y.test", 1, 1),
    ]
    x = shapes[0]
    assert x.oldest_seconds == 3 * 3600
    assert x.buckets[bucket_index(120)] == 2 and x.buckets[bucket_index(3 * 3600)] == 1


def test_shape_buckets_follow_qshape_and_the_last_one_is_open_ended():
    assert bucket_index(0) == 0 and bucket_index(4 * 60) == 0 and bucket_index(5 * 60) == 1
    assert bucket_index(10**9) == len(AGE_BUCKETS_MINUTES)
    env = Envelope("M", "s@a", ["x@D.test"], time_created=NOW - 30, time_finished=NOW - 5)
    env.log = ["2020/01/01 00:00:00: 451 try later"]
    [shape] = queue_shape([env], NOW)
    assert shape.domain == "d.test" and shape.last_note.endswith("451 try later")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1.5h", 5400)],
)
def test_ages_are_read_with_units(text, seconds):
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "2 hours", "-1h", "1y"])
def test_an_age_without_a_known_unit_is_refused(text):
    with pytest.raises(ValueError, match="not an age"):
        parse_age(text)


def test_ages_read_as_an_operator_says_them():
    assert [format_age(s) for s in (5, 61, 3600, 3660, 86400, 90000)] == [
        "5 s",
        "1 min",
        "1 h",
        "1 h 1 min",
        "1 d",
        "1 d 1 h",
    ]


def queue_command(store, *argv):
    import argparse

    from mailengine.queue.command import add_queue_arguments, run

    parser = argparse.ArgumentParser()
    add_queue_arguments(parser)
    return run(parser.parse_args(list(argv)), store.root)


def test_the_command_says_when_a_running_engine_sees_a_release(store, capsys):
    put(store, "hold", "M1@h", ["a@x.test"])
    assert queue_command(store, "release", "M1@h") == 0
    out = capsys.readouterr().out
    assert "released (hold/ -> retry/)" in out and "at its next queue check" in out


def test_the_command_points_to_the_web_admin_for_mail_held_in_memory(store, capsys):
    put(store, "working", "W1@h", ["a@x.test"])
    assert queue_command(store, "hold", "NOPE@h", "W1@h") == 1
    out = capsys.readouterr().out
    assert "NOPE@h: NOT done: not in the queue files (sent or removed?)" in out
    assert "W1@h: NOT done: being sent now" in out
    assert "the web admin's Queue page (in memory) reaches it" in out
    assert "next queue check" not in out
