"""Receiving through the real service (twistd mailengine) with smtplib (manual §2, §5)."""

import base64
import glob
import itertools
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailengine.config.passwords import set_password
from mailengine.queue.inf import parse_inf
from tests.harness import read_text, run_cli, wait_for
from tests.sinks import route
from tests.system.certificates import make_certificates

pytestmark = pytest.mark.system

STRANGER = "127.0.0.1"  # not in relay_ips below
TRUSTED = "127.0.0.2"
MESSAGE = b"Subject: test\r\n\r\nhello\r\n"


def smtp(engine, source=STRANGER, timeout=10):
    return smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=timeout, source_address=(source, 0))


def infs(engine, dirname):
    out = []
    for path in sorted(glob.glob(os.path.join(engine.mailq, dirname, "*.inf"))):
        with open(path) as fh:
            out.append(parse_inf(fh.read()))
    return out


def rcpt_code(client, address):
    return client.rcpt(address)[0]


@pytest.fixture
def relay_engine(engine_factory):
    return engine_factory(
        {
            "server": {"local_domains": ["local.test", "bounce.test"]},
            "smtp_in": {"relay_ips": [TRUSTED], "relay_domains": ["backup.test"]},
            "queue": {"save_incoming": True},
            # Paused: relayed mail lands in retry/, so "nothing relayed" is visible there.
            "smtp_out": {"paused": True},
        }
    )


def test_every_relay_decision_through_the_real_server(relay_engine):
    with smtp(relay_engine, STRANGER) as c:
        c.ehlo("client.test")
        c.mail("a@b.test")
        assert rcpt_code(c, "x@local.test") == 250
        assert rcpt_code(c, "x@LOCAL.TEST") == 250
        assert rcpt_code(c, "y@backup.test") == 250  # relay domain: from anyone
        assert c.rcpt("v@remote.example") == (554, b"5.7.1 <v@remote.example>: relay not approved")
        assert rcpt_code(c, "z@sub.backup.test") == 554
        assert rcpt_code(c, "z%remote.example@backup.test") == 554  # no routing through it
        assert rcpt_code(c, "mailengine-bounce-j%x.test@remote.example") == 554  # not local
        c.rset()
    with smtp(relay_engine, TRUSTED) as c:
        c.ehlo("client.test")
        c.mail("a@b.test")
        assert rcpt_code(c, "v@remote.example") == 250


@pytest.mark.parametrize(
    ("recipient", "stays_local"),
    [
        ("user%remote.example@local.test", True),
        ("remote.example!user@local.test", True),
        ('"user@remote.example"@local.test', True),
        ('"user%remote.example"@local.test', True),
        ("@local.test:user@remote.example", False),  # source route: final address decides
        ("@local.test,@bounce.test:user@remote.example", False),
    ],
)
def test_open_relay_tricks_never_relay_for_a_stranger(relay_engine, recipient, stays_local):
    with smtp(relay_engine, STRANGER) as c:
        c.ehlo("client.test")
        c.mail("a@b.test")
        code = c.docmd(f"RCPT TO:<{recipient}>")[0]
        assert code == (250 if stays_local else 554)
        if stays_local:
            assert c.data(MESSAGE)[0] == 250
    assert infs(relay_engine, "retry") == []
    if stays_local:
        [inf] = infs(relay_engine, "incoming")
        assert inf["rcpttosend"].endswith("@local.test")


@pytest.mark.parametrize(
    "recipient",
    ["user@remote.example@local.test", "user@[127.0.0.1]", "user@remote.example.@@local.test"],
)
def test_addresses_that_try_to_name_two_hosts_are_refused(relay_engine, recipient):
    with smtp(relay_engine, STRANGER) as c:
        c.ehlo("client.test")
        c.mail("a@b.test")
        assert c.docmd(f"RCPT TO:<{recipient}>")[0] in (501, 553)
    assert infs(relay_engine, "retry") == []


