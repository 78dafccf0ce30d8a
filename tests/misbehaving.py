"""A receiving SMTP server that misbehaves on purpose, for the outbound client's tests.

``Receiver`` is the server as a pure object (bytes in, segments out) with a list
of ``Fault``s: wrong, extra, missing, split, late replies; a close or a stall at
any step; bare LF line ends; over-long and endless lines; a garbage greeting; 421 anywhere;
452 to some RCPTs; STARTTLS cut after its 220. It records what it really took
(``deliveries``), so tests can check "nothing counted sent without the proof".

- in memory: ``converse`` drives the pure ``Session`` against it the way
  client.py does (hypothesis uses this);
- on loopback: ``MisbehavingServer`` serves it to the real engine (asyncio, in
  the sinks' thread).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import attrs
from hypothesis import strategies as st

from tests.sinks import _Loop

CLOSE = "close"  # a segment that closes the connection
STALL = "stall"  # a segment after which the server says and reads nothing more

STEPS = ("CONNECT", "EHLO", "HELO", "STARTTLS", "MAIL", "RCPT", "DATA", "DOT", "RSET", "QUIT")
KINDS = (
    *("wrong", "extra", "missing", "close", "close-after", "stall"),
    *("421", "452", "garbage", "endless"),
)


@attrs.frozen
class Fault:
    """At the ``nth`` time (1: first) the server reaches ``step``, do ``kind``."""

    kind: str
    step: str
    nth: int = 1
    code: int = 250  # for "wrong"


CODES = [220, 221, 250, 251, 354, 421, 450, 452, 500, 550, 554, 999]


def _faults() -> st.SearchStrategy[Fault]:
    return st.builds(
        Fault,
        kind=st.sampled_from(KINDS),
        step=st.sampled_from(STEPS),
        nth=st.integers(1, 3),
        code=st.sampled_from(CODES),
    )


faults = _faults()  # hypothesis: one fault anywhere


@attrs.define
class Delivery:
    mail_from: str
    rcpts: list[str]
    body: bytes  # as on the wire, dot-stuffed, without the final dot
    acknowledged: bool  # the reply to its dot was a 2xx the client could read


@attrs.define
class Receiver:
    """One connection's server side."""

    faults: Sequence[Fault] = ()
    pipelining: bool = True
    offers_starttls: bool = False
    split: bool = False  # every reply in two segments, the cut inside its first line
    bare_lf: bool = False
    long_lines: bool = False
    name: str = "mx.bad.test"
    deliveries: list[Delivery] = attrs.field(factory=list)
    closed: bool = False
    _buffer: bytes = b""
    _in_data: bool = False
    _data: list[bytes] = attrs.field(factory=list)
    _mail_from: str = ""
    _rcpts: list[str] = attrs.field(factory=list)
    _seen: dict[str, int] = attrs.field(factory=dict)

    # -- the conversation ------------------------------------------------------

    def connected(self) -> list[bytes | str]:
        return self._step("CONNECT", [(220, f"{self.name} ESMTP")])

    def received(self, data: bytes) -> list[bytes | str]:
        """Bytes from the client; returns what the server sends back."""
        out: list[bytes | str] = []
        self._buffer += data
        while not self.closed and b"\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition(b"\n")
            out += self._line(line.rstrip(b"\r"))
            if out and out[-1] in (CLOSE, STALL):
                self.closed = True
        return out

    def _line(self, line: bytes) -> list[bytes | str]:
        if self._in_data:
            if line != b".":
                self._data.append(line + b"\r\n")
                return []
            self._in_data = False
            delivery = Delivery(self._mail_from, list(self._rcpts), b"".join(self._data), False)
            self._data, self._rcpts = [], []
            self.deliveries.append(delivery)  # taken; acknowledged if the 250 goes out
            out = self._step("DOT", [(250, "2.0.0 queued")])
            delivery.acknowledged = _acknowledges(out)
            return out
        text = line.decode("utf-8", "replace")
        verb = text.split(" ", 1)[0].upper()
        if verb == "EHLO":
            ext = [f"{self.name} hello", "8BITMIME", "SIZE 100000"]
            ext += ["PIPELINING"] if self.pipelining else []
            ext += ["STARTTLS"] if self.offers_starttls else []
            return self._step("EHLO", [(250, e) for e in ext])
        if verb == "HELO":
            return self._step("HELO", [(250, f"{self.name} hello")])
        if verb == "STARTTLS":
            return self._step("STARTTLS", [(220, "2.0.0 Ready to start TLS")])
        if verb == "MAIL":
            self._mail_from, self._rcpts = _address(text), []
            return self._step("MAIL", [(250, "2.1.0 ok")])
        if verb == "RCPT":
            bad = "bad" in text  # a recipient the server cannot take now
            out = self._step("RCPT", [(452, "4.2.2 mailbox full") if bad else (250, "2.1.5 ok")])
            if _acknowledges(out):  # a 2xx is a promise, whatever the server meant
                self._rcpts.append(_address(text))
            return out
        if verb == "DATA":
            if not self._rcpts:
                return self._step("DATA", [(554, "5.5.1 no valid recipients")])
            out = self._step("DATA", [(354, "go ahead")])
            self._in_data = any(isinstance(s, bytes) and s.startswith(b"354") for s in out)
            return out
        if verb == "RSET":
            self._rcpts = []
            return self._step("RSET", [(250, "2.0.0 reset")])
        if verb == "QUIT":
            return [*self._step("QUIT", [(221, "bye")]), CLOSE]
        return self._segments([(502, "5.5.2 what?")])

    def _step(self, step: str, reply: list[tuple[int, str]]) -> list[bytes | str]:
        n = self._seen[step] = self._seen.get(step, 0) + 1
        fault = next((f for f in self.faults if f.step == step and f.nth == n), None)
        kind = fault.kind if fault is not None else ""
        if kind == "wrong" and fault is not None:
            reply = [(fault.code, "out of step")]
        elif kind == "452" and step == "RCPT":
            reply = [(452, "4.5.3 too many recipients")]
        elif kind == "421":
            return [*self._segments([(421, "4.3.2 closing")]), CLOSE]
        elif kind == "garbage":
            return [b"HTTP/1.1 400 Bad Request\r\n"]
        elif kind == "endless":  # a line that never ends
            return [b"2" * 70000, STALL]
        elif kind == "missing":
            return []
        elif kind == "close":
            return [CLOSE]
        elif kind == "stall":
            return [STALL]
        out = self._segments(reply, extra=kind == "extra")
        if kind == "close-after":
            out.append(CLOSE)
        return out

    def _segments(self, reply: list[tuple[int, str]], extra: bool = False) -> list[bytes | str]:
        end = b"\n" if self.bare_lf else b"\r\n"
        lines = []
        for i, (code, text) in enumerate(reply):
            if self.long_lines:
                text += " " + "x" * 3000
            sep = " " if i == len(reply) - 1 else "-"
            lines.append(f"{code}{sep}{text}".encode() + end)
        if extra:  # written together with the real reply, as a broken server would
            lines.append(b"250 2.0.0 one reply too many" + end)
        data = b"".join(lines)
        if self.split and len(data) > 3:
            # Cut inside the first line: a reply (multiline or not) spans two segments,
            # and what the server wrote together after it still arrives together.
            cut = len(lines[0]) // 2
            return [data[:cut], data[cut:]]
        return [data]


