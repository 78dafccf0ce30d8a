"""The delivery engine: takes due messages from the live queue, resolves their domains,
hands jobs to the connection pools and writes each attempt back (manual §3, §5).

service.py hands it to the web admin (``status(now, top)``, web/running.py) and calls
``drain()`` for a graceful stop.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from mailengine.delivery.client import ClientSettings
from mailengine.delivery.descriptors import ensure_descriptors
from mailengine.delivery.destinations import SHAPING_KEYS, DestinationGate, destinations_of
from mailengine.delivery.job import Job
from mailengine.delivery.outcome import HARD, SENT, SOFT, UNTRIED, RecipientResult, apply_attempt
from mailengine.delivery.plan import count_hosts, domain_of, group_by_domain, hops_for, next_hop
from mailengine.delivery.pool import Pools
from mailengine.delivery.records import Via, attempt_events, categorize_failures
from mailengine.delivery.reporting import FailureReporting, ReportingParts, is_own_mail
from mailengine.delivery.shared import SharedCapsListener
from mailengine.delivery.status import DeliveryStatus, DomainStatus, HostStatus
from mailengine.dns.answer import Destination, DNSFailure, MXResolver, Resolution
from mailengine.policy.verp import encode_bounce_address
from mailengine.queue.content import dot_stuff
from mailengine.queue.destination_states import FILE_NAME as STATES_FILE
from mailengine.queue.destination_states import encode as encode_states
from mailengine.queue.live import QueuedMessage
from mailengine.queue.store import QueueStore
from mailengine.reports.categories import Pattern
from mailengine.reports.notices import FD_WARNING, NoticeGate, disk_space_is_low
from mailengine.scheduler.grants import Grants

log = Logger(namespace="mailengine.delivery")

DRAIN_SECONDS = 20.0  # in-flight transactions get this long at a stop (service bound: 30)
HOUSEKEEPING_SECONDS = 5.0  # paused/held re-checks, disk space, settings refresh
DISK_CHECK_SECONDS = 60.0
FD_WARNING_SECONDS = 60.0  # the out-of-descriptors warning is logged at most this often
KEPT_DOMAIN_ERRORS = 10000  # last errors per destination domain, for the web admin


class DeliveryParts(ReportingParts, Protocol):
    """What the delivery engine needs of the engine (``Engine``): failure reporting's
    parts, the queue's files, test mode and the bounce patterns."""

    @property
    def store(self) -> QueueStore: ...

    @property
    def test_mode(self) -> bool: ...

    @property
    def bounce_patterns(self) -> list[Pattern]: ...


class Attempt:
    """One send attempt of one message: its jobs and their recipients' results."""

    __slots__ = ("domains", "jobs", "message", "results", "via", "waiting")

    def __init__(self, message: QueuedMessage, held: set[str]) -> None:
        self.message = message
        self.domains = destinations_of(message) - held  # counted in flight by the shaper
        self.results: list[RecipientResult] = []
        self.via: dict[str, Via] = {}  # lower-case address -> the session it was tried in
        self.waiting = 0
        self.jobs: list[Job] = []

    @property
    def is_on_a_connection(self) -> bool:
        """A job of it is in a transaction now (not waiting for DNS or a connection)."""
        return any(job.started and not job.done for job in self.jobs)


