"""What happens when recipients finally fail or an attempt ends: undeliverable files,
recent failures, DSNs, delivery reports and admin notices, mailed through the
engine itself (manual §3, §4). Text comes from ``mailengine.reports``."""

from __future__ import annotations

import os
import uuid
from typing import Any, Protocol

from twisted.internet import defer
from twisted.logger import Logger

from mailengine.config.model import Config
from mailengine.delivery.outcome import HARD, AttemptSummary
from mailengine.observe.counters import Counters
from mailengine.observe.eventlog import EventLog
from mailengine.observe.events import DSN_SENT
from mailengine.observe.recent import FinalFailure, RecentFailures
from mailengine.queue.commit import GroupCommit
from mailengine.queue.envelope import Envelope
from mailengine.queue.ids import MessageIdFactory
from mailengine.queue.live import LiveQueue
from mailengine.queue.suppression import Entry, SuppressionList, suppress_later
from mailengine.reports import delivery_report, dsn
from mailengine.reports.categories import OTHER, SUPPRESSING, category_text
from mailengine.reports.notices import NoticeGate, build_notice, undeliverable_lines
from mailengine.signing.accept import Signing, SigningParts

log = Logger(namespace="mailengine.delivery")

# The .inf key that marks the engine's own mail, so its outcomes are counted apart
# from the clients' (an extra key: kept verbatim by every rewrite, manual §5).
ORIGIN_KEY = "origin"
ORIGINS = {"DSN": "dsn", "delivery report": "report", "admin notice": "notice"}


def is_own_mail(envelope: Envelope) -> bool:
    """A DSN, delivery report or notice the engine wrote itself."""
    return envelope.other.get(ORIGIN_KEY, "") in ORIGINS.values()


class ReportingParts(SigningParts, Protocol):
    """What failure reporting needs of the engine (``Engine``): the clock, counts and
    recent failures, undeliverable files, the event log, the suppression list, and the
    queue and ids to mail DSNs, reports and notices through."""

    @property
    def config(self) -> Config: ...

    @property
    def reactor(self) -> Any: ...

    @property
    def counters(self) -> Counters: ...

    @property
    def recent_failures(self) -> RecentFailures: ...

    @property
    def events(self) -> EventLog: ...

    @property
    def ids(self) -> MessageIdFactory: ...

    @property
    def queue(self) -> LiveQueue: ...

    @property
    def committer(self) -> GroupCommit: ...

    @property
    def suppression(self) -> SuppressionList | None: ...

    @property
    def name(self) -> str: ...

    def root_file(self, name: str) -> str: ...


