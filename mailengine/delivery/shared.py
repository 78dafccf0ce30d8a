"""The delivery engine's ear for shared caps: grants that arrive later wake what waits."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mailengine.delivery.destinations import DestinationGate
from mailengine.delivery.pool import Pools
from mailengine.scheduler.grants import SharedReaction


class SharedCapsListener:
    """Implements ``scheduler.grants.GrantsListener`` for the delivery engine."""

    def __init__(
        self,
        gate: DestinationGate,
        pools: Pools,
        parked: Callable[[], Iterable[str]],
        messages_due: Callable[[], None],
    ) -> None:
        self.gate = gate
        self.pools = pools
        self.parked = parked  # the live queue's parked destinations
        self.messages_due = messages_due

    def rate_granted(self, domain: str) -> None:
        self.gate.offer(domain)

    def hourly_granted(self) -> None:
        self.messages_due()

    def mode_changed(self) -> None:
        self.pools.caps_changed()
        self.gate.offer_all(self.parked())
        self.messages_due()

    def reaction_heard(self, reaction: SharedReaction) -> None:
        self.gate.adopt(reaction)
