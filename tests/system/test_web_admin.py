"""The web admin served by the real engine: /metrics, quiet access log, downloads, shutdown."""

import os
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailengine.config.passwords import set_password
from tests.harness import run_cli, wait_for

pytestmark = pytest.mark.system
TOKEN = "web-test-token-0123456789"


@pytest.fixture
def engine(engine_factory):
    proc = engine_factory(
        # Paused: queued mail stays in retry/ for /metrics to count.
        {
            "queue": {"check_interval_seconds": 1},
            "web": {"api_token": TOKEN},
            "smtp_out": {"paused": True},
        },
        start=False,
    )
    set_password(os.path.join(proc.root, "config", "password.txt"), "admin", "pw")
    return proc.start()


def get(engine, path, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{engine.web_port}{path}", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.status, dict(r.headers), r.read()


def test_metrics_from_the_running_engine_parse_and_need_no_login(engine):
    result = run_cli("send", "--root", engine.root, "a@x.test", input=b"Subject: m\n\nbody\n")
    assert result.returncode == 0, result.stderr

    def sample():
        _, headers, body = get(engine, "/metrics")
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        values = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                values[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return values

    # The index is per-domain (after the engine's next scan, cached a few seconds).
    x_test = ("mailengine_destination_queued_recipients", (("domain", "x.test"),))
    values = wait_for(lambda: (v := sample()).get(x_test) == 1 and v, what="x.test in /metrics")
    assert values[("mailengine_queue_messages", (("dir", "retry"),))] == 1
    assert values[("mailengine_sending_paused", ())] == 1
    assert ("mailengine_recipients_total", (("outcome", "sent"),)) in values


def test_requests_are_not_logged_one_line_each(engine):
    for _ in range(5):
        get(engine, "/metrics")
        get(engine, "/api/status", TOKEN)
    text = engine.console()
    assert "GET /metrics" not in text and '"GET ' not in text and "/api/status" not in text


def test_a_large_bounce_file_downloads_whole(engine):
    lines = b"".join(b"user%07d@gone.test\n" % i for i in range(200_000))  # ~4 MB: streamed
    with open(os.path.join(engine.root, "hard-bounces.txt"), "wb") as fh:
        fh.write(lines)
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    base = f"http://127.0.0.1:{engine.web_port}"
    page = opener.open(base + "/gui/admin/login", timeout=10).read().decode()
    token = page.split('name="login_token" value="')[1].split('"')[0]
    form = f"user=admin&password=pw&login_token={token}&next=/gui/admin".encode()
    assert opener.open(base + "/gui/admin/login", form, timeout=10).status == 200
    with opener.open(base + "/gui/admin/logs/file/hard-bounces.txt", timeout=30) as r:
        assert r.headers["Content-Disposition"] == 'attachment; filename="hard-bounces.txt"'
        assert r.read() == lines
    with opener.open(base + "/static/admin.css", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/css") and b".tile" in r.read()


def test_shutdown_from_the_api_stops_the_engine_gracefully(engine):
    request = urllib.request.Request(
        f"http://127.0.0.1:{engine.web_port}/api/control/shutdown",
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200
    assert engine.wait_exit(timeout=30) == 0
    text = engine.console()
    assert "web admin api-token: shutdown requested" in text and "stopped;" in text
