import os

import pytest

from tests.dnsserver import dns_server  # noqa: F401  (fixture: in-process test DNS server)
from tests.harness import EngineProcess
from tests.sinks import SinkServer


@pytest.fixture
def engine_factory(tmp_path):
    """Start real engines on loopback ports; every one is stopped at the end of the test."""
    started: list[EngineProcess] = []

    def make(settings=None, *, root=None, start=True, **kwargs) -> EngineProcess:
        root = root or tmp_path / f"root{len(started)}"
        os.makedirs(root, exist_ok=True)
        proc = EngineProcess(str(root), settings, **kwargs)
        started.append(proc)
        if start:
            proc.start()
        return proc

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture
def sinks():
    """Sink SMTP servers on loopback addresses (``sinks("127.0.1.1")``), closed at the end."""
    made: list[SinkServer] = []

    def make(host: str) -> SinkServer:
        sink = SinkServer(host)
        made.append(sink)
        return sink

    yield make
    for sink in made:
        sink.close()
