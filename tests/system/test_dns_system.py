"""DNS through the real service: preload asks the configured server at start-up."""

import pytest

from tests.dnsserver import DNSServerProcess
from tests.harness import wait_for

pytestmark = pytest.mark.system

ZONE = """\
example.test        5 MX 10 mx1.example.test
example.test        5 MX 20 mx2.example.test
mx1.example.test  300 A  127.0.0.11
mx2.example.test  300 A  127.0.0.12
test              300 SOA 60
"""


def test_preload_domains_are_looked_up_at_start_and_kept_warm_on_the_configured_server(
    engine_factory, tmp_path
):
    zone = tmp_path / "zone.txt"
    zone.write_text(ZONE)
    with DNSServerProcess(str(zone)) as dns:
        engine = engine_factory(
            {
                "dns": {"servers": [dns.spec], "preload_domains": ["example.test", "nope.test"]},
                "logs": {"debug_dns": True},
            }
        )
        engine.wait_log(f"DNS query example.test MX to {dns.spec}")
        engine.wait_log(
            "DNS lookup succeeded, found 2 acceptable mail servers for example.test (dns): "
            "10 mx1.example.test [127.0.0.11], 20 mx2.example.test [127.0.0.12]"
        )
        engine.wait_log(f"DNS answer nope.test MX from {dns.spec}: NXDOMAIN")
        engine.wait_log("DNS lookup failed: nope.test does not exist (NXDOMAIN) (permanent)")
        assert sorted(dns.queries()) == [("example.test", "MX"), ("nope.test", "MX")]
        # example.test's 5 s answer is asked again before it expires; nope.test (60 s) is not
        wait_for(lambda: dns.queries().count(("example.test", "MX")) == 2, timeout=15)
        assert dns.queries().count(("nope.test", "MX")) == 1
        engine.stop()
        assert "stopped; 0 messages wait in retry/" in engine.console()
        assert "Traceback" not in engine.console()
        assert "UDP Port" not in engine.console()
