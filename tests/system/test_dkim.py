"""DKIM through the real service: keys made by ``mailengine dkim keygen``, published by the
test DNS server, relay mail verified at a sink by dkimpy's own verifier (issue 11)."""

from __future__ import annotations

import email
import fcntl
import os
import re
import signal
import smtplib
import stat
import struct
import termios
import threading
import urllib.request

import dkim
import dns.message
import dns.query
import pytest

from mailengine.signing import multibuffer
from tests.dnsserver import DNSServerProcess
from tests.harness import run_cli, run_twistd, wait_for, write_config
from tests.sinks import route
from tests.system.test_settings import set_live, start_engine

pytestmark = pytest.mark.system

DOMAIN = "example.test"
RSA, ED = "s2026", "ed2026"


def keygen(root, domain, selector, *extra):
    done = run_cli("dkim", "keygen", domain, selector, "--root", str(root), *extra)
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    (record,) = re.findall(r"^  (v=DKIM1; .*)$", out, re.M)
    path = os.path.join(root, "config", "dkim", f"{domain}.{selector}.key")
    return path, record, out


def zone_text(records):
    return "".join(f"{sel}._domainkey.{DOMAIN} 300 TXT {text}\n" for sel, text in records.items())


def txt_lookup(server):
    """dkimpy's ``dnsfunc``: the TXT record, asked of the test DNS server."""

    def lookup(name, timeout=5):
        query = dns.message.make_query(name.decode(), "TXT")
        response, _ = dns.query.udp_with_fallback(query, server.host, timeout, server.port)
        for rrset in response.answer:
            for rdata in rrset:
                return b"".join(rdata.strings)
        return None

    return lookup


def signatures(data):
    fields = email.message_from_bytes(data).get_all("DKIM-Signature") or []
    return [dict(re.findall(r"(\w+)=([^;]*)", "".join(f.split()))) for f in fields]


def verifies(data, lookup):
    """Every DKIM signature of ``data`` verifies (dkimpy: RSA and Ed25519 via PyNaCl)."""
    count = len(signatures(data))
    checker = dkim.DKIM(data)
    return count > 0 and all(checker.verify(idx=i, dnsfunc=lookup) for i in range(count))


def metric(engine, name):
    url = f"http://127.0.0.1:{engine.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return int(re.search(rf"^{re.escape(name)} (\d+)$", text, re.M).group(1))


@pytest.fixture
def published(tmp_path):
    """An RSA-2048 and an Ed25519 key for example.test, made by the command and in DNS."""
    root = tmp_path / "root"
    rsa_path, rsa_record, out = keygen(root, DOMAIN, RSA)
    ed_path, ed_record, _ = keygen(root, DOMAIN, ED, "--algorithm", "ed25519")
    zone = tmp_path / "zone.txt"
    zone.write_text(zone_text({RSA: rsa_record, ED: ed_record}))
    with DNSServerProcess(str(zone)) as server:
        yield {
            "root": root,
            "server": server,
            "zone": zone,
            "records": {RSA: rsa_record, ED: ed_record},
            "paths": (rsa_path, ed_path),
            "keygen_output": out,
        }


def dkim_settings(server, sink):
    return {
        "dkim": {
            "key": [
                {"domain": DOMAIN, "selector": RSA, "key_file": f"dkim/{DOMAIN}.{RSA}.key"},
                {"domain": DOMAIN, "selector": ED, "key_file": f"dkim/{DOMAIN}.{ED}.key"},
            ]
        },
        "dns": {"servers": [server.spec], "bypass": [route("dest.test", sink)]},
        "server": {"local_domains": ["local.test"]},
        "queue": {"save_incoming": True},
    }


EIGHT_BIT = "Grüße aus Köln, ½ € — naïve café\r\n".encode() + b"latin-1 \xe9\xe8\r\n"
MESSAGES = {
    # subject: (From, body); every one reaches the sink signed twice
    "eight-bit": ("News <news@example.test>", EIGHT_BIT),
    "long-line": ("news@example.test", b"x" * 5000 + b"\r\nshort\r\n" + b"y" * 998 + b"\r\n"),
    "dots": ("news@example.test", b".\r\n..\r\n.hidden\r\n...three\r\n. \r\nend\r\n"),
    "no-final-crlf": ("news@example.test", b"first\r\nlast line without CRLF"),
    "trailing-empty-lines": ("news@example.test", b"text\r\n\r\n\r\n\r\n"),
    "bare-line-ends": ("news@example.test", b"lf\nonly\ncr\ronly\r\nmixed \t \n\n"),
    "empty-body": ("news@example.test", b""),
    "subdomain": ("Alerts <alerts@news.Example.TEST>", b"a parent's key signs\r\n"),
    "whitespace": ("news@example.test", b"  lead\r\ntrail  \r\n\tt\tabs\t\r\n"),
    # over signing.accept.INLINE_BYTES (the thread pool's, when the engine signs)
    "large": ("news@example.test", b"z  z\t \r\n" * 20000),
}


