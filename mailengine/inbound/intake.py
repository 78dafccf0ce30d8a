"""From an accepted DATA to the queue: envelopes, the Received header, counters, bounces.

One SMTP transaction becomes at most one incoming entry (local recipients),
one relay entry (the rest) and one bounce record. The Deferred fires once
every part is as safe as configured; only then does the session answer 250.
"""

from __future__ import annotations

import email.utils
import os
from typing import Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from mailengine.engine import Engine
from mailengine.inbound.received import prepend_received, received_header
from mailengine.queue.envelope import Envelope
from mailengine.reports.bounces import BounceClass, classify_bounce

log = Logger(namespace="mailengine.inbound")


@attrs.define
class Transaction:
    """One MAIL FROM and its accepted recipients, by where they go."""

    mail_from: str
    incoming: list[str] = attrs.field(factory=list)
    relay: list[str] = attrs.field(factory=list)
    bounces: list[str] = attrs.field(factory=list)  # USER@DOMAIN of returning bounces
    bounce_rcpts: list[str] = attrs.field(factory=list)  # the VERP addresses themselves

    @property
    def recipient_count(self) -> int:
        return len(self.incoming) + len(self.relay) + len(self.bounce_rcpts)

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
    """Appends USER@DOMAIN of returning bounces to hard-bounces.txt / soft-bounces.txt."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, addresses: list[str], content: bytes) -> defer.Deferred:
        engine = self.engine

        def classify_and_append() -> BounceClass:
            verdict = classify_bounce(content)
            if verdict.kind is not None:
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
            if verdict.kind is None:
                log.info("bounce for {who} holds no status code; not recorded", who=who)
            else:
                log.info(
                    "{kind} bounce ({status}) for {who}",
                    kind=verdict.kind.value,
                    status=verdict.status,
                    who=who,
                )

        # Parsing and the append run off the reactor thread (bounces may be large).
        return engine.committer.submit(classify_and_append, durable=False).addCallback(logged)


class Intake:
    """Hands accepted messages to the queue (``engine.queue``) and the bounce log."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.bounces = BounceLog(engine)
        self._date_second = -1
        self._date = ""

    def _rfc5322_date(self, now: float) -> str:
        second = int(now)
        if second != self._date_second:
            self._date_second = second
            self._date = email.utils.formatdate(now, localtime=True)
        return self._date

    def accept(self, txn: Transaction, data: bytes, facts: SessionFacts) -> defer.Deferred:
        """Queue ``data`` (canonical content) for ``txn``; fires with the first queue id."""
        engine = self.engine
        now = engine.reactor.seconds()
        ids = engine.ids
        # Relay first: its id is the one the Received header and the 250 reply name,
        # as that copy travels on.
        parts: list[tuple[str, list[str]]] = []
        if txn.relay:
            parts.append(("relay", txn.relay))
        if txn.incoming:
            parts.append(("inbound", txn.incoming))
        named = [(kind, rcpts, ids.next_id()) for kind, rcpts in parts]
        first_id = named[0][2] if named else ids.next_id()
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
            "datasize": str(len(content)),
        }
        counters = engine.counters
        waits = []
        for kind, rcpts, message_id in named:
            envelope = Envelope(
                message_id=message_id,
                mail_from=txn.mail_from,
                rcpt_to_send=list(rcpts),
                time_created=now,
                other=dict(other),
            )
            if kind == "inbound":
                d = engine.queue.accept_incoming(envelope, content)
            else:
                d = engine.queue.accept_relay(envelope, content)
            waits.append(d.addCallback(_count, counters, kind))
        if txn.bounces:
            d = self.bounces.record(txn.bounces, content)
            waits.append(d.addCallback(_count, counters, "inbound"))
        if len(waits) == 1:
            return waits[0].addCallback(lambda _: first_id)
        gathered = defer.gatherResults(waits, consumeErrors=True)
        return gathered.addCallbacks(lambda _: first_id, _first_error)


def _count(result: Any, counters: Any, kind: str) -> Any:
    counters.received(kind)
    return result


def _first_error(failure: Any) -> Any:
    if failure.check(defer.FirstError):
        return failure.value.subFailure
    return failure
