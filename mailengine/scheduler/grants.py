"""Who grants the caps that more than one process shares: the interface (pure).

Without one (``None``, the default) every cap is answered in this process by the
shaper and the connection slots, as before. A ``Grants`` (``cluster.node.ClusterNode``:
through Redis across machines, or through the supervisor of one box's worker processes
over AMP) is asked *as well*: for a lease before each connection opens, for a
message-rate token before a rate-capped destination takes a message, for room under
the hourly cap before the send loop takes messages; and it is told of reactions so
that every process applies them.
Answers that need the other side arrive later through callbacks; the synchronous
calls answer from what this process already holds (batches, leases), so the send
loop never waits on the wire for one message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

WHEN_TOLD = math.inf  # "not before the grants object says so" (a wake-up callback)


@attrs.frozen
class Cap:
    """One shared connection cap: its key (same on every node) and its limit."""

    key: str  # "total", "host:192.0.2.1:25", "site:google@mx1.google.com,..."
    limit: int


@attrs.frozen
class Lease:
    """One connection's hold on its caps, given back when the connection closes."""

    lease_id: str
    caps: tuple[Cap, ...]


@attrs.frozen
class SharedReaction:
    """A destination's suspension or throttle as every node should apply it.

    ``stamp``: when it was decided (the newest wins); a resume is a reaction with
    neither a suspension nor a throttle.
    """

    domain: str
    stamp: float
    suspended_until: float = 0.0
    suspended_by: str = ""
    throttle_rate: float = 0.0  # per minute, as last halved (0: no throttle)
    throttle_ceiling: float = 0.0
    throttle_step_seconds: float = 0.0
    throttle_since: float = 0.0
    throttle_reply: str = ""
    node: str = ""  # who decided it
    expires: float = 0.0  # when it stops mattering (suspension over, throttle ramped back)


@attrs.frozen
class NodeView:
    """A node of the cluster as the shared store lists it."""

    name: str
    last_seen: float  # the store's clock, seconds
    leases: int = 0  # connection leases it holds
    mode: str = "shared"  # or "fallback": it could not reach the store at its last word


@attrs.frozen
class ClusterView:
    """The cluster as this node sees it (the web admin, /metrics)."""

    node: str
    store: str  # where the caps are shared (redis://host:port/db)
    is_shared: bool  # False: the store is unreachable and each cap is this node's share
    since: float  # in this mode since
    problem: str = ""  # why the store is unreachable
    node_count: int = 1  # nodes the caps are divided by
    nodes: tuple[NodeView, ...] = ()
    leases: int = 0  # connection leases this node holds
    reactions: tuple[SharedReaction, ...] = ()  # suspensions and throttles in force


class GrantsListener(Protocol):
    """What a ``Grants`` tells the send loop (the delivery engine) when it changes."""

    def rate_granted(self, domain: str) -> None:
        """Tokens for ``domain`` arrived (or it may ask again): offer its waiting mail."""

    def hourly_granted(self) -> None:
        """Room under the hourly cap arrived: the send loop may take more."""

    def mode_changed(self) -> None:
        """Shared caps were lost or came back: every cap may be different now."""

    def reaction_heard(self, reaction: SharedReaction) -> None:
        """Another node suspended, throttled or resumed a destination."""


class Grants(Protocol):
    """Grants of caps shared with other processes or machines."""

    @property
    def node(self) -> str:
        """This node's name among the others."""

    def lease(self, caps: Sequence[Cap], answer: Callable[[Lease | None], None]) -> None:
        """One connection under every cap of ``caps``: ``answer`` gets the lease (now or
        later), or None when one of the caps is full."""

    def release(self, lease: Lease) -> None:
        """The lease's connection closed."""

    def is_over_share(self, lease: Lease) -> bool:
        """True while this node holds more leases under one of ``lease``'s caps than it
        may now (shared caps lost: its share is smaller): the connection ends after its
        transaction instead of taking the next one."""

    def should_rotate(self, lease: Lease) -> bool:
        """True when the connection should end after its transaction so that another
        process, waiting below its fair part of a cap whose parts add up to more than
        the cap, gets a turn (every holder may be at its own part, so none is over)."""

    def is_wanted(self, lease: Lease) -> bool:
        """True while another process waits for one of ``lease``'s caps: a connection
        with nothing to do idles only briefly with the lease (``WANTED_IDLE_SECONDS``)."""

    def rate_wait(self, domain: str, per_minute: float, now: float) -> float | None:
        """May one more message for ``domain`` (at most ``per_minute`` across every
        node) start now? None: yes; else until when not (``WHEN_TOLD``: a wake-up
        comes when a batch arrives)."""

    def rate_took(self, domain: str, per_minute: float, now: float) -> None:
        """One message for ``domain`` started (after ``rate_wait`` said yes)."""

    def hourly_room(self, cap: int, now: float) -> int:
        """Messages this node may take now under the hourly cap ``cap``."""

    def hourly_wait(self, cap: int, now: float) -> float | None:
        """None when there is room under the hourly cap; else until when there is not."""

    def hourly_took(self, count: int, cap: int, now: float) -> None:
        """``count`` messages were taken under the hourly cap."""

    def reacted(self, reaction: SharedReaction) -> None:
        """This node suspended, throttled or resumed a destination: tell the others."""

    def view(self, now: float) -> ClusterView:
        """The cluster as this node sees it."""

    def attach(self, listener: GrantsListener) -> None:
        """Who to tell of grants that arrive later (the delivery engine)."""