class FailureReporting:
    """Turns an attempt's summary into files and mail."""

    def __init__(self, engine: ReportingParts) -> None:
        self.engine = engine
        self.notices = NoticeGate()
        self.signing = Signing(engine)

    def attempt_finished(self, envelope: Envelope, summary: AttemptSummary, data: bytes) -> None:
        engine = self.engine
        now = engine.reactor.seconds()
        failures = summary.final_failures
        if failures:
            for r in failures:
                engine.recent_failures.add(
                    FinalFailure(
                        now, envelope.message_id, r.address, r.kind == HARD, r.reply, r.category
                    )
                )
                engine.counters.bounced(r.category or OTHER)
            self._suppress(
                [
                    Entry(
                        r.address,
                        f"{category_text(r.category)}: {r.reply}",
                        "delivery",
                        now,
                        "engine",
                    )
                    for r in summary.hard
                    if r.category in SUPPRESSING
                ]
            )
            logs = engine.config.logs
            if logs.log_undeliverable:
                with_reply = logs.undeliverable_reasons
                self._append(
                    "hard-undeliverable.txt", undeliverable_lines(summary.hard, with_reply)
                )
                self._append(
                    "soft-undeliverable.txt", undeliverable_lines(summary.soft_final, with_reply)
                )
            if engine.config.queue.use_dsn and dsn.should_send_dsn(envelope, data):
                self._send_dsn(envelope, summary, data, now)
        self._maybe_report(envelope, summary, now)

    def _suppress(self, entries: list[Entry]) -> None:
        """Put addresses on the suppression list (a worker thread; a failure is logged)."""
        suppress_later(self.engine, entries)

    def _append(self, name: str, lines: str) -> None:
        if not lines:
            return
        try:
            # One O_APPEND write: worker processes ([server] workers) append to the same
            # file, and a buffered file may split a long text into several writes.
            fd = os.open(self.engine.root_file(name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, lines.encode("utf-8"))
            finally:
                os.close(fd)
        except OSError as exc:
            log.warn("cannot append to {name}: {why}", name=name, why=exc)

    def _send_dsn(
        self, envelope: Envelope, summary: AttemptSummary, data: bytes, now: float
    ) -> None:
        engine = self.engine
        dsn_id = engine.ids.next_id()
        text = dsn.build_dsn(
            envelope,
            summary.final_failures,
            data,
            hostname=engine.name,
            now=now,
            dsn_id=dsn_id,
            boundary=uuid.uuid4().hex,
        )
        self.send_local_mail(dsn_id, [envelope.mail_from], text, "DSN")
        for r in summary.final_failures:
            engine.events.emit(
                DSN_SENT,
                now,
                message_id=envelope.message_id,
                sender=envelope.mail_from,
                recipient=r.address,
                category=r.category or None,
                detail=f"DSN {dsn_id} to {envelope.mail_from}",
                by="engine",
            )

    def _maybe_report(self, envelope: Envelope, summary: AttemptSummary, now: float) -> None:
        reports = self.engine.config.reports
        if not reports.type or not reports.recipients or not envelope.mail_from:
            return  # never report on the engine's own (null-sender) mail
        if not summary.counted:
            return
        if not delivery_report.is_report_due(reports.type, summary.tries, summary.done):
            return
        reported = delivery_report.undelivered(summary, reports.domains, envelope)
        if not reported:
            return
        report_id = self.engine.ids.next_id()
        text = delivery_report.build_report(
            envelope,
            summary,
            reported,
            to=reports.recipients,
            hostname=self.engine.name,
            now=now,
            report_id=report_id,
        )
        self.send_local_mail(report_id, list(reports.recipients), text, "delivery report")

    def admin_notice(self, kind: str, subject: str, body: str) -> None:
        """Mail ``admin_email`` about a problem, at most once an hour per ``kind``."""
        engine = self.engine
        to = engine.config.server.admin_email
        now = engine.reactor.seconds()
        if not to or not self.notices.may_send(kind, now):
            return
        notice_id = engine.ids.next_id()
        text = build_notice(
            to=to,
            subject=subject,
            body=body,
            hostname=engine.name,
            now=now,
            notice_id=notice_id,
        )
        self.send_local_mail(notice_id, [to], text, "admin notice")

    def send_local_mail(self, message_id: str, to: list[str], data: bytes, what: str) -> None:
        """Locally generated mail enters the queue like relay mail, from the null sender,
        DKIM-signed when a key covers its From: domain (MAILER-DAEMON@ the engine's name)."""
        engine = self.engine
        now = engine.reactor.seconds()

        def store(signed: bytes) -> defer.Deferred:
            envelope = Envelope(
                message_id=message_id,
                mail_from="",
                rcpt_to_send=list(to),
                time_created=now,
                other={"datasize": str(len(signed)), ORIGIN_KEY: ORIGINS.get(what, "notice")},
            )
            log.info("{what} {id} to {to} queued", what=what, id=message_id, to=", ".join(to))
            return engine.queue.accept_relay(envelope, signed)

        d = self.signing.signed(message_id, data, now).addCallback(store)

        def counted(result: object) -> object:
            engine.counters.books.generated += len(to)
            return result

        d.addCallback(counted)
        d.addErrback(
            lambda f: log.failure("cannot queue a {what} ({id})", f, what=what, id=message_id)
        )