def compose(subject, sender, body, extra=b""):
    head = (
        f"From: {sender}\r\nTo: someone@dest.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@example.test>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    ).encode()
    return head + extra + b"\r\n" + body


def by_subject(sink):
    return {email.message_from_bytes(m.data)["Subject"]: m for m in sink.received()}


def test_relay_mail_is_signed_with_rsa_and_ed25519_and_verifies_at_the_sink(
    engine_factory, sinks, published
):
    sink = sinks("127.0.11.1")
    server = published["server"]
    engine = engine_factory(dkim_settings(server, sink), root=published["root"])
    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as client:
        for subject, (sender, body) in MESSAGES.items():
            client.sendmail(
                "bounce@example.test", ["someone@dest.test"], compose(subject, sender, body)
            )
        client.sendmail(
            "bounce@example.test",
            ["someone@dest.test"],
            compose(
                "folded", "news@example.test", b"hi\r\n", b"X-Long: a\r\n  folded\r\n\tvalue\r\n"
            ),
        )
    names = [*MESSAGES, "folded"]
    wait_for(lambda: len(sink.received()) == len(names), timeout=30, what="every message")
    got = by_subject(sink)
    lookup = txt_lookup(server)
    for subject in names:
        data = got[subject].data
        sigs = signatures(data)
        assert [s["a"] for s in sigs] == ["rsa-sha256", "ed25519-sha256"], subject
        assert {s["d"] for s in sigs} == {DOMAIN} and [s["s"] for s in sigs] == [RSA, ED]
        assert all(s["c"] == "relaxed/relaxed" for s in sigs)
        # From is signed once more than it appears: a second From breaks the signature.
        assert all(s["h"].split(":").count("from") == 2 for s in sigs), sigs
        assert verifies(data, lookup), subject
        tampered = data.replace(b"\r\n\r\n", b"\r\nFrom: evil@attacker.test\r\n\r\n", 1)
        assert not dkim.DKIM(tampered).verify(idx=0, dnsfunc=lookup), subject
    assert got["dots"].data.endswith(b"\r\n.\r\n..\r\n.hidden\r\n...three\r\n. \r\nend\r\n")
    assert EIGHT_BIT in got["eight-bit"].data
    assert b"x" * 5000 + b"\r\n" in got["long-line"].data
    assert metric(engine, 'mailengine_dkim_messages_total{outcome="signed"}') == len(names)
    # [dkim] separate_process (on by default): its signing process signed them all.
    assert metric(engine, "mailengine_dkim_signed_in_engine_total") == 0
    assert "Traceback" not in engine.console()


def signing_process_pid(engine):
    with open(f"/proc/{engine.proc.pid}/task/{engine.proc.pid}/children") as fh:
        (pid,) = [int(p) for p in fh.read().split()]
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        assert b"mailengine.signing.worker" in fh.read()
    return pid


def test_without_a_separate_process_the_engine_signs_itself(engine_factory, sinks, published):
    sink = sinks("127.0.11.8")
    server = published["server"]
    settings = dkim_settings(server, sink)
    settings["dkim"]["separate_process"] = False
    engine = engine_factory(settings, root=published["root"])
    with open(f"/proc/{engine.proc.pid}/task/{engine.proc.pid}/children") as fh:
        assert fh.read().split() == []
    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as client:
        client.sendmail(
            "b@example.test", ["a@dest.test"], compose("inline", "n@example.test", b"x\r\n")
        )
    wait_for(lambda: sink.received(), what="the message")
    assert verifies(sink.received()[0].data, txt_lookup(server))
    assert metric(engine, "mailengine_dkim_signed_in_engine_total") == 0  # not a fallback


def test_when_the_signing_process_dies_the_engine_signs_and_counts_it(
    engine_factory, sinks, published
):
    sink = sinks("127.0.11.7")
    server = published["server"]
    engine = engine_factory(dkim_settings(server, sink), root=published["root"])
    os.kill(signing_process_pid(engine), signal.SIGKILL)
    engine.wait_log("the DKIM signing process failed (exit code None, signal 9)")
    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as client:
        for subject in ("after-1", "after-2"):
            client.sendmail(
                "b@example.test", ["a@dest.test"], compose(subject, "n@example.test", b"x\r\n")
            )
    wait_for(lambda: len(sink.received()) == 2, timeout=30, what="both messages")
    for message in sink.received():
        assert verifies(message.data, txt_lookup(server))
    assert metric(engine, "mailengine_dkim_signed_in_engine_total") == 2
    assert engine.console().count("the DKIM signing process failed") == 1


def queued_bytes(pid):
    """Bytes waiting in the signing process's stdin pipe (FIONREAD on a second read end,
    opened through /proc; nothing is read from it)."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    finally:
        os.close(fd)


def test_messages_waiting_together_are_signed_eight_at_a_time_and_all_verify(
    engine_factory, sinks, published
):
    """[dkim] rsa_multi_buffer (on by default): with the signing process stopped, twelve
    sessions' messages wait in its pipe; let go, it reads them at once and signs them with
    Intel's multi-buffer RSA (a group of eight and one of four). Every one verifies."""
    library, why = multibuffer.load()
    if library is None:
        pytest.skip(f"multi-buffer RSA: {why}")
    sink = sinks("127.0.11.9")
    server = published["server"]
    engine = engine_factory(dkim_settings(server, sink), root=published["root"])
    engine.wait_log(f"DKIM RSA signatures: {why}, up to eight at a time")
    pid = signing_process_pid(engine)
    os.kill(pid, signal.SIGSTOP)
    count = 12

    def send(i):
        with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=60) as client:
            body = b"message %d\r\n" % i
            client.sendmail(
                "b@example.test", ["a@dest.test"], compose(f"m{i}", "n@example.test", body)
            )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(count)]
    try:
        for thread in threads:
            thread.start()
        # Each SIGN frame is longer than 300 bytes: all twelve are in the pipe.
        wait_for(lambda: queued_bytes(pid) > 300 * count, what="twelve messages waiting")
        assert not sink.received()
    finally:
        os.kill(pid, signal.SIGCONT)
        for thread in threads:
            thread.join(60)
    wait_for(lambda: len(sink.received()) == count, timeout=30, what="every message")
    lookup = txt_lookup(server)
    for message in sink.received():
        assert [s["a"] for s in signatures(message.data)] == ["rsa-sha256", "ed25519-sha256"]
        assert verifies(message.data, lookup)
    assert metric(engine, "mailengine_dkim_signed_in_engine_total") == 0
    assert "Traceback" not in engine.console()


