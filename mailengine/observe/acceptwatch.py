"""Twisted only logs a failed accept(2); out of descriptors there is the manual's warning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import ILogObserver
from zope.interface import implementer

SHORTAGE_ERRORS = frozenset({"EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"})


@implementer(ILogObserver)
class AcceptFailureWatch:
    """Calls ``on_shortage(reason)`` when a listening port could not accept for want of
    descriptors (twisted.internet.tcp logs these instead of raising)."""

    def __init__(self, on_shortage: Callable[[str], None]) -> None:
        self.on_shortage = on_shortage

    def __call__(self, event: dict[str, Any]) -> None:
        fmt = event.get("log_format") or ""
        if fmt.startswith("EMFILE recovery") or (
            fmt.startswith("Could not accept new connection")
            and event.get("acceptError") in SHORTAGE_ERRORS
        ):
            self.on_shortage("accepting an inbound SMTP or web connection")
