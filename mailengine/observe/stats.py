"""The periodic statistics lines (manual §8), logged when anything moved."""

from __future__ import annotations

from typing import Any, Protocol

from twisted.application import service
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from mailengine.config.model import Config
from mailengine.observe import statslines
from mailengine.observe.counters import Counters

log = Logger(namespace="mailengine.stats")


class QueueMemory(Protocol):
    """The live queue's memory use (``LiveQueue``)."""

    @property
    def memory_count(self) -> int: ...

    @property
    def memory_bytes(self) -> int: ...


class StatsParts(Protocol):
    """What the stats lines need of the engine (``Engine``)."""

    @property
    def counters(self) -> Counters: ...

    @property
    def config(self) -> Config: ...

    @property
    def reactor(self) -> Any: ...

    @property
    def queue(self) -> QueueMemory: ...


class StatsReporter(service.Service):
    def __init__(self, engine: StatsParts) -> None:
        self.engine = engine
        self._call: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()
        self.engine.counters.interval_start = self.engine.reactor.seconds()
        self.engine.config.subscribe(self._setting_changed)
        self._schedule()

    def _setting_changed(self, section: str, key: str, value: Any) -> None:
        # A new interval counts from now, not after the old (maybe long) wait.
        call = self._call
        if (
            (section, key) == ("logs", "stats_interval_seconds")
            and call is not None
            and call.active()
        ):
            call.reset(value or 10)

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self.tick()  # the last interval too, so the totals cover the whole run

    def _schedule(self) -> None:
        interval = self.engine.config.logs.stats_interval_seconds
        # 0 = off; look again later in case it is switched on at run time.
        self._call = self.engine.reactor.callLater(interval or 10, self.tick)

    def tick(self) -> None:
        engine = self.engine
        if engine.config.logs.stats_interval_seconds > 0:
            for line in self.lines(engine.reactor.seconds()):
                log.info("{line}", line=line)
        if self.running:
            self._schedule()

    def lines(self, now: float) -> list[str]:
        counters = self.engine.counters
        iv = counters.close_interval(now)
        out: list[str] = []
        if iv.recv_inbound or iv.recv_relay:
            out.append(
                statslines.recv_line(
                    iv.recv_inbound, iv.recv_relay, iv.elapsed, counters.total_recv
                )
            )
        if iv.sent:
            out.append(statslines.sent_line(iv.sent, iv.elapsed, counters.total_sent))
        if out:
            logs = self.engine.config.logs
            if logs.log_queue_size:
                out.append(statslines.queue_size_line(self.engine.queue.memory_count))
            if logs.log_queue_memory:
                kilobytes = -(-self.engine.queue.memory_bytes // 1024)  # any data shows as >= 1
                out.append(statslines.queue_memory_line(kilobytes))
        return out