def test_with_multi_buffer_off_the_log_says_openssl(engine_factory, sinks, published):
    settings = dkim_settings(published["server"], sinks("127.0.11.10"))
    settings["dkim"]["rsa_multi_buffer"] = False
    engine = engine_factory(settings, root=published["root"])
    engine.wait_log("DKIM RSA signatures: OpenSSL (multi-buffer RSA off)")


def test_unsignable_unkeyed_and_local_mail_goes_unsigned_and_only_unsignable_is_counted(
    engine_factory, sinks, published
):
    sink = sinks("127.0.11.2")
    server = published["server"]
    engine = engine_factory(dkim_settings(server, sink), root=published["root"])
    two_froms = compose("two-froms", "news@example.test", b"x\r\n", b"From: other@example.test\r\n")
    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as client:
        client.sendmail("b@example.test", ["someone@dest.test"], two_froms)
        client.sendmail(
            "b@nokey.test", ["someone@dest.test"], compose("no-key", "a@nokey.test", b"x\r\n")
        )
        client.sendmail(
            "b@example.test",
            ["someone@dest.test"],
            compose("lookalike", "a@notexample.test", b"x\r\n"),  # not a subdomain
        )
        # One transaction for a local and a relay recipient: only the relay copy is signed.
        client.sendmail(
            "b@example.test",
            ["me@local.test", "someone@dest.test"],
            compose("split", "news@example.test", b"x\r\n"),
        )
    wait_for(lambda: len(sink.received()) == 4, timeout=30, what="four messages")
    got = by_subject(sink)
    for subject in ("two-froms", "no-key", "lookalike"):
        assert b"DKIM-Signature" not in got[subject].data, subject
    assert verifies(got["split"].data, txt_lookup(server))
    incoming = os.path.join(engine.mailq, "incoming")
    (dat,) = [n for n in os.listdir(incoming) if n.endswith(".dat")]
    with open(os.path.join(incoming, dat), "rb") as fh:
        local = fh.read()
    assert b"Subject: split" in local and b"DKIM-Signature" not in local
    engine.wait_log("not DKIM-signed, sent unsigned: it has 2 From: fields")
    assert metric(engine, 'mailengine_dkim_messages_total{outcome="unsignable"}') == 1
    assert metric(engine, 'mailengine_dkim_messages_total{outcome="signed"}') == 1


