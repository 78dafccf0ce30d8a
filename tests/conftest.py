import os

import pytest
from hypothesis import settings

from tests.dnsserver import dns_server  # noqa: F401  (fixture: in-process test DNS server)
from tests.harness import EngineProcess
from tests.redisserver import redis_server  # noqa: F401  (fixture: a real redis-server)
from tests.sinks import SinkServer

# No per-example deadline: on a shared machine a slow example is load, not a bug (timing
# is bench/'s business); hypothesis otherwise fails a test whose example took > 200 ms.
settings.register_profile("mailengine", deadline=None)
settings.load_profile("mailengine")


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
