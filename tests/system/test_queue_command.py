"""`mailengine queue` against a running engine: hold/release, delete by domain, summary."""

import json
import os
import re
import urllib.request

import pytest

from mailengine.config.passwords import set_password
from tests.harness import run_cli, wait_for
from tests.sinks import route

pytestmark = pytest.mark.system
TOKEN = "queue-test-token-0123456789"


@pytest.fixture
def sink(sinks):
    return sinks("127.0.2.1")


@pytest.fixture
def engine(engine_factory, sink):
    # Sending starts paused (mail waits in retry/); x.test and y.test go to the sink.
    proc = engine_factory(
        {
            "queue": {"check_interval_seconds": 1},
            "logs": {"debug_program": True},
            "web": {"api_token": TOKEN},
            "smtp_out": {"paused": True},
            "dns": {"bypass": [route("x.test", sink), route("y.test", sink)]},
        },
        start=False,
    )
    set_password(os.path.join(proc.root, "config", "password.txt"), "admin", "pw")
    return proc.start()


def api(engine, path, method="GET"):
    request = urllib.request.Request(
        f"http://127.0.0.1:{engine.web_port}{path}",
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def indexed(engine):
    """How many messages the running engine has in its queue index."""
    return api(engine, "/api/status")["queue"]["indexed"]


def send(engine, *recipients):
    result = run_cli(
        "send",
        "--root",
        engine.root,
        "--from",
        "list@example.org",
        *recipients,
        input=b"Subject: test\n\nbody\n",
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


def queue(engine, *args):
    result = run_cli("queue", *args, "--root", engine.root)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def inf_files(engine, dirname):
    return sorted(
        n[:-4] for n in os.listdir(os.path.join(engine.mailq, dirname)) if n.endswith(".inf")
    )


def test_a_held_message_is_never_sent_until_it_is_released(engine, sink):
    message_id = send(engine, "someone@x.test")
    wait_for(lambda: indexed(engine) == 1, what="the engine to index the message")
    code, out, err = queue(engine, "hold", message_id)
    assert code == 0, err
    assert "held (retry/ -> hold/)" in out
    assert inf_files(engine, "hold") == [message_id] and inf_files(engine, "retry") == []
    wait_for(lambda: indexed(engine) == 0, what="the engine to forget the held message")
    checks = engine.console().count("retry scan:")
    wait_for(lambda: engine.console().count("retry scan:") >= checks + 2, what="two more checks")
    assert indexed(engine) == 0 and inf_files(engine, "hold") == [message_id]
    api(engine, "/api/control/resume", method="POST")  # sending on: the held one stays
    other = send(engine, "other@x.test")
    wait_for(lambda: len(sink.received()) == 1, what="the other message to be sent")
    checks = engine.console().count("retry scan:")
    wait_for(lambda: engine.console().count("retry scan:") >= checks + 2, what="two more checks")
    assert [m.rcpts for m in sink.received()] == [["other@x.test"]]
    assert inf_files(engine, "hold") == [message_id] and other not in inf_files(engine, "retry")
    code, out, err = queue(engine, "release", message_id)
    assert code == 0 and "released (hold/ -> retry/)" in out, err
    wait_for(lambda: len(sink.received()) == 2, what="the released message to be sent")
    assert sink.received()[1].rcpts == ["someone@x.test"]
    assert inf_files(engine, "hold") == [] and inf_files(engine, "retry") == []


def test_delete_by_domain_removes_exactly_the_mail_to_that_domain(engine):
    only_x = [send(engine, f"u{i}@x.test") for i in range(3)]
    mixed = send(engine, "v@x.test", "w@y.test")
    only_y = send(engine, "z@y.test")
    wait_for(lambda: indexed(engine) == 5, what="the engine to index five messages")
    code, out, err = queue(engine, "delete", "--domain", "x.test")
    assert code == 1 and "add --yes" in err  # not without saying so
    assert len(inf_files(engine, "retry")) == 5
    code, out, err = queue(engine, "delete", "--domain", "x.test", "--yes")
    assert code == 0, err
    assert "4 of 4 done" in out
    assert inf_files(engine, "retry") == sorted([mixed, only_y])
    for message_id in only_x:
        assert not os.path.exists(os.path.join(engine.mailq, "retry", message_id + ".dat"))
    code, out, _ = queue(engine, "show", mixed)
    assert "rcpttosend=w@y.test\n" in out
    wait_for(lambda: indexed(engine) == 2, what="the engine to drop the deleted messages")
    left = api(engine, "/api/queue")["messages"]
    assert sorted(m["id"] for m in left) == sorted([mixed, only_y])
    assert {tuple(m["rcpt_to_send"]) for m in left} == {("w@y.test",), ("z@y.test",)}


def test_summary_matches_the_queues_contents(engine):
    send(engine, "a@big.test", "b@big.test", "c@big.test", "d@small.test")
    send(engine, "e@big.test")
    send(engine, "f@small.test", "g@other.test")
    code, out, err = queue(engine, "summary")
    assert code == 0, err
    rows = {}
    for line in out.splitlines()[1:]:
        name, recipients, messages, *_ = re.split(r"\s+", line)
        rows[name] = (int(recipients), int(messages))
    assert rows == {
        "big.test": (4, 2),
        "small.test": (2, 2),
        "other.test": (1, 1),
        "TOTAL": (7, 5),
    }
    # The web admin's summary (the same code) agrees, from the running engine.
    domains = api(engine, "/api/queue/summary")["domains"]
    assert {d["domain"]: (d["recipients"], d["messages"]) for d in domains} == {
        k: v for k, v in rows.items() if k != "TOTAL"
    }


def test_summary_shows_the_running_engines_destination_states(engine):
    api(engine, "/api/destinations/x.test/suspend", "POST")
    send(engine, "a@x.test", "b@y.test")

    def rows():
        code, out, err = queue(engine, "summary")
        assert code == 0, err
        lines = out.splitlines()
        if not lines[0].endswith("STATE"):
            return None  # the engine's first mailq/destinations.json is not written yet
        return {line.split()[0]: line for line in lines[1:]}

    shown = wait_for(lambda: (r := rows()) and "suspended until" in r.get("x.test", "") and r)
    assert shown["x.test"].endswith(": operator")  # who suspended it
    assert shown["y.test"].endswith("  sending")
    assert engine.stop() in (0, -15, 143)  # twistd's SIGTERM exit, after its stop
    code, out, err = queue(engine, "summary")
    assert code == 0 and not out.splitlines()[0].endswith("STATE")
    assert "no running engine wrote" in err and "destinations.json" in err


def test_path_tricks_and_unknown_ids_are_refused_and_change_nothing(engine):
    message_id = send(engine, "a@x.test")
    code, _, err = queue(engine, "delete", "../../config/password")
    assert code == 1
    code, _, err = queue(engine, "show", "../config/mailengine.toml")
    assert code == 2 and "not a message id" in err
    code, out, _ = queue(engine, "delete", "P1T2C3@nowhere")
    assert code == 1 and "not in the queue" in out
    assert inf_files(engine, "retry") == [message_id]
    assert os.path.exists(os.path.join(engine.root, "config", "password.txt"))