def _acknowledges(out: list[bytes | str]) -> bool:
    segments = [s for s in out if isinstance(s, bytes)]
    return bool(segments) and b"".join(segments)[:1] == b"2"


def _address(command: str) -> str:
    start, end = command.find("<"), command.find(">")
    return command[start + 1 : end] if start >= 0 and end > start else ""


# -- in memory: the pure Session against a Receiver ---------------------------------


@attrs.define
class Exchange:
    """What one in-memory connection did: each job's results, the receiver's view."""

    results: dict[int, list] = attrs.field(factory=dict)
    ending: str = ""
    error: str = ""
    tls_cut: bool = False  # the connection closed during the TLS setup


def converse(receiver: Receiver, jobs: Sequence[tuple[list[str], bytes]], **session_args):
    """Run one connection: the jobs one after another, as client.py drives the Session
    (each server segment is one read; a body is "written" at the end of its read)."""
    from mailengine.delivery import session as s
    from mailengine.delivery.transaction import Transaction

    session = s.Session(b"me.test", **session_args)
    exchange = Exchange()
    queue: list[bytes | str] = list(receiver.connected())
    todo = list(enumerate(jobs))
    current: list = []  # [index, txn, body]
    buffer = b""

    def start_next() -> None:
        if not todo:
            receiver.received(session.quit())
            return
        index, (rcpts, body) = todo.pop(0)
        txn = Transaction("s@x.test", rcpts, mail_params=session.mail_params(len(body)))
        current[:] = [index, txn, body]
        queue.extend(receiver.received(session.start(txn)))

    def finish(failure: str = "") -> None:
        if current:
            index, txn, _ = current
            exchange.results[index] = txn.results(failure=failure)
            current.clear()

    while queue and session.state not in (s.CLOSED, s.QUIT_SENT):
        segment = queue.pop(0)
        if segment in (CLOSE, STALL):
            exchange.tls_cut = session.is_tls_pending
            session.connection_lost("connection lost" if segment == CLOSE else "timeout")
            break
        assert isinstance(segment, bytes)
        session.new_read()
        buffer += segment
        body_due = False
        while b"\n" in buffer and session.state != s.CLOSED:
            line, _, buffer = buffer.partition(b"\n")
            action = session.receive_line(line.rstrip(b"\r"))
            if action == s.WRITE:
                queue.extend(receiver.received(session.out))
            elif action == s.START_TLS:
                queue.extend(receiver.received(session.tls_started()))
            elif action == s.SESSION_READY:
                start_next()
            elif action == s.BODY:
                queue.extend(receiver.received(current[2] + b".\r\n"))
                body_due = True
            elif action == s.DONE:
                finish()
                start_next()
        if body_due:
            session.body_written()
        if not queue and session.state not in (s.CLOSED, s.QUIT_SENT):
            session.connection_lost("timeout waiting for a reply")  # nothing more comes
    if session.state != s.QUIT_SENT:
        session.connection_lost("connection lost")
    finish(session.error)
    exchange.ending, exchange.error = session.ending, session.error
    return exchange