def test_incoming_mail_is_saved_with_the_manuals_inf_fields(relay_engine):
    with smtp(relay_engine, STRANGER) as c:
        c.ehlo("client.example")
        c.sendmail("sender@b.test", ["x@local.test", "y@local.test"], MESSAGE)
    [inf] = infs(relay_engine, "incoming")
    assert inf["helo"] == "client.example"
    assert inf["peertcpip"] == inf["peerhostname"] == STRANGER
    assert inf["localtcpip"] == "127.0.0.1"
    assert inf["localhostname"]
    assert inf["mailfrom"] == "sender@b.test"
    assert inf["rcpttosend"] == "x@local.test,y@local.test"
    assert re.fullmatch(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d", inf["timecreated"])
    [dat] = glob.glob(os.path.join(relay_engine.mailq, "incoming", "*.dat"))
    with open(dat, "rb") as fh:
        content = fh.read()
    assert inf["datasize"] == str(len(content))
    assert content.startswith(b"Received: from client.example ([127.0.0.1])\r\n")
    assert content.endswith(MESSAGE)
    relay_engine.wait_log("1 recv [1 inbound, 0 relay]")


def test_relay_mail_waits_in_retry_while_paused_and_is_counted_as_relay(engine_factory):
    engine = engine_factory(
        {"server": {"local_domains": ["local.test"]}, "smtp_out": {"paused": True}}
    )
    with smtp(engine, "127.0.0.1") as c:
        for i in range(3):
            c.sendmail("a@b.test", [f"r{i}@remote.example", "l@local.test"], MESSAGE)
    retry = infs(engine, "retry")
    assert sorted(inf["rcpttosend"] for inf in retry) == [f"r{i}@remote.example" for i in range(3)]
    assert all(inf["retrytime"] for inf in retry)
    engine.wait_log("3 recv [0 inbound, 3 relay]")  # a split message counts once
    assert "queue size: 0 messages in memory" in engine.console()


def held_in_memory(engine):
    """(messages, bytes) the engine holds in memory, from its /metrics."""
    url = f"http://127.0.0.1:{engine.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    found = dict(re.findall(r"^mailengine_queue_memory_(messages|bytes) (\d+)$", text, re.M))
    return int(found["messages"]), int(found["bytes"])


@pytest.mark.parametrize(
    ("limit", "line_count", "held"),
    [
        ({"max_messages_in_memory": 2}, 1, 2),
        ({"max_memory_kb": 1000}, 3750, 3),  # 300,000-byte messages: three fit in 1000 KB
    ],
)
def test_relay_mail_beyond_the_memory_limit_is_offloaded_to_retry_and_memory_stays_bounded(
    engine_factory, limit, line_count, held
):
    # DNS never answers here ([dns] servers = 127.0.0.1:1), so relay mail stays in
    # memory while its lookup waits.
    engine = engine_factory({"queue": limit})
    message = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * line_count
    samples = []
    with smtp(engine, "127.0.0.1") as c:
        for i in range(5):
            c.sendmail("a@b.test", [f"r{i}@remote.example"], message)
            samples.append(held_in_memory(engine))
    retry = infs(engine, "retry")
    assert sorted(inf["rcpttosend"] for inf in retry) == [
        f"r{i}@remote.example" for i in range(held, 5)
    ]
    engine.wait_log("5 recv [0 inbound, 5 relay]")
    engine.wait_log(f"queue size: {held} messages in memory")
    samples += [held_in_memory(engine) for _ in range(3)]  # retry/ stays there
    assert max(n for n, _ in samples) == held
    assert max(b for _, b in samples) <= limit.get("max_memory_kb", 1 << 30) * 1024
    engine.kill()  # a graceful stop would wait for the DNS lookups to time out


class Immutable:
    """``chattr +i`` on queue directories: not even root may create files there."""

    def __init__(self) -> None:
        self.paths: set[str] = set()

    def set(self, *paths: str) -> None:
        for path in paths:
            done = subprocess.run(["chattr", "+i", path], capture_output=True, check=False)
            if done.returncode != 0:
                pytest.skip(f"chattr +i is not possible here: {done.stderr.decode().strip()}")
            self.paths.add(path)

    def clear(self, *paths: str) -> None:
        for path in paths:
            subprocess.run(["chattr", "-i", path], check=True)
            self.paths.discard(path)


@pytest.fixture
def immutable():
    made = Immutable()
    yield made
    made.clear(*made.paths)  # else tmp_path could never be removed


STORAGE_FULL = (452, b"4.3.1 Insufficient system storage, try again later")


def refused_for_storage(client, rcpts):
    with pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("a@b.test", rcpts, MESSAGE)
    return (refused.value.smtp_code, refused.value.smtp_error) == STORAGE_FULL


def test_storage_failures_answer_452_and_keep_nothing_of_the_refused_message(
    engine_factory, immutable
):
    # DNS never answers here, so the first relay message stays in memory; the limit is
    # one message, so later relay mail is offloaded to retry/.
    engine = engine_factory(
        {
            "server": {"local_domains": ["local.test"]},
            "queue": {
                "save_incoming": True,
                "use_disk_for_relay": True,
                "max_messages_in_memory": 1,
            },
        }
    )
    incoming, retry = (os.path.join(engine.mailq, d) for d in ("incoming", "retry"))
    attempts = [["x@local.test"], ["r1@remote.example"], ["y@local.test", "r2@remote.example"]]
    with smtp(engine, "127.0.0.1") as c:
        assert c.sendmail("a@b.test", ["r0@remote.example"], MESSAGE) == {}
        immutable.set(incoming, retry)
        for rcpts in attempts:
            assert refused_for_storage(c, rcpts)
        immutable.clear(incoming, retry)
        for rcpts in attempts:  # the client's retries
            assert c.sendmail("a@b.test", rcpts, MESSAGE) == {}
    assert sorted(inf["rcpttosend"] for inf in infs(engine, "incoming")) == [
        "x@local.test",
        "y@local.test",
    ]
    assert sorted(inf["rcpttosend"] for inf in infs(engine, "retry")) == [
        "r1@remote.example",
        "r2@remote.example",
    ]
    assert "message not stored, answered 452: [Errno 1] Operation not permitted" in (
        engine.console()
    )
    engine.kill()  # a graceful stop would wait for the DNS lookup to time out


def test_a_receipt_journal_that_cannot_be_created_answers_452(engine_factory, immutable):
    engine = engine_factory({"queue": {"use_disk_for_relay": True}})
    working = os.path.join(engine.mailq, "working")
    with smtp(engine, "127.0.0.1") as c:
        immutable.set(working)
        assert refused_for_storage(c, ["r0@remote.example"])
        immutable.clear(working)
        assert c.sendmail("a@b.test", ["r0@remote.example"], MESSAGE) == {}
    assert "Traceback" not in engine.console()
    engine.kill()


def test_size_is_advertised_and_both_552_paths_refuse(engine_factory):
    engine = engine_factory(
        {"server": {"local_domains": ["@"]}, "smtp_in": {"max_message_size_bytes": 2048}}
    )
    big = b"Subject: big\r\n\r\n" + b"x" * 76 + b"\r\n" * 0 + (b"y" * 78 + b"\r\n") * 40
    with smtp(engine) as c:
        c.ehlo("client.test")
        assert c.esmtp_features["size"] == "2048"
        with pytest.raises(smtplib.SMTPSenderRefused) as declared:
            c.sendmail("a@b.test", ["x@y.test"], big)  # smtplib sends SIZE=
        assert declared.value.smtp_code == 552
        c.rset()
        assert c.docmd("MAIL FROM:<a@b.test>")[0] == 250  # no SIZE= declared
        assert rcpt_code(c, "x@y.test") == 250
        code, text = c.data(big)
        assert (code, text) == (552, b"5.3.4 Message size exceeds fixed maximum message size")
        assert c.noop()[0] == 250
        assert c.sendmail("a@b.test", ["x@y.test"], MESSAGE) == {}
    unlimited = engine_factory(
        {"server": {"local_domains": ["@"]}, "smtp_in": {"max_message_size_bytes": 0}}
    )
    with smtp(unlimited) as c:
        c.ehlo("client.test")
        assert "size" in c.esmtp_features and c.esmtp_features["size"] == ""


def test_rejected_senders_get_550_and_the_null_sender_is_accepted(engine_factory):
    engine = engine_factory(
        {"server": {"local_domains": ["@"]}, "smtp_in": {"reject_mail_from": ["spammer.com"]}}
    )
    with smtp(engine) as c:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            c.sendmail("bob@SPAMMER.com", ["x@y.test"], MESSAGE)
        assert (refused.value.smtp_code, refused.value.smtp_error) == (
            550,
            b"5.7.1 Sender address rejected",
        )
        c.rset()
        assert c.sendmail("<>", ["x@y.test"], MESSAGE) == {}


def read_reply(sock):
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def connect_from(engine, source):
    sock = socket.create_connection(("127.0.0.1", engine.smtp_port), 10, (source, 0))
    return sock, read_reply(sock)


def test_connection_cap_with_priority_bypass_and_per_ip_cap(engine_factory):
    engine = engine_factory(
        {
            "smtp_in": {
                "max_connections": 2,
                "max_connections_per_ip": 1,
                "priority_ips": ["127.0.0.9"],
            }
        }
    )
    a, greeting = connect_from(engine, "127.0.0.3")
    assert greeting.startswith(b"220 ")
    again, refused = connect_from(engine, "127.0.0.3")
    assert refused.startswith(b"421 4.7.0") and b"from your address" in refused
    b, greeting = connect_from(engine, "127.0.0.4")
    assert greeting.startswith(b"220 ")
    c, refused = connect_from(engine, "127.0.0.5")
    assert refused.startswith(b"421 4.7.0") and b"too many connections" in refused
    assert c.recv(10) == b""  # closed after the 421
    priority = [connect_from(engine, "127.0.0.9") for _ in range(3)]
    assert all(g.startswith(b"220 ") for _, g in priority)
    for s in [a, again, c] + [s for s, _ in priority]:  # priority sessions count too
        s.close()

    def admitted():
        s, g = connect_from(engine, "127.0.0.5")
        s.close()
        return g.startswith(b"220 ")

    wait_for(admitted, what="a freed slot")
    b.close()


def test_replies_to_a_client_that_reads_late_all_arrive_in_order_and_quit_closes(
    engine_factory,
):
    """A client that pipelines thousands of commands and reads nothing until it has sent
    them all fills the socket (the kernel's send buffer grows to 4 MB here): the replies
    the socket cannot take wait in the transport, the later ones after them, and QUIT's
    close waits until all are written."""
    engine = engine_factory({})
    count = 80000
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # full quickly
        sock.settimeout(60)
        sock.connect(("127.0.0.1", engine.smtp_port))
        sock.sendall(b"EHLO c\r\n" + b"EHLO c\r\nNOOP\r\n" * count + b"QUIT\r\n")
        data = b""
        while chunk := sock.recv(1 << 20):  # to the server's close
            data += chunk
    lines = data.split(b"\r\n")
    assert lines[-1] == b""
    finals = [line[:3] for line in lines[:-1] if line[3:4] == b" "]
    # the greeting, EHLO, then EHLO's and NOOP's replies in turn, then QUIT's 221
    assert finals == [b"220", b"250", *([b"250"] * 2 * count), b"221"], len(finals)
    noops = [line for line in lines if line.startswith(b"250 2.0.0 Ok")]
    assert len(noops) == count
    assert len(data) > 8_000_000  # more than the kernel's buffers hold


def test_a_client_that_closes_with_replies_still_queued_leaves_the_server_serving(
    engine_factory,
):
    """The same flood of pipelined commands, but the client closes without reading:
    the replies queued in the transport go nowhere, nothing breaks, and the next
    session (on the same worker: there is one) gets its replies straight away."""
    engine = engine_factory({})
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", engine.smtp_port))
        sock.sendall(b"EHLO c\r\n" + b"EHLO c\r\nNOOP\r\n" * 80000)
        # closed here, unread: with data unread the kernel resets the connection
    with smtp(engine, source="127.0.0.1") as client:
        assert client.noop()[0] == 250
        assert client.ehlo()[0] == 250
    assert "Traceback" not in engine.console()


def test_an_idle_session_gets_421_after_timeout_seconds(engine_factory):
    engine = engine_factory({"smtp_in": {"timeout_seconds": 5}})
    sock, greeting = connect_from(engine, "127.0.0.1")
    with sock:
        sock.settimeout(15)
        sock.sendall(b"EHLO c\r\n")
        assert read_reply(sock).startswith(b"250-")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data == b"421 4.4.2 " + greeting.split()[1] + b" Error: timeout exceeded\r\n"


def test_starttls_then_auth_lets_a_stranger_relay(engine_factory, tmp_path):
    paths = make_certificates(str(tmp_path / "tls"))
    engine = engine_factory(
        {
            "server": {"local_domains": ["local.test"]},
            "smtp_in": {
                "relay_ips": [TRUSTED],
                "tls_certificate": paths["certificate"],
                "tls_private_key": paths["key"],
            },
            "smtp_out": {"paused": True},  # relayed mail waits in retry/ to be read
        },
    )
    result = run_cli("passwd", "--smtp", "--stdin", "--root", engine.root, "joe", input=b"pw1\n")
    assert result.returncode == 0, result.stderr
    users = read_text(os.path.join(engine.root, "config", "smtp-users.txt"))
    assert users.startswith("joe:scrypt$") and ":cram-md5$" in users and "pw1" not in users
    context = ssl.create_default_context(cafile=paths["ca"])
    context.check_hostname = False  # smtplib names the host 127.0.0.1; the chain is verified
    with smtp(engine, STRANGER) as c:
        c.ehlo("client.test")
        assert "starttls" in c.esmtp_features
        wait_for(lambda: c.ehlo("client.test") and "auth" in c.esmtp_features, what="users")
        assert c.esmtp_features["auth"].split() == ["CRAM-MD5"]  # no PLAIN/LOGIN in clear
        assert c.docmd("AUTH PLAIN AGpvZQBwdzE=")[0] == 538
        c.starttls(context=context)
        c.ehlo("client.test")
        assert c.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "CRAM-MD5"]
        c.mail("a@b.test")
        assert rcpt_code(c, "v@remote.example") == 554
        c.rset()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login("joe", "wrong")
        c.user, c.password = "joe", "pw1"
        assert c.auth("PLAIN", c.auth_plain)[0] == 235
        assert c.sendmail("a@b.test", ["v@remote.example"], MESSAGE) == {}
    with smtp(engine, STRANGER) as c:  # CRAM-MD5 needs no TLS
        c.ehlo("client.test")
        assert c.login("joe", "pw1")[0] == 235
        assert c.sendmail("a@b.test", ["w@remote.example"], MESSAGE) == {}
    received = {}
    for inf in infs(engine, "retry"):
        with open(os.path.join(engine.mailq, "retry", inf["messageid"] + ".dat"), "rb") as fh:
            received[inf["rcpttosend"]] = fh.read().split(b" id ", 1)[0]
    assert received["v@remote.example"].endswith(b"with ESMTPSA")
    assert received["w@remote.example"].endswith(b"with ESMTPA")


