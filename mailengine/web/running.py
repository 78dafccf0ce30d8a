"""What the web admin asks of the running engine: narrow typed views of the engine's
parts, one per room of the web admin (``Engine`` satisfies each), and ``Running``.

service.py hands the web admin the engine's parts and one ``Running`` with the
services it made (tests put fakes in it); nothing else of the service is in the
web's reach.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

import attrs

from mailengine.config.model import Config
from mailengine.delivery.status import DeliveryStatus
from mailengine.observe.counters import Counters
from mailengine.observe.eventlog import EventLog
from mailengine.observe.recent import RecentFailures
from mailengine.queue.live import LiveQueue
from mailengine.queue.store import QueueStore
from mailengine.queue.suppression import SuppressionList
from mailengine.signing.signer import Signer


class QueueParts(Protocol):
    """Messages held in memory and their actions (web/inmemory.py)."""

    @property
    def queue(self) -> LiveQueue: ...


class QueueActionParts(QueueParts, Protocol):
    """The queue pages' actions: files, memory, the event log (web/queuecontrol.py)."""

    @property
    def store(self) -> QueueStore: ...

    @property
    def events(self) -> EventLog: ...


class SnapshotParts(QueueParts, Protocol):
    """The dashboard's, ``/api/status``'s and ``/metrics``' picture (web/snapshot.py)."""

    @property
    def config(self) -> Config: ...

    @property
    def counters(self) -> Counters: ...

    @property
    def name(self) -> str: ...

    @property
    def test_mode(self) -> bool: ...

    @property
    def recent_failures(self) -> RecentFailures: ...


class WebParts(QueueActionParts, SnapshotParts, Protocol):
    """Everything the web admin's pages use (web/admin.py's ``WebAdmin.engine``)."""

    @property
    def reactor(self) -> Any: ...

    @property
    def root(self) -> str: ...

    @property
    def config_dir(self) -> str: ...

    @property
    def log_dir(self) -> str: ...

    @property
    def signer(self) -> Signer: ...

    @property
    def suppression(self) -> SuppressionList | None: ...

    def root_file(self, name: str) -> str: ...


class TakenMessage(Protocol):
    """A message the delivery engine took for an attempt."""

    @property
    def is_on_a_connection(self) -> bool:
        """In a transaction now (else waiting for a connection)."""


class Delivery(Protocol):
    """The delivery engine (``DeliveryEngine``) as the web admin sees it."""

    @property
    def attempts(self) -> Mapping[str, TakenMessage]:
        """The messages taken for an attempt, by message id."""

    def status(self, now: float, top: int = 20) -> DeliveryStatus: ...

    def suspend_destination(self, domain: str, minutes: float) -> Awaitable[object] | None: ...

    def resume_destination(self, domain: str) -> Awaitable[object] | None: ...

    def retry_destination_now(self, domain: str) -> int | Awaitable[int]: ...


class Stopper(Protocol):
    """The service: the web admin's shutdown asks it for a graceful stop."""

    def request_stop(self) -> None: ...


class Box(Protocol):
    """A supervisor of worker processes ([server] workers > 1): the box's picture."""

    def combine(self, own: Any) -> Awaitable[Any]:
        """The supervisor's snapshot (``web.snapshot.Snapshot``) with its workers' added."""


@attrs.define(eq=False)
class Running:
    """The parts the web admin acts on; None: not running (a test, receiving only)."""

    delivery: Delivery | None = None
    service: Stopper | None = None
    box: Box | None = None
