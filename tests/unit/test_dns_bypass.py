import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailengine.dns.answer import Destination, Target
from mailengine.dns.bypass import BypassEntry, BypassError, BypassTable, parse_bypass_line
from mailengine.dns.targets import bypass_destination


def test_the_manuals_two_example_lines_parse():
    mx = parse_bypass_line("foo.example.com,mail1.example.com,MX,192.168.0.27")
    ns = parse_bypass_line("example.com,dns1.example.com,NS,192.168.0.5")
    assert mx == BypassEntry("foo.example.com", "mail1.example.com", "MX", "192.168.0.27", None)
    assert ns == BypassEntry("example.com", "dns1.example.com", "NS", "192.168.0.5", None)


@pytest.mark.parametrize(
    ("line", "ip", "port"),
    [
        ("a.test,mx.a.test,MX,127.0.0.9:2525", "127.0.0.9", 2525),
        ("a.test,mx.a.test,MX,[::1]:2525", "::1", 2525),
        ("a.test,mx.a.test,MX,[::1]", "::1", None),
        ("a.test,mx.a.test,MX,::1", "::1", None),
        (" @A.Test. , MX.A.test. , mx , 127.0.0.9 ", "127.0.0.9", None),
    ],
)
def test_addresses_take_an_optional_port_and_names_are_normalised(line, ip, port):
    entry = parse_bypass_line(line)
    assert (entry.domain, entry.host, entry.kind) == ("a.test", "mx.a.test", "MX")
    assert (entry.ip, entry.port) == (ip, port)


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("a.test,mx.a.test,MX", "4 comma-separated fields"),
        ("a.test,mx.a.test,MX,1.2.3.4,extra", "4 comma-separated fields"),
        (",mx.a.test,MX,1.2.3.4", "bad domain"),
        ("a.test,,MX,1.2.3.4", "bad host name"),
        ("a.test,mx.a.test,A,1.2.3.4", "type must be MX or NS"),
        ("a.test,mx.a.test,MX,mx.a.test", "is not an IP address"),
        ("a.test,mx.a.test,MX,1.2.3.4:x", "bad port"),
        ("a.test,mx.a.test,MX,1.2.3.4:70000", "out of range"),
        ("a.test,mx.a.test,MX,[::1]x", "bad port"),
    ],
)
def test_a_bad_line_is_quoted_with_what_is_wrong(line, complaint):
    with pytest.raises(BypassError) as info:
        parse_bypass_line(line)
    assert complaint in str(info.value) and repr(line) in str(info.value)


@given(st.integers(1, 65535), st.ip_addresses(v=4))
def test_any_ipv4_and_port_round_trip(port, ip):
    entry = parse_bypass_line(f"a.test,mx.a.test,MX,{ip}:{port}")
    assert (entry.ip, entry.port) == (str(ip), port)


def table(*lines):
    return BypassTable.from_entries(parse_bypass_line(line) for line in lines)


def test_several_mx_lines_for_one_domain_are_several_hosts_in_file_order():
    t = table(
        "a.test,second.a.test,MX,127.0.0.2",
        "b.test,other.b.test,MX,127.0.0.3",
        "a.test,first.a.test,MX,127.0.0.1:2525",
    )
    assert [e.host for e in t.mx_for("A.test.")] == ["second.a.test", "first.a.test"]
    assert t.mx_for("sub.a.test") == []  # MX lines pin exactly their domain


def test_an_mx_bypass_becomes_targets_in_file_order_with_the_lines_port():
    t = table("a.test,second.a.test,MX,127.0.0.2", "a.test,first.a.test,MX,127.0.0.1:2525")
    assert bypass_destination("a.test", t.mx_for("a.test")) == Destination(
        "a.test",
        (
            Target(0, "second.a.test", ("127.0.0.2",), None),
            Target(1, "first.a.test", ("127.0.0.1",), 2525),
        ),
        source="bypass",
    )


def test_an_ns_line_covers_its_domain_and_every_subdomain_nearest_first():
    t = table("example.test,ns.example.test,NS,127.0.0.5", "deep.example.test,ns2,NS,127.0.0.6")
    assert t.nameserver_for("example.test").ip == "127.0.0.5"
    assert t.nameserver_for("mx1.Example.Test.").ip == "127.0.0.5"
    assert t.nameserver_for("a.deep.example.test").ip == "127.0.0.6"
    assert t.nameserver_for("notexample.test") is None
    assert t.nameserver_for("test") is None
