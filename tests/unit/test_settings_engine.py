"""Settings read while the engine is built (restart-only), checked without running it."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from mailengine.config.model import Config
from mailengine.service import build_engine


class PoolSizingReactor(MemoryReactorClock):
    """Records the thread pool sizes the engine asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.pool_sizes: list[int] = []

    def suggestThreadPoolSize(self, size: int) -> None:
        self.pool_sizes.append(size)


def test_max_threads_sizes_the_thread_pool_for_disk_and_password_work(tmp_path):
    config = Config.defaults()
    config.apply("dns", "servers", ["127.0.0.1:1"])  # never the machine's resolv.conf
    config.apply("server", "max_threads", 7)
    reactor = PoolSizingReactor()
    build_engine(str(tmp_path), config, reactor)
    assert reactor.pool_sizes == [7]