def test_headers_and_canonicalization_changed_through_the_api_sign_the_next_message(
    engine_factory, sinks, published
):
    sink = sinks("127.0.11.3")
    server = published["server"]
    engine = start_engine(engine_factory, dkim_settings(server, sink), root=published["root"])

    def send(subject):
        with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as client:
            client.sendmail(
                "b@example.test", ["a@dest.test"], compose(subject, "n@example.test", b"x  y\r\n")
            )
        wait_for(lambda: subject in by_subject(sink), what=subject)
        return by_subject(sink)[subject].data

    first = signatures(send("before"))[0]
    assert "subject" in first["h"].split(":") and first["c"] == "relaxed/relaxed"
    set_live(engine, "dkim", "headers", ["from", "to", "message-id"])
    set_live(engine, "dkim", "canonicalization", "simple/simple")
    data = send("after")
    after = signatures(data)[0]
    assert after["h"].split(":") == ["from", "from", "to", "message-id"]
    assert after["c"] == "simple/simple"
    assert verifies(data, txt_lookup(server))


def test_keygen_writes_a_private_key_file_and_check_compares_it_with_dns(tmp_path, published):
    root, server = published["root"], published["server"]
    rsa_path, ed_path = published["paths"]
    for path in (rsa_path, ed_path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with open(path, encoding="ascii") as fh:
            assert fh.read().startswith("-----BEGIN PRIVATE KEY-----")
    out = published["keygen_output"]
    assert f"Publish this TXT record at {RSA}._domainkey.{DOMAIN}" in out
    assert f'selector = "{RSA}"' in out and f'key_file = "dkim/{DOMAIN}.{RSA}.key"' in out
    assert published["records"][RSA].startswith("v=DKIM1; k=rsa; p=MIIB")
    assert published["records"][ED].startswith("v=DKIM1; k=ed25519; p=")
    again = run_cli("dkim", "keygen", DOMAIN, RSA, "--root", str(root))
    assert again.returncode == 1 and b"exists; not overwritten" in again.stderr
    weak = run_cli("dkim", "keygen", DOMAIN, "weak", "--bits", "1024", "--root", str(root))
    assert weak.returncode == 1 and b"DKIM needs 2048 or more" in weak.stderr

    config = os.path.join(root, "config", "mailengine.toml")
    keys = [
        {"domain": DOMAIN, "selector": RSA, "key_file": f"dkim/{DOMAIN}.{RSA}.key"},
        {"domain": DOMAIN, "selector": ED, "key_file": f"dkim/{DOMAIN}.{ED}.key"},
    ]
    write_config(config, {"dkim": {"key": keys}, "dns": {"servers": [server.spec]}})
    good = run_cli("dkim", "check", DOMAIN, "--root", str(root))
    assert good.returncode == 0, good.stdout + good.stderr
    text = good.stdout.decode()
    assert f"OK    {RSA}._domainkey.{DOMAIN}: the published rsa key matches" in text
    assert f"OK    {ED}._domainkey.{DOMAIN}: the published ed25519 key matches" in text
    assert server.queries().count((f"{RSA}._domainkey.{DOMAIN}", "TXT")) >= 1

    # DNS now publishes another RSA key under the selector, and nothing for the other.
    _, other, _ = keygen(tmp_path / "elsewhere", DOMAIN, RSA)
    published["zone"].write_text(zone_text({RSA: other}))
    bad = run_cli("dkim", "check", DOMAIN, "--root", str(root))
    assert bad.returncode == 1
    text = bad.stdout.decode()
    assert f"WRONG {RSA}._domainkey.{DOMAIN}: the published key does NOT match" in text
    assert f"WRONG {ED}._domainkey.{DOMAIN}: {ED}._domainkey.{DOMAIN} does not exist" in text
    # An NS bypass line sends the engine's questions about example.test to another
    # server (the right one here), whatever [dns] servers says: the check asks it too.
    write_config(
        config,
        {
            "dkim": {"key": keys},
            "dns": {"servers": ["127.0.0.1:1"], "bypass": [f"{DOMAIN},ns,NS,{server.spec}"]},
        },
    )
    published["zone"].write_text(zone_text(published["records"]))
    pinned = run_cli("dkim", "check", DOMAIN, "--root", str(root))
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    none = run_cli("dkim", "check", "other.test", "--root", str(root))
    assert none.returncode == 1 and b"has no [[dkim.key]] for other.test" in none.stderr


def test_a_missing_or_unusable_key_file_stops_the_start_naming_the_file(tmp_path):
    root = tmp_path / "root"
    config = root / "config"
    (config / "dkim").mkdir(parents=True)
    (config / "dkim" / "bad.key").write_text("not a key\n")
    keys = [
        {"domain": DOMAIN, "selector": "gone", "key_file": "dkim/missing.key"},
        {"domain": DOMAIN, "selector": "bad", "key_file": "dkim/bad.key"},
    ]
    write_config(str(config / "mailengine.toml"), {"dkim": {"key": keys}})
    done = run_twistd(str(root))
    text = (done.stdout + done.stderr).decode()
    assert done.returncode != 0
    assert f"key_file {config}/dkim/missing.key: cannot read: No such file or directory" in text
    assert f"key_file {config}/dkim/bad.key: not an unencrypted PEM private key" in text
    assert "Traceback" not in text
    checked = run_cli("check-config", "--root", str(root))
    assert checked.returncode == 1 and b"2 problem(s)" in checked.stdout


def test_mail_queued_by_mailengine_send_is_signed_like_mail_received_over_smtp(
    engine_factory, sinks, published
):
    sink = sinks("127.0.11.4")
    server = published["server"]
    settings = dkim_settings(server, sink)
    settings["queue"]["check_interval_seconds"] = 1  # picks up mailq/retry/ files at once
    engine = engine_factory(settings, root=published["root"])
    root = str(published["root"])
    message = b"From: news@example.test\nTo: someone@dest.test\nSubject: sent\n\nby file\n"
    done = run_cli(
        "send", "--from", "b@example.test", "someone@dest.test", "--root", root, input=message
    )
    assert done.returncode == 0, done.stderr
    two = b"From: a@example.test\nFrom: b@example.test\nSubject: two\n\nx\n"
    done = run_cli("send", "someone@dest.test", "--root", root, input=two)
    assert (
        done.returncode == 0 and b"warning: not DKIM-signed: it has 2 From: fields" in done.stderr
    )
    wait_for(lambda: len(sink.received()) == 2, timeout=30, what="both queued messages")
    got = by_subject(sink)
    assert verifies(got["sent"].data, txt_lookup(server))
    assert b"DKIM-Signature" not in got["two"].data
    assert "Traceback" not in engine.console()


def test_the_engines_own_dsn_is_signed_when_a_key_covers_its_name(engine_factory, sinks, published):
    target, home = sinks("127.0.11.5"), sinks("127.0.11.6")
    target.rcpt_reply = lambda rcpt: (550, f"5.1.1 <{rcpt}>... no such user")
    server = published["server"]
    settings = dkim_settings(server, target)
    settings["dns"]["bypass"].append(route("home.test", home))
    settings["queue"]["use_dsn"] = True
    # The DSN comes From: MAILER-DAEMON@mx.example.test: example.test's keys sign it.
    settings["server"]["helo_text"] = "mx.example.test"
    engine = engine_factory(settings, root=published["root"])
    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as client:
        client.sendmail(
            "sender@home.test", ["gone@dest.test"], compose("bounced", "a@home.test", b"x\r\n")
        )
    wait_for(lambda: home.received(), what="the DSN")
    [dsn] = home.received()
    assert b"From: MAILER-DAEMON@mx.example.test" in dsn.data
    assert [s["a"] for s in signatures(dsn.data)] == ["rsa-sha256", "ed25519-sha256"]
    assert verifies(dsn.data, txt_lookup(server))
