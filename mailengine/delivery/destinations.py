"""The send loop's side of traffic shaping: each due message asks the shaper whether its
destinations may take it; one that may not is parked under its destination and released
when that destination has room again (a timer for time-bound waits).

The decisions are ``scheduler/shaping.py``'s; this module only keeps the timers and
turns the live settings into a rulebook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from mailengine.config.model import Config
from mailengine.delivery.plan import domain_of
from mailengine.queue.destination_states import DestinationLine
from mailengine.queue.live import QueuedMessage
from mailengine.scheduler.grants import SharedReaction
from mailengine.scheduler.rules import SUSPEND, Rulebook, pools_from, reactions_from, rules_from
from mailengine.scheduler.shaping import SENDING, Shaper

log = Logger(namespace="mailengine.delivery")

KEPT_DESTINATIONS = 10000  # idle destinations remembered past this are forgotten
SHAPING_KEYS = {("shaping", "rule"), ("shaping", "reaction"), ("egress", "pool")}


def rulebook_from(config: Config) -> Rulebook:
    return Rulebook(
        rules_from(config.shaping.rule),
        reactions_from(config.shaping.reaction),
        pools_from(config.egress.pool),
    )


def destinations_of(msg: QueuedMessage) -> set[str]:
    """The recipient domains a message still has to be sent to."""
    return {domain_of(address) for address in msg.envelope.rcpt_to_send}


class DestinationGate:
    """Implements the live queue's ``Gate`` for the delivery engine."""

    def __init__(
        self,
        reactor: Any,
        config: Config,
        release: Callable[[str, int], int],
        on_suspended: Callable[[str], None],
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.release = release  # LiveQueue.release(destination, count)
        self.on_suspended = on_suspended  # jobs already handed to connections go back
        self.shaper = Shaper(rulebook_from(config), config.smtp_out.max_connections_per_host)
        self.timers: dict[str, IDelayedCall] = {}
        self._held: dict[str, set[str]] = {}  # message id -> destinations not to try now

    def configure(self) -> None:
        """Settings changed: new rules apply; every parked destination is offered again."""
        self.shaper.configure(
            rulebook_from(self.config), self.config.smtp_out.max_connections_per_host
        )

    # -- the queue asks ----------------------------------------------------

    def blocked_by(self, msg: QueuedMessage) -> str | None:
        """The destination to park ``msg`` under when none of its destinations may take
        it now; None when at least one may (the others' recipients wait, see ``held``)."""
        now = self.reactor.seconds()
        first = None
        for domain in destinations_of(msg):
            wait = self.shaper.may_send(domain, now)
            if wait is None:
                return None
            if first is None:
                first = domain
                if wait.until is not None:
                    self._offer_at(domain, wait.until)
        return first

    def admitted(self, msg: QueuedMessage) -> None:
        now = self.reactor.seconds()
        blocked = set()
        for domain in destinations_of(msg):
            if self.shaper.may_send(domain, now) is None:
                self.shaper.sending(domain, now, msg.message_id)
            else:
                blocked.add(domain)
        if blocked:
            self._held[msg.message_id] = blocked

    def held(self, message_id: str) -> set[str]:
        """Destinations of an admitted message that may not take it now: their recipients
        are not tried this time (asked once, by the attempt that starts)."""
        return self._held.pop(message_id, set())

    # -- the sender tells ----------------------------------------------------

    def finished(
        self, message_id: str, domains: Iterable[str], errors: dict[str, str], sent: set[str]
    ) -> None:
        """A message's attempt ended: its destinations may take the next waiting one."""
        for domain in domains:
            self.shaper.finished(
                domain, error=errors.get(domain, ""), is_sent=domain in sent, key=message_id
            )
            self.offer(domain)

    def dns_answered(self, message_id: str, domain: str) -> None:
        """Its MX lookup was answered: when it was one of the few let in while the
        destination's DNS was unknown, the next waiting ones may go (or wait for the
        failure's answer to expire)."""
        if self.shaper.dns_answered(domain, message_id):
            self.offer(domain)

    def react(self, domain: str, reply: str) -> None:
        """A failure reply: a matching reaction suspends or throttles ``domain``."""
        if not reply or not self.shaper.rulebook.reactions:
            return
        now = self.reactor.seconds()
        was_suspended = self.shaper.is_suspended(domain, now)
        reaction = self.shaper.react(domain, reply, now)
        if reaction is None:
            return
        if reaction.action == SUSPEND and not was_suspended:
            log.info(
                "{domain}: suspended for {m:g} minutes after: {reply}",
                domain=domain,
                m=reaction.minutes,
                reply=reply,
            )
            self.on_suspended(domain)
        elif reaction.action != SUSPEND:
            log.info("{domain}: throttled after: {reply}", domain=domain, reply=reply)

    def offer(self, domain: str) -> None:
        """Release as many of ``domain``'s parked messages as it may take now; else wake
        up when it may (time-bound waits) or when one of its own finishes."""
        now = self.reactor.seconds()
        room = self.shaper.room(domain, now)
        if room > 0:
            self.release(domain, room)
            return
        wait = self.shaper.may_send(domain, now)
        if wait is not None and wait.until is not None:
            self._offer_at(domain, wait.until)

    def offer_all(self, domains: Iterable[str]) -> None:
        for domain in list(domains):
            self.offer(domain)

    def _offer_at(self, domain: str, when: float) -> None:
        call = self.timers.get(domain)
        if call is not None and call.active():
            if call.getTime() <= when:
                return
            call.cancel()
        delay = max(0.0, when - self.reactor.seconds())
        self.timers[domain] = self.reactor.callLater(delay, self._timer_fired, domain)

    def _timer_fired(self, domain: str) -> None:
        self.timers.pop(domain, None)
        self.offer(domain)

    # -- operator actions and upkeep -------------------------------------------

    def suspend(self, domain: str, minutes: float) -> None:
        now = self.reactor.seconds()
        self.shaper.suspend(domain, now + minutes * 60.0, now=now)
        self.on_suspended(domain)

    def resume(self, domain: str) -> None:
        self.shaper.resume(domain, self.reactor.seconds())
        self.offer(domain)

    def adopt(self, reaction: SharedReaction) -> None:
        """Another node suspended, throttled or resumed a destination: so does this one."""
        if self.shaper.adopt(reaction, self.reactor.seconds()):
            log.info(
                "{domain}: suspended by node {node} until {until} after: {reply}",
                domain=reaction.domain,
                node=reaction.node,
                until=reaction.suspended_until,
                reply=reaction.suspended_by,
            )
            self.on_suspended(reaction.domain)
        self.offer(reaction.domain)

    def unusual_lines(self, now: float) -> list[DestinationLine]:
        """Every destination not simply sending, as mailq/destinations.json lists it."""
        shaper, out = self.shaper, []
        for domain in list(shaper.destinations):
            view = shaper.state(domain, now)
            if view.kind != SENDING:
                out.append(DestinationLine(domain, view.kind, view.label, view.reason, view.until))
        return out

    def housekeep(self, parked: Iterable[str]) -> None:
        self.shaper.forget_idle(self.reactor.seconds(), KEPT_DESTINATIONS, parked)

    def stop(self) -> None:
        for call in self.timers.values():
            if call.active():
                call.cancel()
        self.timers.clear()
