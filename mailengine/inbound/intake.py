"""From an accepted DATA to the queue: envelopes, the Received header, counters, bounces.

One SMTP transaction becomes at most one incoming entry (local recipients,
returning bounces included: kept with save_incoming like other local mail),
one relay entry (the rest) and one bounce record. The Deferred fires once
every part is as safe as configured; only then does the session answer 250.
"""

from __future__ import annotations

import email.utils
import os
from functools import partial
from typing import Any, Protocol

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailengine.config.model import Config
from mailengine.inbound.received import prepend_received, received_header
from mailengine.observe.counters import Counters
from mailengine.observe.eventlog import EventLog
from mailengine.observe.events import BOUNCE_RECEIVED, RECEIVED, SUPPRESSED
from mailengine.queue.commit import GroupCommit
from mailengine.queue.envelope import Envelope
from mailengine.queue.ids import MessageIdFactory
from mailengine.queue.live import LiveQueue
from mailengine.queue.store import QueueStore
from mailengine.queue.suppression import Entry, SuppressionList, suppress_later
from mailengine.reports.bounces import BounceClass, BounceKind, bounce_text, classify_bounce
from mailengine.reports.categories import OTHER, Pattern, categorize, category_text
from mailengine.signing.accept import Signing, SigningParts

log = Logger(namespace="mailengine.inbound")


class IntakeParts(SigningParts, Protocol):
    """What intake needs of the engine (``Engine``): the queue and its files, ids,
    counts, the event log, the bounce patterns and files, the suppression list."""

    @property
    def config(self) -> Config: ...

    @property
    def reactor(self) -> Any: ...

    @property
    def queue(self) -> LiveQueue: ...

    @property
    def store(self) -> QueueStore: ...

    @property
    def committer(self) -> GroupCommit: ...

    @property
    def counters(self) -> Counters: ...

    @property
    def ids(self) -> MessageIdFactory: ...

    @property
    def events(self) -> EventLog: ...

    @property
    def bounce_patterns(self) -> list[Pattern]: ...

    @property
    def suppression(self) -> SuppressionList | None: ...

    def root_file(self, name: str) -> str: ...


@attrs.define
class Transaction:
    """One MAIL FROM and its accepted recipients, by where they go."""

    mail_from: str
    incoming: list[str] = attrs.field(factory=list)
    relay: list[str] = attrs.field(factory=list)
    bounces: list[str] = attrs.field(factory=list)  # USER@DOMAIN of returning bounces
    bounce_rcpts: list[str] = attrs.field(factory=list)  # the VERP addresses themselves
    # Suppressed relay recipients accepted and dropped ([suppression] action = "drop"):
    # (address, the list's reason).
    suppressed: list[tuple[str, str]] = attrs.field(factory=list)

    @property
    def recipient_count(self) -> int:
        return len(self.incoming) + len(self.relay) + len(self.bounce_rcpts) + len(self.suppressed)

    @property
    def recipients(self) -> list[str]:
        return [*self.incoming, *self.relay, *self.bounce_rcpts]


@attrs.frozen
class SessionFacts:
    """What the .inf of a received message records about the session (manual §5)."""

    helo: str
    peer_ip: str
    local_ip: str
    local_hostname: str
    protocol: str  # RFC 3848 "with" keyword


class BounceLog:
    """Appends USER@DOMAIN of returning bounces to hard-, soft- or unclassified-bounces.txt."""

    def __init__(self, engine: IntakeParts) -> None:
        self.engine = engine

    def record(self, addresses: list[str], content: bytes, message_id: str = "") -> defer.Deferred:
        engine = self.engine
        category = [OTHER]

        def classify_and_append() -> BounceClass:
            verdict = classify_bounce(content)
            if not verdict.file_name:
                return verdict
            if verdict.kind is not None:
                category[0] = categorize(
                    bounce_text(content), engine.bounce_patterns, verdict.status
                )
            lines = "".join(f"{a}\n" for a in addresses).encode("utf-8", "replace")
            fd = os.open(
                engine.root_file(verdict.file_name),
                os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                0o644,
            )
            try:
                os.write(fd, lines)  # one write: lines of concurrent bounces never mix
                os.fsync(fd)
            finally:
                os.close(fd)
            return verdict

        def logged(verdict: BounceClass) -> None:
            who = ", ".join(addresses)
            if not verdict.file_name:
                log.info(
                    "delivery notice ({status}) for {who}: not a bounce",
                    status=verdict.status,
                    who=who,
                )
                return
            if verdict.kind is None:
                log.info(
                    "unclassified bounce (no status code) for {who}: {file}",
                    who=who,
                    file=verdict.file_name,
                )
            else:
                log.info(
                    "{kind} bounce ({status}) for {who} (category {category})",
                    kind=verdict.kind.value,
                    status=verdict.status,
                    category=category[0],
                    who=who,
                )
            now = engine.reactor.seconds()
            if verdict.kind is BounceKind.HARD:
                why = f"hard bounce {verdict.status} ({category_text(category[0])})"
                suppress_later(engine, [Entry(a, why, "bounce", now, "engine") for a in addresses])
            for address in addresses:
                engine.counters.bounced(category[0])
                engine.events.emit(
                    BOUNCE_RECEIVED,
                    now,
                    message_id=message_id or None,
                    recipient=address,
                    size=len(content),
                    reply={"code": None, "enhanced": verdict.status, "text": ""},
                    category=category[0],
                    detail=verdict.kind.value if verdict.kind is not None else "unclassified",
                    by="smtp",
                )

        # Parsing and the append run off the reactor thread (bounces may be large).
        return engine.committer.submit(classify_and_append, durable=False).addCallback(logged)


