"""The event log's files and its webhook with a fake clock and a fake endpoint."""

import json
import os

from twisted.internet import defer, task

from mailengine.observe.eventlog import EventLog, append_lines, prune_event_files
from mailengine.observe.webhook import MAX_BACKOFF_SECONDS, EventWebhook, read_batch


class FakeResponse:
    def __init__(self, code):
        self.code = code

    def content(self):
        return defer.succeed(b"")


class FakeEndpoint:
    """Records every POST; answers with ``code`` (or fails, like a refused connection)."""

    def __init__(self):
        self.code = 200
        self.bodies = []

    def post(self, url, data, headers, timeout):
        self.bodies.append(json.loads(data))
        if self.code is None:
            return defer.fail(ConnectionRefusedError("refused"))
        return defer.succeed(FakeResponse(self.code))


def hook(tmp_path, endpoint, clock):
    webhook = EventWebhook(str(tmp_path), lambda: "http://hook.test/", clock, post=endpoint.post)
    webhook.startService()
    return webhook


def test_old_event_files_are_pruned_like_the_daily_logs(tmp_path):
    for day in ("2026-11-20", "2026-11-24", "2026-11-25", "2026-12-04"):
        append_lines(str(tmp_path), day, "{}\n")
    (tmp_path / "mailengine-2026-11-20.log").write_text("kept: not an event file")
    removed = prune_event_files(str(tmp_path), "2026-12-04", 10)
    assert removed == ["events-2026-11-20.jsonl", "events-2026-11-24.jsonl"]
    assert sorted(os.listdir(tmp_path)) == [
        "events-2026-11-25.jsonl",
        "events-2026-12-04.jsonl",
        "mailengine-2026-11-20.log",
    ]


def test_a_half_written_last_line_is_never_sent():
    import tempfile

    with tempfile.NamedTemporaryFile("wb", delete=False) as fh:
        fh.write(b'{"a":1}\n{"b":')
    assert read_batch(fh.name, 0) == b'{"a":1}\n'
    assert read_batch(fh.name, 8) == b""
    os.unlink(fh.name)


def test_failures_back_off_doubling_to_a_cap_and_nothing_is_skipped(tmp_path):
    clock = task.Clock()
    endpoint = FakeEndpoint()
    endpoint.code = 503
    log = EventLog(str(tmp_path), retention_days=lambda: 10, is_enabled=lambda: True)
    webhook = hook(tmp_path, endpoint, clock)
    log.flushed.append(webhook.poke)
    log.emit("received", 0, recipient="a@x.test")
    log.flush()
    assert len(endpoint.bodies) == 1 and webhook.backoff == 1.0
    waits = []
    for _ in range(8):
        waits.append(webhook.backoff)
        clock.advance(webhook.backoff)
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60] and MAX_BACKOFF_SECONDS == 60
    log.emit("delivered", 1, recipient="a@x.test")
    log.flush()  # a flush while backing off sends nothing new
    assert len(endpoint.bodies) == 9
    endpoint.code = 200
    clock.advance(60)
    assert [e["event"] for e in endpoint.bodies[-1]] == ["received", "delivered"]
    assert webhook.backoff == 0
    cursor = json.loads((tmp_path / "events-webhook.cursor").read_text())
    assert cursor["offset"] == os.path.getsize(tmp_path / cursor["file"])
    webhook.stopService()


def test_a_restart_continues_from_the_cursor_and_moves_on_to_the_next_day(tmp_path):
    clock = task.Clock()
    endpoint = FakeEndpoint()
    endpoint.code = None  # down: connection refused
    append_lines(str(tmp_path), "2026-12-03", '{"n":1}\n')
    webhook = hook(tmp_path, endpoint, clock)  # first use: starts at the end of the files
    append_lines(str(tmp_path), "2026-12-03", '{"n":2}\n')
    append_lines(str(tmp_path), "2026-12-04", '{"n":3}\n')
    webhook.poke()  # refused: nothing acknowledged before the stop
    webhook.stopService()
    endpoint.code = 200
    again = hook(tmp_path, endpoint, clock)
    assert [e["n"] for body in endpoint.bodies[1:] for e in body] == [2, 3]
    again.stopService()
