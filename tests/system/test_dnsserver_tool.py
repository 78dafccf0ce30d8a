"""tests/dnsserver.py as other tests use it: a subprocess with a zone file it re-reads."""

import os
import socket

import pytest
from twisted.names import dns

from tests.dnsserver import DNSServerProcess, Zone
from tests.harness import wait_for


def ask(port, name, kind):
    query = dns.Message(id=4321)
    query.queries = [dns.Query(name, getattr(dns, kind))]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(query.toStr(), ("127.0.0.1", port))
        reply = dns.Message()
        reply.fromStr(s.recv(4096))
    return reply


def test_the_zone_text_reads_every_kind_and_names_a_bad_line():
    zone = Zone().load_text(
        "a.test 60 MX 10 mx.a.test  # comment\nmx.a.test 60 A 127.0.0.2\n"
        "mx.a.test 60 AAAA ::1\nb.test 60 CNAME a.test\nn.test 60 MX 0 .\n"
        "a.test 60 SOA 30\nbroken.test servfail\n\n"
    )
    assert zone.reply("b.test", "MX").answers[1].data == "mx.a.test"
    assert zone.reply("n.test", "MX").answers[0].data == ""
    assert zone.reply("broken.test", "A").rcode == "SERVFAIL"
    assert zone.reply("x.a.test", "MX").authority[0].number == 30
    with pytest.raises(ValueError, match="zone line 2"):
        Zone().load_text("a.test 60 MX 10 mx.a.test\na.test sixty A 1.2.3.4\n")


def test_the_subprocess_answers_logs_queries_and_rereads_a_changed_zone(tmp_path):
    path = tmp_path / "zone.txt"
    path.write_text("a.test 60 A 127.0.0.2\n")
    with DNSServerProcess(str(path)) as server:
        reply = ask(server.port, "a.test", "A")
        assert reply.rCode == dns.OK and reply.answers[0].payload.dottedQuad() == "127.0.0.2"
        path.write_text("a.test 60 A 127.0.0.3\n")
        os.utime(path, ns=(1, 1))  # a different mtime even within one clock tick
        assert ask(server.port, "a.test", "A").answers[0].payload.dottedQuad() == "127.0.0.3"
        assert ask(server.port, "gone.test", "MX").rCode == dns.ENAME
        wait_for(lambda: len(server.queries()) == 3)
        assert server.queries() == [("a.test", "A"), ("a.test", "A"), ("gone.test", "MX")]
