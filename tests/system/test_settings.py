"""Every setting changes what the real engine does (manual §6).

Settings the schema marks live are changed here through the JSON API
(``PUT /api/settings/SECTION/KEY`` with ``[web] api_token``) while the engine
runs, so each test proves the setting is read at use time as well as that it
changes behaviour; restart-only settings are given in the file. Settings that
other test modules already prove are listed in ``tests/unit/test_settings_manual.py``.
"""

from __future__ import annotations

import base64
import email
import http.client
import json
import os
import smtplib
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from mailengine.config.passwords import set_password
from mailengine.queue.inf import parse_inf
from tests.harness import port_open, read_text, undeliverable_addresses, wait_for
from tests.sinks import SinkServer, route

pytestmark = pytest.mark.system

TOKEN = "settings-test-token"
MESSAGE = b"Subject: settings\r\n\r\nhello\r\n"
STRANGER = "127.0.0.2"  # not in the default relay_ips (127.0.0.1)


# -- helpers ------------------------------------------------------------------


def start_engine(
    engine_factory: Any,
    settings: dict[str, dict[str, Any]] | None = None,
    *,
    before_start: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> Any:
    """An engine whose JSON API takes ``TOKEN`` (the API needs a password to be set)."""
    merged: dict[str, dict[str, Any]] = {"web": {"api_token": TOKEN}}
    for section, values in (settings or {}).items():
        merged.setdefault(section, {}).update(values)
    engine = engine_factory(merged, start=False, **kwargs)
    set_password(os.path.join(engine.root, "config", "password.txt"), "admin", "pw")
    if before_start is not None:
        before_start(engine.root)
    return engine.start()


def api(
    engine: Any,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str = TOKEN,
    source: str = "127.0.0.1",
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(
        "127.0.0.1", engine.web_port, timeout=10, source_address=(source, 0)
    )
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, payload, headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def set_live(engine: Any, section: str, key: str, value: Any, source: str = "127.0.0.1") -> None:
    """Change one setting through the JSON API; the schema must call it live."""
    status, reply = api(
        engine, "PUT", f"/api/settings/{section}/{key}", {"value": value}, source=source
    )
    assert status == 200, reply
    assert reply["applies"] == "now", f"[{section}] {key} is not marked live"


def smtp(engine: Any, source: str = "127.0.0.1", timeout: float = 10) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=timeout, source_address=(source, 0))


def send(
    engine: Any,
    rcpts: list[str],
    n: int = 1,
    sender: str = "sender@src.test",
    body: bytes = b"hello\r\n",
) -> None:
    with smtp(engine, timeout=30) as client:
        for i in range(n):
            client.sendmail(sender, rcpts, f"Subject: m{i}\r\n\r\n".encode() + body)


def infs(engine: Any, dirname: str) -> list[dict[str, str]]:
    path = os.path.join(engine.mailq, dirname)
    out = []
    for name in sorted(os.listdir(path)):
        if name.endswith(".inf"):
            with open(os.path.join(path, name), encoding="utf-8") as fh:
                out.append(parse_inf(fh.read()))
    return out


def stays(predicate: Callable[[], Any], seconds: float, what: str) -> None:
    """Watch ``predicate`` hold for ``seconds`` (an observation window, not a wait)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"no longer true: {what}"
        time.sleep(0.05)


def connect_from(engine: Any, source: str) -> tuple[socket.socket, bytes]:
    """A raw connection from ``source`` and its first reply line (220 or 421)."""
    sock = socket.create_connection(("127.0.0.1", engine.smtp_port), 10, (source, 0))
    with sock.makefile("rb") as lines:
        return sock, lines.readline()


def undeliverable(engine: Any, kind: str) -> list[str]:
    return undeliverable_addresses(os.path.join(engine.root, f"{kind}-undeliverable.txt"))


# -- inbound ------------------------------------------------------------------


def test_relay_rules_changed_through_the_api_apply_to_the_next_rcpt_of_an_open_session(
    engine_factory,
):
    # Paused: relayed mail waits in retry/, where it can be read.
    engine = start_engine(engine_factory, {"smtp_out": {"paused": True}})
    with smtp(engine, STRANGER) as c:
        c.ehlo("client.test")
        c.mail("a@src.test")
        assert c.rcpt("x@remote.example")[0] == 554
        set_live(engine, "smtp_in", "relay_ips", [STRANGER])
        assert c.rcpt("x@remote.example")[0] == 250
        set_live(engine, "smtp_in", "relay_ips", ["127.0.0.1"])
        assert c.rcpt("y@backup.test")[0] == 554
        set_live(engine, "smtp_in", "relay_domains", ["backup.test"])
        assert c.rcpt("y@backup.test")[0] == 250
        assert c.rcpt("z@local.test")[0] == 554
        set_live(engine, "server", "local_domains", ["local.test"])
        set_live(engine, "queue", "save_incoming", True)
        assert c.rcpt("z@local.test")[0] == 250
        assert c.data(MESSAGE)[0] == 250
    [relayed] = infs(engine, "retry")
    assert relayed["rcpttosend"] == "x@remote.example,y@backup.test"
    [incoming] = infs(engine, "incoming")
    assert incoming["rcpttosend"] == "z@local.test"


def test_sender_and_size_rules_changed_through_the_api_apply_to_the_next_command(engine_factory):
    engine = start_engine(engine_factory, {"server": {"local_domains": ["@"]}})
    with smtp(engine) as c:
        c.ehlo("client.test")
        assert c.esmtp_features["size"] == "10485760"
        assert c.mail("bob@spammer.test")[0] == 250
        c.rset()
        set_live(engine, "smtp_in", "reject_mail_from", ["SPAMMER"])
        assert c.mail("bob@spammer.test") == (550, b"5.7.1 Sender address rejected")
        set_live(engine, "smtp_in", "max_message_size_bytes", 2048)
        c.ehlo("client.test")
        assert c.esmtp_features["size"] == "2048"
        assert c.docmd("MAIL FROM:<a@src.test> SIZE=4096")[0] == 552


def test_connection_limits_and_idle_timeout_changed_through_the_api_apply_to_new_sessions(
    engine_factory,
):
    engine = start_engine(engine_factory)
    set_live(engine, "smtp_in", "max_connections", 1)
    first, greeting = connect_from(engine, "127.0.0.3")
    assert greeting.startswith(b"220 ")
    second, refused = connect_from(engine, "127.0.0.4")
    assert refused.startswith(b"421 4.7.0") and b"too many connections" in refused
    set_live(engine, "smtp_in", "priority_ips", ["127.0.0.4"])
    third, greeting = connect_from(engine, "127.0.0.4")
    assert greeting.startswith(b"220 ")
    set_live(engine, "smtp_in", "max_connections", 10)
    set_live(engine, "smtp_in", "max_connections_per_ip", 1)
    fourth, refused = connect_from(engine, "127.0.0.3")
    assert refused.startswith(b"421 4.7.0") and b"from your address" in refused
    for s in (first, second, third, fourth):
        s.close()
    set_live(engine, "smtp_in", "timeout_seconds", 5)
    idle, greeting = connect_from(engine, "127.0.0.5")
    began = time.monotonic()
    with idle:
        idle.settimeout(20)
        data = b""
        while chunk := idle.recv(4096):
            data += chunk
    assert data.startswith(b"421 4.4.2 ") and b"timeout exceeded" in data
    assert time.monotonic() - began < 15  # the default is 600 s


def test_only_configured_auth_mechanisms_are_offered_and_plain_auth_follows_the_api(
    engine_factory,
):
    def add_user(root: str) -> None:
        set_password(os.path.join(root, "config", "smtp-users.txt"), "joe", "pw1")

    engine = start_engine(
        engine_factory,
        {"smtp_in": {"auth_mechanisms": ["LOGIN"], "allow_plain_auth_without_tls": True}},
        before_start=add_user,
    )
    with smtp(engine, STRANGER) as c:
        c.ehlo("client.test")
        assert c.esmtp_features["auth"].split() == ["LOGIN"]
        assert c.docmd("AUTH PLAIN AGpvZQBwdzE=")[0] == 504  # PLAIN is not configured
        set_live(engine, "smtp_in", "allow_plain_auth_without_tls", False)
        c.ehlo("client.test")
        assert "auth" not in c.esmtp_features  # LOGIN only inside TLS now
        assert c.docmd("AUTH LOGIN")[0] == 538


def test_auth_lockout_changed_through_the_api_locks_a_guessing_address_out(engine_factory):
    def add_user(root: str) -> None:
        set_password(os.path.join(root, "config", "smtp-users.txt"), "joe", "pw1")

    engine = start_engine(
        engine_factory,
        {"smtp_in": {"allow_plain_auth_without_tls": True}},
        before_start=add_user,
    )
    set_live(engine, "smtp_in", "auth_max_failures", 2)
    set_live(engine, "smtp_in", "auth_lockout_seconds", 3600)

    def auth(source: str, password: bytes) -> int:
        with smtp(engine, source) as c:
            c.ehlo("client.test")
            blob = base64.b64encode(b"\0joe\0" + password).decode()
            return int(c.docmd("AUTH PLAIN " + blob)[0])

    assert [auth(STRANGER, b"guess1"), auth(STRANGER, b"guess2")] == [535, 535]
    assert auth(STRANGER, b"pw1") == 454  # locked out: the right password is not looked at
    assert auth("127.0.0.1", b"pw1") == 235
    console = engine.console()
    assert f"smtp in {STRANGER}: AUTH PLAIN failed for user 'joe'" in console
    assert f"smtp in {STRANGER}: locked out of AUTH for 3600 s after 2 failures" in console


def test_a_client_dripping_bytes_is_cut_at_timeout_seconds_and_data_timeout_seconds(
    engine_factory,
):
    engine = start_engine(engine_factory)
    set_live(engine, "smtp_in", "timeout_seconds", 5)
    set_live(engine, "smtp_in", "data_timeout_seconds", 5)

    def drip(sock: socket.socket, data: bytes) -> bytes:
        """One byte every half second (never silent for 5 s); what the engine answered."""
        sock.settimeout(0.5)
        for byte in data:
            try:
                sock.sendall(bytes([byte]))
                answer = sock.recv(1000)
            except TimeoutError:
                continue
            except OSError:
                return b""
            if answer:
                return answer
        return b""

    sock, greeting = connect_from(engine, "127.0.0.1")
    with sock:
        assert greeting.startswith(b"220 ")
        assert drip(sock, b"HELO " + b"x" * 30 + b"\r\n").startswith(b"421 4.4.2 ")  # a 15 s line
    sock, _ = connect_from(engine, "127.0.0.1")
    with sock:
        sock.sendall(b"HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\n")
        seen = b""
        while b"354 " not in seen:  # the socket's 10 s timeout bounds the wait
            seen += sock.recv(1000)
        answer = drip(sock, b"x" * 40 + b"\r\n.\r\n")
        assert answer.startswith(b"421 4.4.2 ") and b"DATA took too long" in answer
    assert infs(engine, "retry") == [] and "command too slow, closed" in engine.console()


def test_listen_ips_bind_only_the_listed_addresses_and_web_port_0_turns_the_admin_off(
    engine_factory,
):
    engine = engine_factory(
        {"smtp_in": {"listen_ips": ["127.0.0.5"]}, "web": {"listen_ips": ["127.0.0.6"]}}
    )
    assert port_open(engine.smtp_port, "127.0.0.5")
    assert not port_open(engine.smtp_port, "127.0.0.6")
    assert port_open(engine.web_port, "127.0.0.6")
    assert not port_open(engine.web_port, "127.0.0.5")
    off = engine_factory(web=False)  # the harness writes [web] port = 0
    assert f"listening on 127.0.0.1:{off.smtp_port}; queue" in off.console()
    zero = engine_factory({"web": {"allowed_ips": ["0"]}})
    assert f"listening on 127.0.0.1:{zero.smtp_port}; queue" in zero.console()
    assert not port_open(zero.web_port)


def test_helo_text_from_the_file_names_the_engine_in_its_smtp_greeting(engine_factory):
    engine = engine_factory({"server": {"helo_text": "mx.configured.test"}})
    sock, greeting = connect_from(engine, "127.0.0.1")
    sock.close()
    assert greeting.startswith(b"220 mx.configured.test ")


def test_helo_text_changed_through_the_api_names_the_engine_in_the_next_greeting(engine_factory):
    engine = start_engine(engine_factory)
    set_live(engine, "server", "helo_text", "mx.changed.test")
    sock, greeting = connect_from(engine, "127.0.0.1")
    sock.close()
    assert greeting.startswith(b"220 mx.changed.test ")


# -- outbound -----------------------------------------------------------------


def test_outbound_identity_changed_through_the_api_is_used_by_the_next_session(
    engine_factory, sinks
):
    sink = sinks("127.0.3.1")
    engine = start_engine(engine_factory, {"dns": {"bypass": [route("id.test", sink)]}})
    set_live(engine, "server", "helo_text", "mx.changed.test")
    set_live(engine, "server", "local_domains", ["bounces.changed.test"])
    set_live(engine, "smtp_out", "bounce_host", "bounces.changed.test")
    set_live(engine, "smtp_out", "outbound_ip", "127.0.0.7")
    send(engine, ["a@id.test"], sender="joe@src.test")
    wait_for(sink.received, what="the message")
    [session] = sink.sessions
    assert session.peer == "127.0.0.7"
    assert session.commands[0] == "EHLO mx.changed.test"
    assert sink.received()[0].mail_from == "mailengine-bounce-joe%src.test@bounces.changed.test"


def test_remote_port_and_reject_mail_servers_changed_through_the_api_route_the_next_message(
    engine_factory, sinks
):
    rejected = sinks("127.0.3.2")
    chosen = SinkServer("127.0.3.3", rejected.port)  # the same port: [smtp_out] remote_port
    try:
        engine = start_engine(
            engine_factory,
            {
                "dns": {
                    "bypass": [  # no port in these lines: remote_port is dialled
                        "rp.test,mx1.rp.test,MX,127.0.3.2",
                        "rp.test,mx2.rp.test,MX,127.0.3.3",
                        "only.test,mx.only.test,MX,127.0.3.2",
                    ]
                },
                "queue": {"retry_intervals_minutes": [0]},
            },
        )
        set_live(engine, "smtp_out", "remote_port", rejected.port)
        set_live(engine, "smtp_out", "reject_mail_servers", ["127.0.3.2"])
        send(engine, ["a@rp.test"])
        send(engine, ["b@only.test"])
        wait_for(chosen.received, what="the message at the second MX")
        assert chosen.received()[0].rcpts == ["a@rp.test"]
        wait_for(lambda: undeliverable(engine, "soft") == ["b@only.test"], what="b@only.test")
        assert rejected.sessions == []
    finally:
        chosen.close()


def test_a_lower_total_connection_cap_set_through_the_api_holds_every_host(engine_factory, sinks):
    stalled = [sinks(f"127.0.3.{i}") for i in (11, 12, 13)]
    for sink in stalled:
        sink.stall_on = "MAIL"  # each session stays open, holding its connection
    engine = start_engine(
        engine_factory,
        {"dns": {"bypass": [route(f"c{i}.test", s) for i, s in enumerate(stalled)]}},
    )
    set_live(engine, "smtp_out", "max_connections_per_host", 1)
    set_live(engine, "smtp_out", "max_connections", 2)
    for i in range(3):
        send(engine, [f"x@c{i}.test"], n=3)

    def sessions() -> int:
        return sum(len(s.sessions) for s in stalled)

    wait_for(lambda: sessions() == 2, what="two sessions")
    stays(lambda: sessions() == 2 and all(s.max_concurrent <= 1 for s in stalled), 0.5, "caps")


def test_a_higher_total_connection_cap_set_through_the_api_opens_connections_at_once(
    engine_factory, sinks
):
    stalled = [sinks(f"127.0.3.{i}") for i in (14, 15, 16)]
    for sink in stalled:
        sink.stall_on = "MAIL"
    engine = start_engine(
        engine_factory,
        {
            "dns": {"bypass": [route(f"c{i}.test", s) for i, s in enumerate(stalled)]},
            "smtp_out": {"max_connections": 1},
        },
    )
    for i in range(3):
        send(engine, [f"x@c{i}.test"])
    wait_for(lambda: sum(len(s.sessions) for s in stalled) == 1, what="one session")
    set_live(engine, "smtp_out", "max_connections", 10)
    wait_for(lambda: all(s.sessions for s in stalled), timeout=2, what="a session at every host")


class SilentAfterData:
    """An SMTP server that answers up to 354 and then stops reading (a blocked write);
    with ``resume_after`` it reads the body that many seconds later and answers 250."""

    def __init__(self, host: str, resume_after: float | None = None) -> None:
        import threading

        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.listener.bind((host, 0))
        self.listener.listen(8)
        self.host, self.port = host, self.listener.getsockname()[1]
        self.resume_after = resume_after
        self.blocked, self.taken, self.closed = (threading.Event() for _ in range(3))
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            while True:
                conn, _ = self.listener.accept()
                self.conns.append(conn)
                with conn.makefile("rb") as lines:
                    conn.sendall(b"220 silent\r\n")
                    for line in lines:
                        verb = line[:4].upper()
                        if verb == b"DATA":
                            conn.sendall(b"354 go ahead\r\n")
                            self.blocked.set()
                            self._resume(conn, lines)
                            break
                        conn.sendall(b"221 bye\r\n" if verb == b"QUIT" else b"250 ok\r\n")
        except OSError:
            pass

    def _resume(self, conn: socket.socket, lines: Any) -> None:
        if self.resume_after is None or self.closed.wait(self.resume_after):
            return
        for line in lines:
            if line == b".\r\n":
                self.taken.set()
                conn.sendall(b"250 queued\r\n")
                return

    def close(self) -> None:
        self.closed.set()
        for s in [self.listener, *self.conns]:
            s.close()


def test_the_four_outbound_timeouts_changed_through_the_api_end_stuck_sessions(
    engine_factory, sinks
):
    read_stall, body_stall = sinks("127.0.3.21"), sinks("127.0.3.22")
    read_stall.stall_on, body_stall.stall_on = "MAIL", "DATA-END"
    blackhole = socket.socket()  # a full accept queue: further SYNs are dropped
    blackhole.bind(("127.0.3.23", 0))
    blackhole.listen(0)
    blackhole_port = blackhole.getsockname()[1]
    filler = socket.create_connection(("127.0.3.23", blackhole_port), timeout=5)
    silent = SilentAfterData("127.0.3.24")
    settings = {
        "dns": {
            "bypass": [
                route("read.test", read_stall),
                route("body.test", body_stall),
                f"connect.test,mx.connect.test,MX,127.0.3.23:{blackhole_port}",
                f"write.test,mx.write.test,MX,127.0.3.24:{silent.port}",
            ]
        },
        "queue": {"retry_intervals_minutes": [0]},
    }
    try:
        # Two engines: the body timer also runs while a body is written, so the blocked
        # write is tried where only the write timeout is short.
        engine, body_engine = (
            start_engine(engine_factory, settings),
            start_engine(engine_factory, settings),
        )
        for key in ("connect", "write", "read"):
            set_live(engine, "smtp_out", f"{key}_timeout_seconds", 5)
        set_live(body_engine, "smtp_out", "body_timeout_seconds", 5)
        send(body_engine, ["b@body.test"])
        send(engine, ["r@read.test"])
        send(engine, ["c@connect.test"])
        send(engine, ["w@write.test"], body=(b"x" * 998 + b"\r\n") * 5000)  # past kernel buffers
        # The defaults are 240 s (600 s for the body): only the new values fit in 20 s.
        expected = ["c@connect.test", "r@read.test", "w@write.test"]
        wait_for(lambda: sorted(undeliverable(engine, "soft")) == expected, timeout=20)
        wait_for(lambda: undeliverable(body_engine, "soft") == ["b@body.test"], timeout=20)
        assert silent.blocked.is_set()
    finally:
        filler.close()
        blackhole.close()
        silent.close()


def test_the_body_timeout_counts_from_the_end_of_the_data_not_from_its_first_byte(
    engine_factory,
):
    slow = SilentAfterData("127.0.3.25", resume_after=6)  # reads the body 6 s late
    try:
        engine = start_engine(
            engine_factory,
            {
                "dns": {"bypass": [f"slow.test,mx.slow.test,MX,127.0.3.25:{slow.port}"]},
                "queue": {"retry_intervals_minutes": [0]},
            },
        )
        set_live(engine, "smtp_out", "body_timeout_seconds", 5)
        send(engine, ["a@slow.test"], body=(b"x" * 998 + b"\r\n") * 5000)  # past kernel buffers
        wait_for(lambda: slow.taken.is_set() or undeliverable(engine, "soft"), timeout=20)
        assert slow.taken.is_set() and undeliverable(engine, "soft") == []
    finally:
        slow.close()


def test_an_hourly_cap_set_through_the_api_holds_sending(engine_factory, sinks):
    sink = sinks("127.0.3.31")
    engine = start_engine(engine_factory, {"dns": {"bypass": [route("rate.test", sink)]}})
    set_live(engine, "smtp_out", "max_messages_per_hour", 1)
    send(engine, ["a@rate.test"], n=3)
    wait_for(sink.received, what="the first message")
    engine.wait_log("Your mailing speed has reached 1 messages per hour")
    stays(lambda: len(sink.received()) == 1, 0.5, "one message in this hour")


def test_lifting_the_hourly_cap_through_the_api_sends_held_mail_at_once(engine_factory, sinks):
    sink = sinks("127.0.3.32")
    engine = start_engine(
        engine_factory,
        {"dns": {"bypass": [route("rate.test", sink)]}, "smtp_out": {"max_messages_per_hour": 1}},
    )
    send(engine, ["a@rate.test"], n=3)
    engine.wait_log("Your mailing speed has reached 1 messages per hour")
    set_live(engine, "smtp_out", "max_messages_per_hour", 0)
    wait_for(lambda: len(sink.received()) == 3, timeout=2, what="the held messages")


def test_a_bandwidth_cap_set_through_the_api_holds_sending(engine_factory, sinks):
    sink = sinks("127.0.3.33")
    engine = start_engine(engine_factory, {"dns": {"bypass": [route("bw.test", sink)]}})
    set_live(engine, "smtp_out", "max_bandwidth_bytes_per_minute", 60)  # a byte a second
    try:
        send(engine, ["a@bw.test"], n=3)
        wait_for(sink.received, what="the first message")
        stays(lambda: len(sink.received()) == 1, 0.5, "one message within the cap")
    finally:
        engine.kill()  # a graceful stop would wait out its 30 s bound (see the report)


def test_lifting_the_bandwidth_cap_through_the_api_sends_held_mail_at_once(engine_factory, sinks):
    sink = sinks("127.0.3.34")
    engine = start_engine(
        engine_factory,
        {
            "dns": {"bypass": [route("bw.test", sink)]},
            "smtp_out": {"max_bandwidth_bytes_per_minute": 60},
        },
    )
    try:
        send(engine, ["a@bw.test"], n=3)
        wait_for(sink.received, what="the first message")
        set_live(engine, "smtp_out", "max_bandwidth_bytes_per_minute", 0)
        wait_for(lambda: len(sink.received()) == 3, timeout=2, what="the held messages")
    finally:
        engine.kill()  # a graceful stop would wait out its 30 s bound (see the report)


def test_tls_verify_domains_changed_through_the_api_make_an_unverified_mx_fail_soft(
    engine_factory, sinks, tmp_path
):
    from tests.sinks import self_signed_context

    sink = sinks("127.0.3.35")
    sink.tls_context = self_signed_context(str(tmp_path))
    engine = start_engine(
        engine_factory,
        {
            "dns": {"bypass": [route("strict.test", sink, "mx.tls.test")]},
            "queue": {"retry_intervals_minutes": [0]},
        },
    )
    send(engine, ["a@strict.test"])
    wait_for(sink.received, what="the message over unverified TLS")
    set_live(engine, "smtp_out", "tls_verify_domains", ["strict.test"])
    send(engine, ["b@strict.test"])
    wait_for(lambda: undeliverable(engine, "soft") == ["b@strict.test"], what="the soft failure")
    assert [m.rcpts for m in sink.received()] == [["a@strict.test"]]


# -- DNS ----------------------------------------------------------------------


def test_dns_settings_changed_through_the_api_apply_to_the_next_lookup(
    engine_factory, sinks, tmp_path
):
    from tests.dnsserver import DNSServerProcess

    sink = sinks("127.0.3.41")
    zone = tmp_path / "zone.txt"
    zone.write_text("warm.test 300 MX 10 mx.warm.test\nmx.warm.test 300 A 127.0.3.42\n")
    with DNSServerProcess(str(zone)) as dns:
        engine = start_engine(engine_factory, {"dns": {"servers": [dns.spec]}})
        set_live(engine, "dns", "preload_domains", ["warm.test"])
        wait_for(lambda: ("warm.test", "MX") in dns.queries(), what="the preload query")
        set_live(engine, "logs", "debug_dns", True)
        set_live(engine, "dns", "bypass", [route("by.test", sink)])
        send(engine, ["a@by.test"])
        wait_for(sink.received, what="the message sent by the bypass line")
        engine.wait_log("found 1 acceptable mail servers for by.test (bypass)")
        assert ("by.test", "MX") not in dns.queries()


# -- queue --------------------------------------------------------------------


def test_retry_intervals_changed_through_the_api_time_the_next_retries(engine_factory, sinks):
    sink = sinks("127.0.3.51")
    sink.rcpt_reply = lambda rcpt: (451, "4.7.1 try again later")
    engine = start_engine(engine_factory, {"dns": {"bypass": [route("later.test", sink)]}})
    set_live(engine, "queue", "retry_intervals_minutes", [0.01, 0.01])  # 0.6 s each
    send(engine, ["a@later.test"])
    wait_for(lambda: undeliverable(engine, "soft") == ["a@later.test"], what="the last retry")
    assert len(sink.commands("RCPT")) == 3  # the first attempt and two retries


def test_use_disk_for_relay_switched_on_through_the_api_keeps_mail_through_a_crash(
    engine_factory,
):
    # [dns] servers never answer here, so relay mail waits in memory for its lookup.
    engine = start_engine(engine_factory)
    set_live(engine, "queue", "use_disk_for_relay", True)
    send(engine, ["a@slow.test"])
    engine.kill()
    restarted = engine_factory({"smtp_out": {"paused": True}}, root=engine.root)
    restarted.wait_log("started")
    assert [inf["rcpttosend"] for inf in infs(restarted, "retry")] == ["a@slow.test"]


def test_save_done_and_use_dsn_switched_on_through_the_api_apply_to_the_next_attempt(
    engine_factory, sinks
):
    target, home = sinks("127.0.3.52"), sinks("127.0.3.53")
    target.rcpt_reply = lambda rcpt: (550, "5.1.1 no such user") if "gone" in rcpt else None
    engine = start_engine(
        engine_factory,
        {"dns": {"bypass": [route("dsn.test", target), route("src.test", home)]}},
    )
    set_live(engine, "queue", "save_done", True)
    set_live(engine, "queue", "use_dsn", True)
    send(engine, ["ok@dsn.test", "gone@dsn.test"])
    wait_for(home.received, what="the DSN")
    [dsn] = home.received()
    assert dsn.mail_from == "" and dsn.rcpts == ["sender@src.test"]
    assert "gone@dsn.test" in dsn.data.decode()

    def done() -> list[dict[str, str]]:
        return [i for i in infs(engine, "done") if i["mailfrom"] == "sender@src.test"]

    [finished] = wait_for(done, what="the message in done/")
    assert finished["status"] == "done" and finished["rcptsent"].strip(",") == "ok@dsn.test"


def plant(engine: Any, dirname: str, message_id: str, age_minutes: float) -> str:
    """A message another program left in ``dirname``, last written ``age_minutes`` ago."""
    path = os.path.join(engine.mailq, dirname, message_id)
    with open(path + ".dat", "wb") as fh:
        fh.write(MESSAGE)
    with open(path + ".inf", "w", encoding="utf-8") as fh:
        fh.write(f"messageid={message_id}\nmailfrom=a@src.test\nrcpttosend=b@dst.test\n")
    stamp = time.time() - age_minutes * 60
    os.utime(path + ".inf", (stamp, stamp))
    return path + ".inf"


def test_retention_minutes_changed_through_the_api_decide_what_the_next_check_removes(
    engine_factory,
):
    engine = start_engine(
        engine_factory, {"queue": {"check_interval_seconds": 1}, "logs": {"debug_program": True}}
    )
    scans = engine.console().count("retry scan:")
    set_live(engine, "queue", "done_retention_minutes", 1)  # the default keeps 60
    set_live(engine, "queue", "incoming_retention_minutes", 0)  # 0: keep forever
    # A check already under way when the settings changed still applies the old ones:
    # plant the files once a check that began after the change has finished.
    wait_for(lambda: engine.console().count("retry scan:") >= scans + 2, what="a new check")
    done = plant(engine, "done", "P1T1C1@done.test", age_minutes=30)
    incoming = plant(engine, "incoming", "P1T1C2@incoming.test", age_minutes=120)
    wait_for(lambda: not os.path.exists(done), what="the 30 minute old done/ message to go")
    checks = engine.console().count("retry scan:")
    wait_for(lambda: engine.console().count("retry scan:") >= checks + 2, what="two more checks")
    assert os.path.exists(incoming)


def test_memory_limits_changed_through_the_api_offload_new_mail_to_retry(engine_factory, sinks):
    stalled = sinks("127.0.3.54")
    stalled.stall_on = "MAIL"  # messages being sent stay in memory
    engine = start_engine(engine_factory, {"dns": {"bypass": [route("mem.test", stalled)]}})

    def in_retry() -> list[str]:
        return sorted(inf["rcpttosend"] for inf in infs(engine, "retry"))

    set_live(engine, "queue", "max_messages_in_memory", 1)
    for rcpt in ("a", "b", "c"):
        send(engine, [f"{rcpt}@mem.test"])
    assert in_retry() == ["b@mem.test", "c@mem.test"]
    set_live(engine, "queue", "max_messages_in_memory", 500000)
    set_live(engine, "queue", "max_memory_kb", 1000)
    wait_for(lambda: in_retry() == [], what="b and c taken back into memory")
    big = (b"y" * 998 + b"\r\n") * 600  # 600 KB: one fits in 1000 KB, two do not
    send(engine, ["d@mem.test"], body=big)
    send(engine, ["e@mem.test"], body=big)
    assert in_retry() == ["e@mem.test"]


def test_a_shorter_check_interval_set_through_the_api_applies_to_the_next_scan(engine_factory):
    engine = start_engine(engine_factory, {"logs": {"debug_program": True}})  # checks every 600 s
    engine.wait_log("retry scan:")  # the check at start
    scans = engine.console().count("retry scan:")
    set_live(engine, "queue", "check_interval_seconds", 1)
    # Files dropped into retry/ are seen at once (it is watched); the scan still runs at
    # each check, now every second instead of after 600.
    wait_for(lambda: engine.console().count("retry scan:") >= scans + 2, 10, what="2 scans")


# -- logs ---------------------------------------------------------------------


def test_log_retention_days_prune_old_files_and_0_set_through_the_api_stops_writing_them(
    engine_factory,
):
    import datetime

    def old_logs(root: str) -> None:
        os.makedirs(os.path.join(root, "log"), exist_ok=True)
        five_days_ago = datetime.date.today() - datetime.timedelta(days=5)
        for day in (five_days_ago.isoformat(), "2001-01-24"):
            with open(os.path.join(root, "log", f"mailengine-{day}.log"), "w") as fh:
                fh.write("old\n")

    engine = start_engine(
        engine_factory,
        {"logs": {"retention_days": 3}, "server": {"local_domains": ["@"]}},
        before_start=old_logs,
    )
    logs = os.path.join(engine.root, "log")
    today = f"mailengine-{datetime.date.today().isoformat()}.log"
    wait_for(lambda: os.listdir(logs) == [today], what="only today's log file")
    wait_for(lambda: "started" in read_text(os.path.join(logs, today)), what="the log file")
    set_live(engine, "logs", "retention_days", 0)
    send(engine, ["a@local.test"])
    engine.wait_log("1 recv [1 inbound, 0 relay]")
    assert "recv [" not in read_text(os.path.join(logs, today))


def test_log_undeliverable_switched_off_through_the_api_stops_the_undeliverable_file(
    engine_factory, sinks
):
    sink = sinks("127.0.3.61")
    sink.rcpt_reply = lambda rcpt: (550, "5.1.1 no such user")
    engine = start_engine(engine_factory, {"dns": {"bypass": [route("gone.test", sink)]}})
    send(engine, ["a@gone.test"])
    wait_for(lambda: undeliverable(engine, "hard") == ["a@gone.test"], what="the first line")
    set_live(engine, "logs", "log_undeliverable", False)
    send(engine, ["b@gone.test"])
    wait_for(
        lambda: api(engine, "GET", "/api/status")[1]["totals"]["failed_hard"] == 2,
        what="the second final failure",
    )
    assert undeliverable(engine, "hard") == ["a@gone.test"]


def test_stats_lines_follow_the_logs_settings_changed_through_the_api(engine_factory):
    engine = start_engine(engine_factory, {"server": {"local_domains": ["@"]}})  # stats every 1 s
    send(engine, ["a@local.test"])
    engine.wait_log("1 recv [1 inbound, 0 relay]", timeout=5)  # the default is every 10 s
    engine.wait_log("queue size: 0 messages in memory")
    engine.wait_log("queue memory: 0 KB")
    set_live(engine, "logs", "log_queue_size", False)
    set_live(engine, "logs", "log_queue_memory", False)
    before = engine.console()
    send(engine, ["b@local.test"], n=2)
    engine.wait_log("2 recv [2 inbound, 0 relay]", timeout=5)
    after = engine.console()[len(before) :]
    assert "queue size:" not in after and "queue memory:" not in after
    set_live(engine, "logs", "stats_interval_seconds", 0)
    send(engine, ["c@local.test"], n=3)
    stays(lambda: "3 recv [" not in engine.console(), 1.5, "no stats line while they are off")


def test_a_shorter_stats_interval_set_through_the_api_applies_to_the_next_line(engine_factory):
    engine = start_engine(
        engine_factory,
        {"server": {"local_domains": ["@"]}, "logs": {"stats_interval_seconds": 3600}},
    )
    set_live(engine, "logs", "stats_interval_seconds", 1)
    send(engine, ["a@local.test"])
    engine.wait_log("1 recv [1 inbound, 0 relay]", timeout=3)


def test_debug_flags_switched_on_through_the_api_log_what_they_name(engine_factory, sinks):
    sink = sinks("127.0.3.62")
    engine = start_engine(
        engine_factory,
        {"dns": {"bypass": [route("dbg.test", sink)]}, "queue": {"check_interval_seconds": 1}},
    )
    send(engine, ["a@dbg.test"])
    wait_for(sink.received, what="the first message")
    lines = {
        "debug_smtp_in": "smtp in 127.0.0.1 < mail FROM:<sender@src.test>",  # as smtplib spells it
        "debug_smtp_out": "--> RCPT TO:<b@dbg.test>",
        "debug_send_loop": "send loop: took 1 messages",
        "debug_program": "retry scan: ",
    }
    for key in lines:
        set_live(engine, "logs", key, True)
    assert not any(line in engine.console() for line in lines.values())
    send(engine, ["b@dbg.test"])
    wait_for(lambda: len(sink.received()) == 2, what="the second message")
    for line in lines.values():
        engine.wait_log(line)


# -- reports, web admin, admin notices ------------------------------------------


def test_delivery_reports_set_through_the_api_go_to_their_recipients_for_the_listed_domains(
    engine_factory, sinks
):
    target, ops = sinks("127.0.3.71"), sinks("127.0.3.72")
    target.rcpt_reply = lambda rcpt: (550, "5.1.1 no such user")
    engine = start_engine(
        engine_factory,
        {
            "dns": {
                "bypass": [
                    route("aol.test", target),
                    route("other.test", target),
                    route("reports.test", ops),
                ]
            }
        },
    )
    set_live(engine, "reports", "type", "e")
    set_live(engine, "reports", "recipients", ["ops@reports.test"])
    set_live(engine, "reports", "domains", ["aol.test"])
    send(engine, ["a@aol.test", "b@other.test"])
    [report] = wait_for(ops.received, what="the delivery report")
    assert report.rcpts == ["ops@reports.test"]
    text = report.data.decode()
    assert "Delivery report for message" in text and "a@aol.test: failed: 550" in text
    assert "b@other.test" not in text


def test_allowed_ips_and_api_token_changed_through_the_api_apply_to_the_next_request(
    engine_factory,
):
    engine = start_engine(engine_factory, {"web": {"allowed_ips": ["127.0.0.1", STRANGER]}})
    assert api(engine, "GET", "/api/status", source=STRANGER)[0] == 200
    set_live(engine, "web", "allowed_ips", [STRANGER], source=STRANGER)
    assert api(engine, "GET", "/api/status")[0] == 403  # from 127.0.0.1
    set_live(engine, "web", "api_token", "a-new-token-0123456789", source=STRANGER)
    assert api(engine, "GET", "/api/status", source=STRANGER)[0] == 401
    assert (
        api(engine, "GET", "/api/status", token="a-new-token-0123456789", source=STRANGER)[0] == 200
    )


def lowest_free_descriptor(pid: int) -> int:
    used = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    return next(n for n in range(len(used) + 1) if n not in used)


def test_admin_email_set_through_the_api_is_told_when_descriptors_run_out(engine_factory, sinks):
    import resource

    far, admin = sinks("127.0.3.81"), sinks("127.0.3.82")
    engine = start_engine(
        engine_factory,
        {"dns": {"bypass": [route("far.test", far), route("admin.test", admin)]}},
    )
    set_live(engine, "server", "admin_email", "ops@admin.test")
    pid = engine.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    with smtp(engine) as c:  # opened before the limit drops
        # This leaves a connection to the admin's server open (idle) for the notice.
        c.sendmail("a@src.test", ["first@admin.test"], MESSAGE)
        wait_for(admin.received, what="the first message")
        # No new descriptor from here on: the next outbound connection fails with EMFILE.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free_descriptor(pid), hard))
        try:
            c.sendmail("a@src.test", ["x@far.test"], MESSAGE)
            engine.wait_log("Warning: you are out of file descriptors.")
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    wait_for(lambda: len(admin.received()) == 2, what="the admin notice")
    notice = admin.received()[1]
    assert notice.rcpts == ["ops@admin.test"]
    assert "out of file descriptors" in email.message_from_bytes(notice.data)["Subject"]