class DeliveryEngine(service.Service):
    """The queue's consumer: pulls only as much as it has room for."""

    # mailq/destinations.json; "" in a worker process (its supervisor writes the box's).
    states_file = STATES_FILE

    def __init__(
        self, engine: DeliveryParts, resolver: MXResolver, grants: Grants | None = None
    ) -> None:
        self.engine = engine
        self.resolver = resolver
        self.reactor = engine.reactor
        self.settings = ClientSettings(test_mode=engine.test_mode)
        self.gate = DestinationGate(
            engine.reactor, engine.config, engine.queue.release, self._suspended
        )
        self.shaper = self.gate.shaper
        self.grants = grants  # caps shared with other nodes (cluster/); None: this one only
        self.pools = Pools(
            engine.reactor,
            self.settings,
            caps=self._connection_caps,
            fail_over=self._fail_over,
            bandwidth_limit=lambda: engine.config.smtp_out.max_bandwidth_bytes_per_minute,
            outbound_ip=lambda: engine.config.smtp_out.outbound_ip,
            on_descriptor_shortage=self.out_of_descriptors,
            shaper=self.shaper,
            grants=grants,
        )
        if grants is not None:
            self.shaper.grants, self.shaper.node = grants, grants.node
            grants.attach(
                SharedCapsListener(
                    self.gate, self.pools, engine.queue.parked_destinations, self.messages_due
                )
            )
        self.reporting = FailureReporting(engine)
        self.attempts: dict[str, Attempt] = {}
        self.held_by_rate_cap = False
        self.rate_cap_notices = NoticeGate()
        self.fd_warnings = NoticeGate(FD_WARNING_SECONDS)
        self._pump_call: IDelayedCall | None = None
        self._housekeeping: IDelayedCall | None = None
        self._last_disk_check = 0.0
        self._domain_errors: dict[str, str] = {}
        self.stopping = False
        self._resolving: set[Job] = set()  # jobs whose domain is being looked up
        self._drained: defer.Deferred[None] | None = None
        self._stop_writes: list[defer.Deferred[Any]] = []
        self.refresh_settings()

    # -- start -----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        config = self.engine.config
        ensure_descriptors(config.smtp_out.max_connections, config.smtp_in.max_connections)
        config.subscribe(self._setting_changed)
        self.engine.queue.consumer = self
        self._housekeeping = self.reactor.callLater(0, self._housekeep)  # disk space at start
        self.messages_due()

    def stopService(self) -> None:
        super().stopService()
        if self._housekeeping is not None and self._housekeeping.active():
            self._housekeeping.cancel()
        self.gate.stop()
        if self.states_file:
            self.engine.store.remove_file(self.states_file)  # no engine: no states to show

    def refresh_settings(self) -> None:
        """Copy the live settings connections read on every transaction."""
        config, s = self.engine.config, self.settings
        out = config.smtp_out
        s.identity = self.engine.name.encode()
        s.read_timeout = out.read_timeout_seconds
        s.write_timeout = out.write_timeout_seconds
        s.body_timeout = out.body_timeout_seconds
        s.connect_timeout = out.connect_timeout_seconds
        s.debug = config.logs.debug_smtp_out

    def _setting_changed(self, section: str, key: str, value: Any) -> None:
        self.refresh_settings()
        if section == "smtp_out" and key == "paused" and not value:
            log.info("sending resumed")
        if (section, key) in (("smtp_out", "max_connections"), ("smtp_in", "max_connections")):
            config = self.engine.config
            ensure_descriptors(config.smtp_out.max_connections, config.smtp_in.max_connections)
        if section == "smtp_out" and key in (
            "max_connections",
            "max_connections_per_host",
            "max_bandwidth_bytes_per_minute",
        ):
            self.pools.caps_changed()
        if (section, key) in SHAPING_KEYS or key == "max_connections_per_host":
            self.gate.configure()
            self.gate.offer_all(self.engine.queue.parked_destinations())
        # A pull waiting for the hourly cap's window is re-planned with the new settings
        # (a lowered or removed cap, a resume) instead of after the old wait.
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None
        self.messages_due()

    def _connection_caps(self) -> tuple[int, int]:
        out = self.engine.config.smtp_out
        return out.max_connections_per_host, out.max_connections

    def _housekeep(self) -> None:
        self._housekeeping = None
        self.refresh_settings()
        self.pools.forget_idle()
        self.gate.housekeep(self.engine.queue.parked_destinations())
        if len(self._domain_errors) > KEPT_DOMAIN_ERRORS:  # the oldest half goes
            for domain in list(self._domain_errors)[: KEPT_DOMAIN_ERRORS // 2]:
                del self._domain_errors[domain]
        now = self.reactor.seconds()
        if now - self._last_disk_check >= DISK_CHECK_SECONDS:
            self._last_disk_check = now
            self._check_disk()
        self._write_destination_states(now)
        self.messages_due()
        if self.running and not self.stopping:
            self._housekeeping = self.reactor.callLater(HOUSEKEEPING_SECONDS, self._housekeep)

    def _write_destination_states(self, now: float) -> None:
        """mailq/destinations.json, for `mailengine queue summary` (it reads files only)."""
        if not self.states_file:
            return
        try:
            self.engine.store.write_file(
                self.states_file, encode_states(self.gate.unusual_lines(now), now)
            )
        except OSError as exc:
            log.warn("cannot write {name}: {error}", name=self.states_file, error=exc)

    def _check_disk(self) -> None:
        try:
            free = self.engine.store.free_bytes()
        except OSError:
            return
        if disk_space_is_low(free, self.engine.config.server.low_disk_space_mb):
            body = (
                f"Only {free // (1024 * 1024)} MB are free on the file system of "
                f"{self.engine.store.root}. Mail that cannot be written is refused or kept "
                "in memory; free some space."
            )
            log.warn("low free disk space under {root}", root=self.engine.store.root)
            self.reporting.admin_notice("disk", "low free disk space", body)

    def out_of_descriptors(self, reason: str) -> None:
        """Manual §7's warning (at most once a minute) and the admin notice (once an hour)."""
        if self.fd_warnings.may_send("descriptors", self.reactor.seconds()):
            log.warn("{warning} ({reason})", warning=FD_WARNING, reason=reason)
        self.reporting.admin_notice("descriptors", "out of file descriptors", FD_WARNING)

    # -- the send loop ---------------------------------------------------

    def messages_due(self) -> None:
        """LiveQueue: something is due. Coalesced into one pull per reactor turn."""
        if self._pump_call is None and not self.stopping:
            self._pump_call = self.reactor.callLater(0, self.pump)

    def max_in_flight(self) -> int:
        return max(256, self.engine.config.smtp_out.max_connections * 4)

    def pump(self) -> None:
        """Take as many due messages as there is room for, best priority first."""
        self._pump_call = None
        if self.stopping:
            return
        out = self.engine.config.smtp_out
        debug = self.engine.config.logs.debug_send_loop
        cap = out.max_messages_per_hour
        now = self.reactor.seconds()
        wait = self.shaper.global_wait(now, is_paused=out.paused, hourly_cap=cap)
        if wait is not None and wait.until is None:  # paused
            if debug:
                log.info("send loop: paused; nothing taken")
            return
        room = self.max_in_flight() - len(self.attempts)
        if room <= 0:
            if debug:
                log.info("send loop: {n} messages in flight; waiting", n=len(self.attempts))
            return
        if wait is not None and wait.until is not None:
            self._hold_for_rate_cap(cap, now, wait.until)
            return
        if cap:
            room = min(room, self.shaper.hourly_room(cap, now))
        # Messages whose destination may not take them now are parked there (the gate).
        messages = self.engine.queue.take_due(room, self.gate)
        if not messages:
            return
        if self.held_by_rate_cap:
            self.held_by_rate_cap = False
        if cap:
            self.shaper.took_messages(len(messages), cap, now)
        if debug:
            log.info(
                "send loop: took {n} messages ({f} in flight)",
                n=len(messages),
                f=len(self.attempts) + len(messages),
            )
        for message in messages:
            self.start_attempt(message)
        if len(messages) == room:
            self.messages_due()  # there may be more

    def _hold_for_rate_cap(self, cap: int, now: float, until: float) -> None:
        self.held_by_rate_cap = True
        # At the cap every message waits its turn: one notice an hour, not one each.
        if self.rate_cap_notices.may_send("rate cap", now):
            log.info(
                "Your mailing speed has reached {cap} messages per hour "
                "([smtp_out] max_messages_per_hour); sending is held until the hour's "
                "window allows more.",
                cap=cap,
            )
        wait = max(0.01, until - now)
        if self._pump_call is None:
            self._pump_call = self.reactor.callLater(wait, self.pump)

    # -- one attempt -----------------------------------------------------

    def start_attempt(self, message: QueuedMessage) -> None:
        envelope = message.envelope
        held = self.gate.held(message.message_id)
        attempt = Attempt(message, held)
        self.attempts[message.message_id] = attempt
        data = message.data or b""
        body = dot_stuff(data)  # once per message, shared by its jobs (TWISTED.md §2.3)
        bounce_host = self.engine.config.smtp_out.bounce_host
        sender = encode_bounce_address(envelope.mail_from, bounce_host)
        groups = group_by_domain(envelope.rcpt_to_send)
        attempt.waiting = len(groups)
        if not groups:
            self._finish(attempt)
            return
        for domain, recipients in groups:
            job = Job(message.message_id, domain, recipients, sender, body, self._job_finished)
            attempt.jobs.append(job)
            job.note("--> Sending email to: " + ", ".join(recipients))
            if not domain:
                job.finish_all(HARD, "550 5.1.3 address has no domain", 550)
                continue
            if domain in held:
                # Its destination may not take more now (suspended, rate, its share of
                # connections): not tried; the message comes back for these recipients.
                job.finish_with([RecipientResult(a, UNTRIED) for a in recipients])
                continue
            self._resolving.add(job)
            self.shaper.dns_started(domain)
            d = self.resolver.resolve(domain)
            if not d.called:  # asked on the wire: let few more in until it is answered
                self.shaper.dns_asked(domain)
            d.addBoth(self._answered, job)
            d.addCallback(self._resolved, job)
            d.addErrback(self._resolve_error, job)

    def _answered(self, result: Any, job: Job) -> Any:
        self._resolving.discard(job)
        domain = job.domain
        self.shaper.dns_done(domain)
        if isinstance(result, DNSFailure):
            is_transient = not result.permanent
            self.shaper.dns_failed(domain, result.reason, result.until, is_transient=is_transient)
        elif isinstance(result, Destination):
            self.shaper.dns_resolved(domain)
        self.gate.dns_answered(job.message_id, domain)
        return result

    def _resolved(self, answer: Resolution, job: Job) -> None:
        if job.done:
            return  # ended untried by a stop while its lookup was out
        if isinstance(answer, DNSFailure):
            # RFC 3463: X.1.2 bad destination system; X.4.3 directory server failure.
            if answer.permanent:
                job.finish_all(HARD, answer.reason, status="5.1.2")
            else:
                job.finish_all(SOFT, answer.reason, status="4.4.3")
            return
        hops = self._hops(answer)
        if not hops:
            job.finish_all(
                SOFT,
                f"every mail server of {job.domain} is in [smtp_out] reject_mail_servers",
                status="4.4.4",  # unable to route
            )
            return
        job.hops = hops
        job.note(
            f"<-- DNS lookup succeeded, found {count_hosts(hops)} acceptable mail servers "
            f"for {job.domain}"
        )
        self._route(job)

    def _resolve_error(self, failure: Any, job: Job) -> None:
        log.failure(
            "{id}: resolver error for {domain}", failure, id=job.message_id, domain=job.domain
        )
        job.finish_all(SOFT, f"DNS lookup failed for {job.domain}: internal error", status="4.4.3")

    def _hops(self, destination: Destination) -> tuple[Any, ...]:
        # Every resolve returns a fresh Destination (equal preferences reshuffled), so
        # the hops are worked out per job: a few targets, no cache to keep.
        out = self.engine.config.smtp_out
        rejected = out.reject_mail_servers
        is_rejected = (lambda ip: ip in rejected) if rejected else (lambda ip: False)
        return hops_for(destination, out.remote_port, is_rejected)

    def _route(self, job: Job) -> None:
        """Send the job to its next usable server, or end it soft when none is left."""
        now = self.reactor.seconds()
        if self.shaper.is_suspended(job.domain, now):
            # Suspended while its lookup was out: not offered, due again (and parked).
            job.finish_with([RecipientResult(a, UNTRIED) for a in job.recipients])
            return
        index, skipped = next_hop(job.hops, job.hop_index, now, self.pools.health)
        for hop, reason in skipped:
            job.note("--> Attempting to connect to: " + hop.describe())
            job.note(f"<-- Not connected (failed moments ago): {reason}")
        if index >= len(job.hops):
            last = skipped[-1][1] if skipped else "no server answered"
            job.finish_all(
                SOFT, f"no mail server of {job.domain} could be reached: {last}", status="4.4.1"
            )
            return
        job.hop_index = index
        hop = job.hops[index]
        job.note("--> Attempting to connect to: " + hop.describe())
        verify = job.domain in self.engine.config.smtp_out.tls_verify_domains
        path = self.shaper.path_for(job.domain, (h.host for h in job.hops))
        pool = self.pools.pool_for(hop, hop.host if verify else "", path)
        if self.engine.config.logs.debug_send_loop:
            log.info("send loop: {id} for {d} -> {h}", id=job.message_id, d=job.domain, h=pool.name)
        pool.submit(job)

    def _fail_over(self, job: Job, reason: str) -> None:
        job.note(f"<-- Not connected: {reason}")
        self.gate.react(job.domain, reason)  # a refusing greeting may say "slow down"
        job.hop_index += 1
        self._route(job)

    def _job_finished(self, job: Job, results: list[RecipientResult]) -> None:
        attempt = self.attempts.get(job.message_id)
        failures = [r for r in results if r.kind != SENT and r.kind != UNTRIED]
        if failures:
            self._domain_errors.pop(job.domain, None)  # the latest last (kept longest)
            self._domain_errors[job.domain] = failures[-1].reply
            self.gate.react(job.domain, failures[-1].reply)
        elif results and all(r.kind == SENT for r in results):
            self._domain_errors.pop(job.domain, None)  # it works again: no stale error
        if job.pool is not None:
            job.pool.count(results)
        if attempt is None:
            return
        attempt.results.extend(results)
        if job.started:
            via = (job.remote_mta, job.mx_ip, job.egress_ip, job.tls)
            for r in results:
                attempt.via[r.address.lower()] = via
        attempt.waiting -= 1
        if attempt.waiting <= 0:
            self._finish(attempt)

    def _finish(self, attempt: Attempt) -> None:
        engine = self.engine
        message = attempt.message
        envelope = message.envelope
        self.attempts.pop(message.message_id, None)
        now = self.reactor.seconds()
        self._destinations_finished(attempt)
        keeps_inf = bool(engine.config.queue.save_done) or any(
            r.kind != SENT for r in attempt.results
        )
        summary = apply_attempt(
            envelope,
            attempt.results,
            now=now,
            intervals_minutes=engine.config.queue.retry_intervals_minutes,
            should_log=keeps_inf,
        )
        categorize_failures(summary, engine.bounce_patterns)
        if engine.events.is_on and summary.counted:
            size = envelope.received_size or len(message.data or b"")
            engine.events.emit_records(
                attempt_events(envelope, summary, now=now, size=size, via=attempt.via), now
            )
        engine.counters.attempt_outcome(
            sent=len(summary.sent),
            failed_hard=len(summary.hard),
            failed_soft=len(summary.soft_final),
            deferred=len(summary.soft_retry),
            own=is_own_mail(envelope),
        )
        if summary.final_failures or engine.config.reports.type:
            try:
                self.reporting.attempt_finished(envelope, summary, message.data or b"")
            except Exception:
                log.failure("{id}: failure reporting failed", id=message.message_id)
        queue = engine.queue
        d = queue.complete(message) if summary.done else queue.retry_later(message)
        d.addErrback(lambda f: log.failure("{id}: queue update failed", f, id=message.message_id))
        if not self.stopping:
            self.messages_due()
            return
        self._stop_writes.append(d)
        if self._drained is not None and not self.attempts:
            drained, self._drained = self._drained, None
            defer.DeferredList(self._stop_writes).addCallback(lambda _: drained.callback(None))

    def _destinations_finished(self, attempt: Attempt) -> None:
        errors: dict[str, str] = {}
        sent: set[str] = set()
        for r in attempt.results:
            domain = domain_of(r.address)
            if r.kind == SENT:
                sent.add(domain)
            elif r.kind != UNTRIED:
                errors[domain] = r.reply
        self.gate.finished(attempt.message.message_id, attempt.domains, errors, sent)

    def _suspended(self, domain: str) -> None:
        """A destination was suspended: its jobs waiting for a connection go back."""
        self.pools.withdraw(domain)

    # -- stop ------------------------------------------------------------

    def drain(self, bound_seconds: float = DRAIN_SECONDS) -> defer.Deferred[None]:
        """Stop taking mail; let transactions in flight finish within ``bound_seconds``,
        then abort the rest (soft outcomes) so every message goes back to the queue."""
        self.stopping = True
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None
        self.pools.stop_taking()
        # A lookup can take 14 s to time out; nothing was tried yet, so end at once.
        for job in list(self._resolving):
            job.finish_with([RecipientResult(a, UNTRIED) for a in job.recipients])
        self._resolving.clear()
        if not self.attempts:
            return defer.DeferredList(self._stop_writes).addCallback(lambda _: None)
        self._drained = defer.Deferred()
        timer = self.reactor.callLater(
            bound_seconds, self.pools.abort_all, "engine stopping: connection aborted"
        )

        def done(result: None) -> None:
            if timer.active():
                timer.cancel()
            # Let the queue writes started by the last finishes run first.
            return result

        return self._drained.addCallback(done)

    # -- the web admin ---------------------------------------------------

    def status(self, now: float, top: int = 20) -> DeliveryStatus:
        pools = sorted(
            self.pools.pools.values(),
            key=lambda p: (-p.open_connections, -bool(p.protocol_errors), -(p.sent + p.failed)),
        )[:top]
        hosts = tuple(
            HostStatus(
                p.name,
                p.open_connections,
                p.sent,
                p.failed,
                p.last_error,
                p.protocol_errors,
                p.misbehaving,
            )
            for p in pools
        )
        queue = self.engine.queue
        # Counted as messages come and go (queue/tally.py): no walk of the queue here.
        ranked = [(c.domain, c.recipients, c.oldest_created) for c in queue.top_destinations(top)]
        shown = {d for d, _, _ in ranked}
        # Suspended, throttled or DNS-failing destinations are shown even when small.
        for d in self.shaper.unusual(now, top):
            if d not in shown:
                count = queue.destination(d)
                ranked.append(
                    (d, 0, now) if count is None else (d, count.recipients, count.oldest_created)
                )
        domains = tuple(self._domain_status(d, n, now - oldest, now) for d, n, oldest in ranked)
        shaper = self.shaper
        return DeliveryStatus(
            paused=bool(self.engine.config.smtp_out.paused),
            open_connections=self.pools.open_connections(),
            hosts=hosts,
            domains=domains,
            held_by_rate_cap=self.held_by_rate_cap,
            protocol_errors=self.pools.protocol_errors,
            destination_states=tuple(sorted(shaper.state_counts(now).items())),
            rule_events=tuple(
                (rule, event, n)
                for rule, events in sorted(shaper.rule_counts.items())
                for event, n in sorted(events.items())
            ),
            cluster=self.grants.view(now) if self.grants is not None else None,
        )

    def _domain_status(self, domain: str, queued: int, age: float, now: float) -> DomainStatus:
        view = self.shaper.state(domain, now)
        return DomainStatus(
            domain,
            queued,
            max(0.0, age),
            self._domain_errors.get(domain, ""),
            view.kind,
            view.label,
            view.reason,
            view.until,
        )

    # -- operator actions (web admin, JSON API) ----------------------------

    def suspend_destination(self, domain: str, minutes: float) -> None:
        """No new connection for ``domain`` for ``minutes``; its mail waits."""
        self.gate.suspend(domain.lower(), minutes)

    def resume_destination(self, domain: str) -> None:
        """Lift a suspension or throttle of ``domain`` at once."""
        self.gate.resume(domain.lower())

    def retry_destination_now(self, domain: str) -> int:
        """Every message waiting for ``domain`` (parked or retrying later) is due now."""
        domain = domain.lower()
        self.gate.resume(domain)
        return self.engine.queue.due_now(lambda msg: domain in destinations_of(msg))