class Intake:
    """Hands accepted messages to the queue (``engine.queue``) and the bounce log."""

    def __init__(self, engine: IntakeParts) -> None:
        self.engine = engine
        self.bounces = BounceLog(engine)
        self.signing = Signing(engine)
        self._date_second = -1
        self._date = ""

    def _rfc5322_date(self, now: float) -> str:
        second = int(now)
        if second != self._date_second:
            self._date_second = second
            self._date = email.utils.formatdate(now, localtime=True)
        return self._date

    def accept(self, txn: Transaction, data: bytes, facts: SessionFacts) -> defer.Deferred:
        """Queue ``data`` (canonical content) for ``txn``; fires with the first queue id.

        A split transaction (local and relay recipients) stores its local parts
        first and hands the relay copy on only once they are safe: when any part
        fails the client is told 452 and nothing has been sent on, and a local
        copy already written is removed again, so the client's retry duplicates
        nothing (a bounce line already appended stays: a repeated address is
        harmless to the programs that read those files).
        """
        engine = self.engine
        now = engine.reactor.seconds()
        ids = engine.ids
        # Relay first: its id is the one the Received header and the 250 reply name,
        # as that copy travels on.
        relay_id = ids.next_id() if txn.relay else ""
        # Returning bounces are mail for a local domain too: kept with save_incoming.
        local_rcpts = [*txn.incoming, *txn.bounce_rcpts]
        incoming_id = ids.next_id() if local_rcpts else ""
        first_id = relay_id or incoming_id or ids.next_id()
        header = received_header(
            helo=facts.helo,
            peer_ip=facts.peer_ip,
            host=facts.local_hostname,
            protocol=facts.protocol,
            message_id=first_id,
            recipients=txn.recipients,
            date=self._rfc5322_date(now),
        )
        content = prepend_received(header, data)
        other = {
            "helo": facts.helo,
            "peertcpip": facts.peer_ip,
            "peerhostname": facts.peer_ip,  # never block on reverse DNS
            "localhostname": facts.local_hostname,
            "localtcpip": facts.local_ip,
        }

        def envelope(message_id: str, rcpts: list[str], data: bytes = content) -> Envelope:
            return Envelope(
                message_id=message_id,
                mail_from=txn.mail_from,
                rcpt_to_send=list(rcpts),
                time_created=now,
                other={**other, "datasize": str(len(data))},
            )

        def relay(_: Any = None) -> defer.Deferred:
            # Signed once, before it is stored: every attempt sends the same bytes.
            def store(data: bytes) -> defer.Deferred:
                return engine.queue.accept_relay(envelope(relay_id, txn.relay, data), data)

            if not self.signing.has_keys:
                return store(content)
            return self.signing.signed(relay_id, content, now).addCallback(store)

        def counted(_: Any) -> str:
            engine.counters.received_message(relay=len(txn.relay), local=len(local_rcpts))
            events = engine.events
            if events.is_on:
                at = engine.reactor.seconds()
                size = len(content)
                dropped = [a for a, _ in txn.suppressed]
                for message_id, rcpts in (
                    (relay_id, txn.relay),
                    (incoming_id, local_rcpts),
                    (first_id, dropped),
                ):
                    for rcpt in rcpts:
                        events.emit(
                            RECEIVED,
                            at,
                            message_id=message_id,
                            sender=txn.mail_from,
                            recipient=rcpt,
                            size=size,
                            by=facts.peer_ip,
                        )
                for rcpt, reason in txn.suppressed:
                    events.emit(
                        SUPPRESSED,
                        at,
                        message_id=first_id,
                        sender=txn.mail_from,
                        recipient=rcpt,
                        size=size,
                        detail=reason,
                        by="engine",
                    )
            return first_id

        def withdraw(failure: Failure) -> Failure:
            if incoming_id:  # a local copy written before another part failed
                remove = partial(engine.store.delete, "incoming", incoming_id)
                engine.committer.submit(remove).addErrback(
                    lambda f: log.failure("incoming/{id}: not removed", f, id=incoming_id)
                )
            return failure

        local = []
        if local_rcpts:
            local.append(engine.queue.accept_incoming(envelope(incoming_id, local_rcpts), content))
        if txn.bounces:
            local.append(self.bounces.record(txn.bounces, content, incoming_id))
        if not txn.relay:
            return _all(local).addCallbacks(counted, withdraw)
        if not local:
            return relay().addCallback(counted)
        return _all(local).addCallback(relay).addCallbacks(counted, withdraw)


def _all(waits: list[defer.Deferred]) -> defer.Deferred:
    """One Deferred for the parts; the first failure as itself (not a FirstError)."""
    if len(waits) == 1:
        return waits[0]
    gathered = defer.gatherResults(waits, consumeErrors=True)
    return gathered.addErrback(_first_error)


def _first_error(failure: Any) -> Any:
    if failure.check(defer.FirstError):
        return failure.value.subFailure
    return failure
