"""The web admin in memory: a real Engine on a tmp root, a Clock, and a StubTreq 'browser'."""

from __future__ import annotations

import functools
import json
import os
import re
from typing import Any

from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.python.failure import Failure

from mailengine.config.loader import load_config
from mailengine.config.passwords import hash_password
from mailengine.config.template import render_template
from mailengine.engine import Engine
from mailengine.observe.counters import Counters
from mailengine.queue.commit import GroupCommit
from mailengine.queue.envelope import Envelope
from mailengine.queue.ids import MessageIdFactory
from mailengine.queue.live import LiveQueue
from mailengine.queue.store import QueueStore
from mailengine.web.app import make_resource
from mailengine.web.running import Running

START = 1_700_000_000.0
PASSWORD = "s3cret-pass"


@functools.cache
def hashed_password() -> str:
    return hash_password(PASSWORD)  # scrypt is slow on purpose: once per test run


def run_inline(fn: Any) -> defer.Deferred:
    return defer.maybeDeferred(fn)


class FakeService:
    """Stands in for EngineService: records graceful-stop requests."""

    def __init__(self) -> None:
        self.stops = 0

    def request_stop(self) -> None:
        self.stops += 1


def make_engine(root: str, *, password: bool = True) -> tuple[Engine, task.Clock]:
    config_path = os.path.join(root, "config", "mailengine.toml")
    os.makedirs(os.path.dirname(config_path), exist_ok=True)
    with open(config_path, "w", encoding="utf-8") as fh:
        fh.write(render_template())
    if password:
        with open(os.path.join(root, "config", "password.txt"), "w", encoding="utf-8") as fh:
            fh.write(f"admin:{hashed_password()}\n")
    config = load_config(config_path)
    clock = task.Clock()
    clock.advance(START)
    store = QueueStore(os.path.join(root, "mailq"))
    store.ensure_dirs()
    counters = Counters(started=clock.seconds())
    committer = GroupCommit(run_inline, store.sync_all)
    queue = LiveQueue(store, config, clock, committer, counters)
    engine = Engine(
        root=root,
        config=config,
        reactor=clock,
        store=store,
        queue=queue,
        counters=counters,
        committer=committer,
        ids=MessageIdFactory(1, START, "mx.test"),
        hostname="mx.test",
    )
    return engine, clock


def queue_file(
    engine: Engine, dirname: str, message_id: str, rcpts: list[str], *, age: float = 60.0
) -> Envelope:
    """Write a message into mailq/DIR/ as another program would."""
    now = engine.reactor.seconds()
    envelope = Envelope(
        message_id=message_id,
        mail_from="sender@example.org",
        rcpt_to_send=rcpts,
        time_created=now - age,
        retry_time=now + 3600,
    )
    engine.store.write_message(
        dirname, envelope, b"Subject: hello " + message_id.encode() + b"\r\n\r\nbody\r\n"
    )
    return envelope


class Response:
    def __init__(self, code: int, headers: Any, body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body
        self.text = body.decode("utf-8", "replace")

    def header(self, name: str) -> str:
        values = self.headers.getRawHeaders(name) or [b""]
        value = values[0]
        return value.decode() if isinstance(value, bytes) else str(value)

    def json(self) -> Any:
        return json.loads(self.body)


class Browser:
    """A StubTreq client with a cookie jar that settles every answer (the clock included)."""

    def __init__(self, engine: Engine, clock: task.Clock) -> None:
        self.engine = engine
        self.clock = clock
        # The running parts the service hands the web admin: tests put fakes in.
        self.running = Running(service=FakeService())
        self.resource = make_resource(
            engine, clock=clock, run_blocking=run_inline, running=self.running
        )
        self.stub = StubTreq(self.resource)
        self.csrf = ""

    def _settle(self, d: defer.Deferred) -> Any:
        results: list[Any] = []
        d.addBoth(results.append)
        for _ in range(200):
            self.stub.flush()
            if results:
                break
            calls = [c.getTime() for c in self.clock.getDelayedCalls()]
            if calls:
                self.clock.advance(max(0.0, min(calls) - self.clock.seconds()))
        assert results, "the request never finished"
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]

    def request(self, method: str, path: str, **kwargs: Any) -> Response:
        kwargs.setdefault("allow_redirects", False)
        r = self._settle(getattr(self.stub, method)("http://admin.test" + path, **kwargs))
        body = self._settle(self.stub.content(r))
        response = Response(r.code, r.headers, body)
        m = re.search(r'<meta name="csrf-token" content="([^"]+)"', response.text)
        if m:
            self.csrf = m.group(1)
        return response

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("get", path, **kwargs)

    def post(self, path: str, data: dict[str, str] | None = None, **kwargs: Any) -> Response:
        return self.request("post", path, data=data or {}, **kwargs)

    def post_form(self, path: str, data: dict[str, str] | None = None, **kw: Any) -> Response:
        """A POST as the pages send it: with this session's CSRF token."""
        return self.post(path, {"csrf": self.csrf, **(data or {})}, **kw)

    def login(self, user: str = "admin", password: str = PASSWORD) -> Response:
        page = self.get("/gui/admin/login")
        token = re.search(r'name="login_token" value="([^"]+)"', page.text)
        assert token, page.text
        answer = self.post(
            "/gui/admin/login",
            {"user": user, "password": password, "login_token": token.group(1)},
        )
        if answer.code == 303:
            self.get("/gui/admin")  # picks up the CSRF token
        return answer