def log_files_text(engine):
    return "".join(read_text(p) for p in sorted(glob.glob(os.path.join(engine.root, "log", "*"))))


def test_debug_smtp_in_logs_each_dialogue_line_but_no_password(engine_factory):
    engine = engine_factory(
        {
            "server": {"local_domains": ["local.test"]},
            "smtp_in": {"allow_plain_auth_without_tls": True},
            "logs": {"debug_smtp_in": True},
        },
        start=False,
    )
    set_password(os.path.join(engine.root, "config", "smtp-users.txt"), "joe", "pw1")
    engine.start()
    with smtp(engine, STRANGER) as c:
        c.ehlo("client.test")
        c.user, c.password = "joe", "pw1"
        assert c.auth("PLAIN", c.auth_plain)[0] == 235
        assert c.sendmail("a@b.test", ["x@local.test"], MESSAGE) == {}
    engine.wait_log("smtp in 127.0.0.1 > 221 2.0.0 Bye")
    logged = log_files_text(engine)
    for line in (
        "smtp in 127.0.0.1 > 220 ",
        "smtp in 127.0.0.1 < ehlo client.test",
        "smtp in 127.0.0.1 > 250-PIPELINING",
        "smtp in 127.0.0.1 > 250 AUTH PLAIN LOGIN CRAM-MD5",
        "smtp in 127.0.0.1 < AUTH PLAIN (authentication data)",
        "smtp in 127.0.0.1 > 235 2.7.0 Authentication successful",
        "smtp in 127.0.0.1 < mail FROM:<a@b.test> size=",
        " bytes of DATA) .",
        "smtp in 127.0.0.1 > 250 2.0.0 Ok: queued as ",
    ):
        assert line in logged, line
    secret = base64.b64encode(b"\0joe\0pw1").decode()
    assert secret not in logged and "pw1" not in logged