# -- on loopback: a Receiver per connection, served to the real engine ---------------


class MisbehavingServer:
    """Serves a fresh ``Receiver(**options)`` to every connection on ``host`` (only the
    first ``faulty_connections`` get its faults when that is given)."""

    def __init__(self, host: str, faulty_connections: int | None = None, **options: object):
        self.host = host
        self.options = options
        self.faulty_connections = faulty_connections
        self.lock = threading.Lock()
        self.receivers: list[Receiver] = []
        self._loop = _Loop.get()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server = self._loop.run(asyncio.start_server(self._serve, host, 0))
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def connections(self) -> int:
        with self.lock:
            return len(self.receivers)

    def deliveries(self) -> list[Delivery]:
        with self.lock:
            return [d for r in self.receivers for d in r.deliveries]

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            for w in list(self._writers):
                w.close()

        try:
            self._loop.run(stop())
        except (TimeoutError, RuntimeError):
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self.lock:
            options = dict(self.options)
            if (
                self.faulty_connections is not None
                and len(self.receivers) >= self.faulty_connections
            ):
                options.pop("faults", None)
            receiver = Receiver(**options)  # type: ignore[arg-type]
            self.receivers.append(receiver)
        self._writers.add(writer)
        try:
            out = receiver.connected()
            while True:
                for segment in out:
                    if segment == CLOSE:
                        return
                    if segment == STALL:
                        await asyncio.sleep(3600)
                        return
                    assert isinstance(segment, bytes)
                    writer.write(segment)
                    await writer.drain()
                    if receiver.split:
                        await asyncio.sleep(0.01)  # a late second half: its own segment
                data = await reader.read(65536)
                if not data:
                    return
                with self.lock:
                    out = receiver.received(data)
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
