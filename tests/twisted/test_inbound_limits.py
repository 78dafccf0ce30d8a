"""Hostile clients: AUTH guessing locked out per address, and slow-drip sessions bounded
in total time, not only in silence (issue 9)."""

import base64
import os

import pytest
from twisted.logger import globalLogPublisher

from mailengine.config.passwords import set_password
from tests.twisted.inbound_rig import Rig

GUESSER, OTHER = "198.51.100.7", "198.51.100.8"


@pytest.fixture
def rig(tmp_path):
    rig = Rig(tmp_path, {("smtp_in", "allow_plain_auth_without_tls"): True})
    set_password(os.path.join(rig.root, "config", "smtp-users.txt"), "joe", "right")
    rig.clock.advance(1)  # smtp-users.txt is looked at again at most once a second
    return rig


@pytest.fixture
def logged():
    lines = []

    def observe(event):
        if event.get("log_namespace") == "mailengine.inbound":
            from twisted.logger import formatEvent

            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def auth(password):
    return b"AUTH PLAIN " + base64.b64encode(b"\0joe\0" + password) + b"\r\n"


def session(rig, peer):
    s = rig.connect(peer=peer)
    s.send(b"EHLO c\r\n")
    return s


def test_password_guessing_from_one_address_is_locked_out_across_connections(rig, logged):
    rig.config.apply("smtp_in", "auth_max_failures", 3)
    rig.config.apply("smtp_in", "auth_lockout_seconds", 60)
    for guess in (b"a", b"b"):  # reconnecting does not start the count again
        assert session(rig, GUESSER).codes(auth(guess)) == [535]
    s = session(rig, GUESSER)
    assert s.codes(auth(b"c")) == [535]
    # Locked out: even the right password is not looked at, on any connection.
    assert s.send(auth(b"right"))[0].startswith(b"454 4.7.0 Too many failed authentications")
    assert session(rig, GUESSER).codes(auth(b"right")) == [454]
    assert session(rig, OTHER).codes(auth(b"right")) == [235]  # others are not affected
    failures = [line for line in logged if "AUTH PLAIN failed for user 'joe'" in line]
    assert len(failures) == 3 and all(GUESSER in line for line in failures)
    assert "(3 failures from this address in 60 s)" in failures[-1]
    assert any(f"smtp in {GUESSER}: locked out of AUTH for 60 s" in line for line in logged)
    rig.clock.advance(61)
    assert session(rig, GUESSER).codes(auth(b"right")) == [235]


def test_auth_max_failures_0_logs_failures_but_never_locks_out(rig, logged):
    rig.config.apply("smtp_in", "auth_max_failures", 0)
    for _ in range(12):  # the default would lock out after 10
        assert session(rig, GUESSER).codes(auth(b"wrong")) == [535]
    assert session(rig, GUESSER).codes(auth(b"right")) == [235]
    assert sum("failed for user" in line for line in logged) == 12


def drip(rig, s, data, every):
    """Send ``data`` one byte at a time, ``every`` seconds apart; the replies seen."""
    replies = []
    for byte in data:
        rig.clock.advance(every)
        replies += s.send(bytes([byte]))
        if s.transport.disconnecting:
            break
    return replies


def test_a_command_line_dripped_a_byte_at_a_time_is_cut_at_timeout_seconds(rig, logged):
    rig.config.apply("smtp_in", "timeout_seconds", 30)  # never silent that long below
    s = session(rig, OTHER)
    assert drip(rig, s, b"NOOP\r\n", 5) == [b"250 2.0.0 Ok"]  # 25 s for a line: fine
    replies = drip(rig, s, b"MAIL FROM:<a@b.test>\r\n", 10)
    assert replies == [b"421 4.4.2 mx.test Error: command took too long"]
    assert s.transport.disconnecting
    assert any(f"smtp in {OTHER}: command too slow, closed" in line for line in logged)


def test_data_dripped_a_byte_at_a_time_is_cut_at_data_timeout_seconds(rig):
    rig.config.apply("smtp_in", "timeout_seconds", 30)
    rig.config.apply("smtp_in", "data_timeout_seconds", 60)
    s = session(rig, "127.0.0.1")  # in relay_ips
    assert s.codes(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\n") == [
        250,
        250,
        354,
    ]
    replies = drip(rig, s, b"Subject: slow\r\n\r\n" + b"x" * 20 + b"\r\n.\r\n", 10)
    assert replies == [b"421 4.4.2 mx.test Error: DATA took too long"]
    assert s.transport.disconnecting
    assert rig.queue.messages == {} and rig.files("retry") == []  # never acknowledged


def test_a_whole_data_within_data_timeout_seconds_is_accepted(rig):
    rig.config.apply("smtp_in", "data_timeout_seconds", 60)
    s = session(rig, "127.0.0.1")
    s.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\n")
    rig.clock.advance(50)
    assert s.codes(b"Subject: x\r\n\r\nhi\r\n.\r\n") == [250]