def test_a_bad_certificate_is_one_clear_line_at_start(engine_factory, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    engine = engine_factory({"smtp_in": {"tls_certificate": str(bad)}}, start=False)
    engine.start(wait=False)
    code = engine.wait_exit(timeout=30)
    assert code != 0
    out = engine.console()
    assert "holds no PEM certificate" in out and "tls_certificate" in out
    assert "Traceback" not in out


DELAYED_DSN = (
    b"Subject: Delivery delayed\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
    b"\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
    b"Earlier the server said: 550 5.1.1 user unknown. We keep trying.\r\n"
    b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
    b"Final-Recipient: rfc822; bob@example.net\r\nAction: delayed\r\nStatus: 4.2.2\r\n"
    b"\r\n--B--\r\n"
)


def test_bounces_are_appended_to_hard_and_soft_bounces(relay_engine):
    with smtp(relay_engine, STRANGER) as c:
        c.ehlo("mx.remote.example")
        c.sendmail(
            "<>",
            ["mailengine-bounce-joe%example.com@bounce.test"],
            b"Subject: Undelivered\r\n\r\n<joe@example.com>: 550 5.1.1 user unknown\r\n",
        )
        c.sendmail(
            "<>",
            ["mailengine-bounce-ann%example.org@bounce.test"],
            b"Subject: Delayed\r\n\r\n<ann@example.org>: 452 4.2.2 mailbox full\r\n",
        )
        # RFC 3464: the delivery-status part decides, whatever the text says.
        c.sendmail("<>", ["mailengine-bounce-bob%example.net@bounce.test"], DELAYED_DSN)
        c.sendmail(  # no status code anywhere: still a bounce, recorded as unclassified
            "<>",
            ["mailengine-bounce-eve%example.org@bounce.test"],
            b"Subject: Undeliverable\r\n\r\nYour message could not be delivered.\r\n",
        )
    root = relay_engine.root
    assert read_text(os.path.join(root, "hard-bounces.txt")) == "joe@example.com\n"
    assert read_text(os.path.join(root, "soft-bounces.txt")) == (
        "ann@example.org\nbob@example.net\n"
    )
    assert read_text(os.path.join(root, "unclassified-bounces.txt")) == "eve@example.org\n"
    relay_engine.wait_log("hard bounce (5.1.1) for joe@example.com")
    # save_incoming is on: the bounces themselves are kept like other local mail.
    assert sorted(inf["rcpttosend"] for inf in infs(relay_engine, "incoming")) == [
        "mailengine-bounce-ann%example.org@bounce.test",
        "mailengine-bounce-bob%example.net@bounce.test",
        "mailengine-bounce-eve%example.org@bounce.test",
        "mailengine-bounce-joe%example.com@bounce.test",
    ]


def test_listens_on_each_address_of_a_range_and_port_1_turns_receiving_off(engine_factory):
    engine = engine_factory({"smtp_in": {"listen_ips": ["127.0.0.5-127.0.0.6"]}})
    for ip in ("127.0.0.5", "127.0.0.6"):
        with smtplib.SMTP(ip, engine.smtp_port, timeout=10) as c:
            assert c.noop()[0] == 250
    off = engine_factory({"smtp_in": {"port": 1}})
    off.wait_log("listening on 127.0.0.1:")  # only the web admin
    assert "127.0.0.1:1," not in off.console()


def test_sigterm_lets_a_transaction_in_progress_finish_then_says_421(engine_factory):
    engine = engine_factory({"server": {"local_domains": ["@"]}, "queue": {"save_incoming": True}})
    c = smtp(engine)
    c.ehlo("client.test")
    c.mail("a@b.test")
    c.rcpt("x@y.test")
    idle = smtp(engine)
    idle.ehlo("idle.test")
    engine.proc.send_signal(signal.SIGTERM)
    engine.wait_log("stopping: no new connections")
    assert c.data(MESSAGE)[0] == 250
    # Both sessions were told 421 (read here as the answer to NOOP) and closed.
    assert c.noop()[0] == 421
    assert idle.noop()[0] == 421
    c.close()
    idle.close()
    assert engine.wait_exit(timeout=30) in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
    assert len(infs(engine, "incoming")) == 1


# Each client sends in turn to: a sink (delivered, or deferred with 451 into retry/);
# a domain whose DNS never answers (held in memory, safe only in the receipt journal);
# and split transactions with a local recipient too (incoming/ beside the journal).
SIGKILL_RECIPIENTS = [
    ["v@sink.test"],
    ["w@stuck.test"],
    ["x@local.test", "v@sink.test"],
    ["y@local.test", "w@stuck.test"],
]
QUEUE_ID = re.compile(rb"\bwith E?SMTP\w* id (\S+?)[;\r]")


def queue_id(content: bytes) -> str:
    found = QUEUE_ID.search(content)
    assert found, f"no queue id in the Received header of {content[:300]!r}"
    return found.group(1).decode()


def test_acknowledged_mail_survives_sigkill_with_use_disk_for_relay(engine_factory, sinks):
    sink = sinks("127.0.2.7")
    calls = itertools.count()
    sink.data_reply = lambda msg: (451, "4.3.0 later") if next(calls) % 4 == 0 else None
    settings = {
        "server": {"local_domains": ["local.test"]},
        "queue": {"use_disk_for_relay": True, "save_incoming": True},
        "dns": {"bypass": [route("sink.test", sink)]},
    }
    engine = engine_factory(settings)
    acknowledged: list[tuple[str, list[str]]] = []
    stop = threading.Event()

    def client(first: int) -> None:
        try:
            with smtp(engine, "127.0.0.1") as c:
                for n in itertools.count(first):
                    if stop.is_set():
                        return
                    rcpts = SIGKILL_RECIPIENTS[n % len(SIGKILL_RECIPIENTS)]
                    c.mail("a@b.test")
                    for rcpt in rcpts:
                        c.rcpt(rcpt)
                    code, text = c.data(MESSAGE)
                    if code == 250:
                        acknowledged.append((text.decode().rsplit(" ", 1)[1], rcpts))
        except (smtplib.SMTPException, OSError):
            pass

    workers = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    wait_for(
        lambda: len(acknowledged) >= 300 and len(sink.received()) >= 20,
        timeout=60,
        what="300 acknowledged messages, some of them delivered",
    )
    engine.kill()
    stop.set()
    for w in workers:
        w.join(10)
    acked = list(acknowledged)
    delivered = {queue_id(m.data) for m in sink.received()}
    # Restarted paused, so what it restores stays in retry/ to be read.
    restarted = engine_factory({**settings, "smtp_out": {"paused": True}}, root=engine.root)
    assert glob.glob(os.path.join(engine.mailq, "working", "*")) == []
    retry = {inf["messageid"]: inf for inf in infs(engine, "retry")}
    incoming = {}
    for path in glob.glob(os.path.join(engine.mailq, "incoming", "*.dat")):
        with open(path, "rb") as fh:
            incoming[queue_id(fh.read())] = path
    lost = []
    for message_id, rcpts in acked:
        relay = [r for r in rcpts if not r.endswith("@local.test")]
        if message_id in retry:
            assert retry[message_id]["rcpttosend"] == ",".join(relay)
            with open(os.path.join(engine.mailq, "retry", message_id + ".dat"), "rb") as fh:
                content = fh.read()
            assert content.endswith(MESSAGE) and f" id {message_id}".encode() in content
        elif message_id not in delivered:
            lost.append(message_id)
        if len(relay) < len(rcpts) and message_id not in incoming:
            lost.append(f"{message_id} (its local copy)")
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged messages lost: {lost[:5]}"
    assert any(m in retry for m, r in acked if r == ["w@stuck.test"])
    assert re.search(r"restored [1-9]\d* messages from the receipt journal", restarted.console())


COMMANDS = st.sampled_from(
    [
        b"EHLO x",
        b"HELO x",
        b"MAIL FROM:<a@b.test>",
        b"MAIL FROM:<>",
        b"MAIL FROM:<a@b.test> SIZE=99999999999",
        b"RCPT TO:<x@local.test>",
        b"RCPT TO:<x@remote.example>",
        b"RCPT TO:<@a,@b:x@c>",
        b"DATA",
        b".",
        b"..",
        b"RSET",
        b"NOOP",
        b"VRFY x",
        b"HELP",
        b"AUTH PLAIN",
        b"AUTH PLAIN AAAA",
        b"AUTH LOGIN",
        b"*",
        b"STARTTLS",
        b"BDAT 10",
        b"",
    ]
)
NOISE = st.binary(max_size=200)
# Whole transactions, so random input also reaches DATA, the queue and the journal.
TRANSACTION = st.builds(
    lambda rcpt, body: (
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<%s>\r\nDATA\r\n%s\r\n.\r\n" % (rcpt, body)
    ),
    st.sampled_from(
        [b"x@local.test", b"x@remote.example", b"mailengine-bounce-j%x.test@local.test"]
    ),
    NOISE,
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    script=st.lists(
        st.one_of(COMMANDS.map(lambda c: c + b"\r\n"), NOISE, TRANSACTION), max_size=25
    ),
)
def test_random_commands_and_noise_never_break_the_server(engine_factory, sinks, script):
    engine = fuzz_engine(engine_factory, sinks)
    sock, greeting = connect_from(engine, "127.0.0.1")
    try:
        sock.sendall(b"".join(script))
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        while sock.recv(65536):
            pass
    except OSError:
        pass
    finally:
        sock.close()
    with smtp(engine) as c:  # still answering
        assert c.noop()[0] == 250
    assert "Traceback" not in engine.console()
    assert "Unhandled" not in engine.console()


_FUZZ: dict[int, object] = {}


def fuzz_engine(engine_factory, sinks):
    key = id(engine_factory)
    if key not in _FUZZ:
        _FUZZ.clear()
        engine = engine_factory(
            {
                "server": {"local_domains": ["local.test"]},
                # The fuzzing peer is a stranger: it relays only to remote.example (a
                # sink), never to a domain whose DNS lookup would hold up the stop.
                "dns": {"bypass": [route("remote.example", sinks("127.0.2.8"))]},
                "smtp_in": {
                    "max_message_size_bytes": 1024,
                    "allow_plain_auth_without_tls": True,
                    "relay_ips": ["127.0.0.9"],
                    "relay_domains": ["remote.example"],
                },
                "queue": {"save_incoming": True, "use_disk_for_relay": True},  # the journal too
                "logs": {"debug_smtp_in": True},
            },
            start=False,
        )
        set_password(os.path.join(engine.root, "config", "smtp-users.txt"), "joe", "pw")
        _FUZZ[key] = engine.start()
    return _FUZZ[key]
