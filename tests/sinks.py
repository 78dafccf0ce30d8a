"""Sink SMTP servers for tests: record sessions, commands and messages; answer as told.

Each sink runs on its own loopback address in one background asyncio thread
(shared by every sink of the test process), so tests can poll it with plain
blocking code while the engine runs as a subprocess.

    sink = SinkServer("127.0.1.1")            # port chosen by the system
    sink.rcpt_reply = lambda rcpt: (550, "5.1.1 no such user") if "bad" in rcpt else None
    ...
    sink.messages[0].rcpts, sink.max_concurrent, sink.commands("DATA")
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

Reply = tuple[int, str] | None  # None: the normal reply


@attrs.define
class Message:
    mail_from: str
    rcpts: list[str]
    data: bytes
    peer: str
    session: int
    time: float = attrs.field(factory=time.monotonic)


@attrs.define
class Session:
    number: int
    peer: str
    commands: list[str] = attrs.field(factory=list)
    tls: bool = False
    closed: bool = False
    started: float = attrs.field(factory=time.monotonic)
    port: int = 0  # the client's
    ended: float = 0.0  # when the sink saw it end (0: open)
    quit_at: float = 0.0  # when it read the client's QUIT (0: none)


class _Loop:
    """One event loop thread for every sink in the process."""

    _instance: _Loop | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    @classmethod
    def get(cls) -> _Loop:
        with cls._lock:
            if cls._instance is None:
                cls._instance = _Loop()
            return cls._instance

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


class SinkServer:
    """An SMTP sink; set the attributes below to change how it answers (read per command)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, name: str = "") -> None:
        self.host = host
        self.name = name or host
        self.greeting: Reply = None  # e.g. (421, "busy") to refuse sessions
        self.pipelining = True
        self.size_limit = 0  # advertised SIZE (0: none)
        self.tls_context: ssl.SSLContext | None = None  # offer STARTTLS with it
        self.ehlo_reply: Reply = None  # e.g. (502, "no") to force HELO
        self.mail_reply: Callable[[str], Reply] = lambda sender: None
        self.rcpt_reply: Callable[[str], Reply] = lambda rcpt: None
        self.data_reply: Callable[[Message], Reply] = lambda msg: None
        self.stall_on: str = ""  # a command (e.g. "DATA-END", "MAIL") never answered
        self.delay_seconds = 0.0  # before the greeting and every reply (a slow server)
        self.messages_per_session = (
            0  # then MAIL gets "421 too many messages", closed (0: no limit)
        )
        self.lock = threading.Lock()
        self.sessions: list[Session] = []
        self.messages: list[Message] = []
        self.concurrent = 0
        self.max_concurrent = 0
        self.bytes_received = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = _Loop.get()
        self._server = self._loop.run(
            asyncio.start_server(self._session, host, port, reuse_address=True, limit=1 << 26)
        )
        self.port = self._server.sockets[0].getsockname()[1]

    # -- views -------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def commands(self, verb: str = "") -> list[str]:
        with self.lock:
            return [
                c
                for s in self.sessions
                for c in s.commands
                if not verb or c.upper().startswith(verb.upper())
            ]

    def peers(self) -> set[str]:
        """The source addresses sessions came from."""
        with self.lock:
            return {s.peer for s in self.sessions}

    def session_starts(self) -> list[float]:
        with self.lock:
            return [s.started for s in self.sessions]

    def received(self) -> list[Message]:
        with self.lock:
            return list(self.messages)

    def rcpts_received(self) -> list[str]:
        with self.lock:
            return [r for m in self.messages for r in m.rcpts]

    def reset(self) -> None:
        with self.lock:
            self.sessions.clear()
            self.messages.clear()
            self.max_concurrent = self.concurrent

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            writers = list(self._writers)
            for w in writers:
                w.close()
            # close() only schedules the socket's close: let it run before the loop stops,
            # or the socket is left to the garbage collector (a ResourceWarning in a later
            # test, which filterwarnings = error turns into that test's failure).
            waits = [w.wait_closed() for w in writers]
            await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 5)
            await self._server.wait_closed()

        try:
            self._loop.run(stop())
        except (TimeoutError, RuntimeError):
            pass

    def __enter__(self) -> SinkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the protocol ------------------------------------------------------

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer, port = writer.get_extra_info("peername")[:2]
        with self.lock:
            session = Session(len(self.sessions) + 1, peer, port=port)
            self.sessions.append(session)
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        self._writers.add(writer)
        try:
            await self._converse(session, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            with self.lock:
                self.concurrent -= 1
                session.closed = True
                session.ended = time.monotonic()
            try:
                writer.close()
            except Exception:
                pass

    async def _stall(self) -> None:
        await asyncio.sleep(3600)

    async def _converse(
        self, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        def send(code: int, text: str) -> None:
            writer.write(f"{code} {text}\r\n".encode())

        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        greeting = self.greeting
        if greeting is not None:
            send(*greeting)
            await writer.drain()
            if greeting[0] >= 400:
                await reader.read(1000)  # let the client QUIT
                return
        send(220, f"{self.name} ESMTP sink")
        sender, rcpts = "", []
        has_sender = False  # a MAIL was accepted (RFC 5321 §3.3: RCPT needs one)
        taken = 0  # messages this session
        while True:
            line = await reader.readline()
            if not line:
                return
            command = line.rstrip(b"\r\n").decode("utf-8", "replace")
            verb = command.split(" ", 1)[0].upper()
            with self.lock:
                session.commands.append(command)
                if verb == "QUIT":
                    session.quit_at = time.monotonic()
            if self.stall_on and verb == self.stall_on:
                await self._stall()
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)
            if verb == "EHLO":
                if self.ehlo_reply is not None:
                    send(*self.ehlo_reply)
                else:
                    ext = ["8BITMIME"]
                    if self.pipelining:
                        ext.append("PIPELINING")
                    if self.size_limit:
                        ext.append(f"SIZE {self.size_limit}")
                    if self.tls_context is not None and not session.tls:
                        ext.append("STARTTLS")
                    lines = [f"{self.name} hello", *ext]
                    for ln in lines[:-1]:
                        writer.write(f"250-{ln}\r\n".encode())
                    send(250, lines[-1])
            elif verb == "HELO":
                send(250, f"{self.name} hello")
            elif verb == "STARTTLS" and self.tls_context is not None:
                send(220, "go ahead")
                await writer.drain()
                await writer.start_tls(self.tls_context)
                session.tls = True
            elif (
                verb == "MAIL" and self.messages_per_session and taken >= self.messages_per_session
            ):
                send(421, "4.7.0 too many messages in this session, closing")
                await writer.drain()
                return
            elif verb == "MAIL":
                reply = self.mail_reply(_address(command))
                if reply is None:
                    sender, rcpts, has_sender = _address(command), [], True
                    send(250, "2.1.0 sender ok")
                else:
                    send(*reply)
            elif verb == "RCPT" and not has_sender:
                send(503, "5.5.1 MAIL first")
            elif verb == "RCPT":
                rcpt = _address(command)
                reply = self.rcpt_reply(rcpt)
                if reply is None:
                    rcpts.append(rcpt)
                    send(250, "2.1.5 recipient ok")
                else:
                    send(*reply)
            elif verb == "DATA":
                if not rcpts:
                    send(554, "5.5.1 no valid recipients")
                    continue
                send(354, "go ahead")
                await writer.drain()
                data = await _read_data(reader)
                body = b"".join(ln[1:] if ln.startswith(b".") else ln for ln in data)
                data = b"".join(data)
                if self.stall_on == "DATA-END":
                    await self._stall()
                if self.delay_seconds:
                    await asyncio.sleep(self.delay_seconds)
                message = Message(sender, list(rcpts), body, session.peer, session.number)
                reply = self.data_reply(message)
                if reply is None:
                    with self.lock:
                        self.messages.append(message)
                        self.bytes_received += len(data)
                    taken += 1
                    send(250, "2.0.0 queued")
                else:
                    send(*reply)
                sender, rcpts, has_sender = "", [], False
            elif verb == "RSET":
                sender, rcpts, has_sender = "", [], False
                send(250, "2.0.0 reset")
            elif verb == "NOOP":
                send(250, "2.0.0 ok")
            elif verb == "QUIT":
                send(221, "2.0.0 bye")
                await writer.drain()
                return
            else:
                send(502, "5.5.2 unknown command")
            await writer.drain()


async def _read_data(reader: asyncio.StreamReader) -> list[bytes]:
    """Lines up to the lone "." (still dot-stuffed). A connection closed before the "."
    is no message (a real server discards it): ConnectionError."""
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed in the middle of DATA")
        if line == b".\r\n":
            return lines
        lines.append(line)


def _address(command: str) -> str:
    start, end = command.find("<"), command.find(">")
    return command[start + 1 : end] if start >= 0 and end > start else ""


def self_signed_context(tmp_dir: str, name: str = "mx.tls.test") -> ssl.SSLContext:
    """A server TLS context with a throwaway self-signed certificate for ``name``."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = f"{tmp_dir}/{name}.crt"
    key_path = f"{tmp_dir}/{name}.key"
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


def route(domain: str, sink: SinkServer, host: str | None = None) -> str:
    """A ``[dns] bypass`` line sending ``domain``'s mail to ``sink``."""
    return f"{domain},{host or 'mx.' + domain},MX,{sink.host}:{sink.port}"
