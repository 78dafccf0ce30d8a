"""What the web admin asks of the running engine beyond its queue and settings.

service.py hands the web admin one ``Running`` with the parts it made (tests put
fakes in it); nothing else of the service is in the web's reach.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

import attrs

from mailengine.delivery.status import DeliveryStatus


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

    def suspend_destination(self, domain: str, minutes: float) -> None: ...

    def resume_destination(self, domain: str) -> None: ...

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
