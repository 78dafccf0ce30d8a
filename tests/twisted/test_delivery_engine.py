"""The delivery engine with a fake reactor: live pause, DNS outcomes, drain, status."""

import os

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport

from mailengine.config.model import Config
from mailengine.delivery.sender import DeliveryEngine
from mailengine.dns.answer import Destination, DNSFailure, StaticResolver, Target
from mailengine.engine import Engine
from mailengine.observe.counters import Counters
from mailengine.queue.commit import GroupCommit
from mailengine.queue.envelope import Envelope
from mailengine.queue.ids import MessageIdFactory
from mailengine.queue.live import LiveQueue
from mailengine.queue.store import QueueStore
from mailengine.queue.tally import MessageTable
from tests.twisted.test_live_queue import SyncThreads


@pytest.fixture
def parts(tmp_path):
    reactor = MemoryReactorClock()
    reactor.advance(1_700_000_000)
    store = QueueStore(str(tmp_path / "mailq"))
    store.ensure_dirs()
    config = Config.defaults()
    counters = Counters(started=reactor.seconds())
    committer = GroupCommit(SyncThreads(), lambda: None)
    queue = LiveQueue(store, config, reactor, committer, counters)
    engine = Engine(
        root=str(tmp_path),
        config=config,
        reactor=reactor,
        store=store,
        queue=queue,
        counters=counters,
        committer=committer,
        ids=MessageIdFactory(1, 0, "me.test"),
        hostname="me.test",
    )
    resolver = StaticResolver(
        {
            "d.test": Destination("d.test", (Target(10, "mx.d.test", ("192.0.2.1",)),)),
            "later.test": DNSFailure("later.test", False, "DNS timeout"),
        }
    )
    delivery = DeliveryEngine(engine, resolver)
    delivery.startService()
    yield engine, delivery, reactor
    delivery.stopService()


def accept(engine, n, rcpt="a@d.test"):
    env = Envelope(
        message_id=f"M{n}@h",
        mail_from="s@src.test",
        rcpt_to_send=[rcpt],
        time_created=engine.reactor.seconds(),
    )
    engine.queue.accept_relay(env, b"Subject: x\r\n\r\nhi\r\n")


def talk(reactor, index=0):
    factory = reactor.tcpClients[index][2]
    proto = factory.buildProtocol(None)
    t = StringTransport()
    proto.makeConnection(t)
    proto.dataReceived(b"220 mx\r\n")
    proto.dataReceived(b"250-mx\r\n250 PIPELINING\r\n")
    return proto, t


def test_pausing_at_run_time_sends_new_mail_to_retry_and_resuming_sends_it(parts):
    engine, delivery, reactor = parts
    engine.config.apply("smtp_out", "paused", True)
    accept(engine, 1)
    reactor.advance(0)
    assert reactor.tcpClients == []
    assert os.path.exists(engine.store.path("retry", "M1@h", ".inf"))
    engine.config.apply("smtp_out", "paused", False)
    reactor.advance(0)
    proto, t = talk(reactor)
    assert b"RCPT TO:<a@d.test>" in t.value()
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    assert engine.counters.total_sent == 1
    assert not os.path.exists(engine.store.path("working", "M1@h", ".inf"))


def test_a_transient_dns_failure_is_retried_and_a_permanent_one_fails_hard(parts):
    engine, delivery, reactor = parts
    accept(engine, 1, "x@later.test")
    accept(engine, 2, "y@nowhere.test")  # StaticResolver: does not exist
    reactor.advance(0)
    assert engine.counters.total_deferred == 1 and engine.counters.total_failed_hard == 1
    retried = engine.store.read_envelope("retry", "M1@h", now=reactor.seconds())
    assert retried.send_tries == 1 and retried.rcpt_transient == ["x@later.test"]
    assert [f.address for f in engine.recent_failures.latest()] == ["y@nowhere.test"]


def test_drain_hands_back_waiting_and_in_flight_messages_without_losing_any(parts):
    engine, delivery, reactor = parts
    engine.config.override("smtp_out", "max_connections_per_host", 1)
    accept(engine, 1)
    accept(engine, 2)
    reactor.advance(0)
    proto, t = talk(reactor)  # M1 in flight, M2 waits for the connection
    drained = []
    delivery.drain(bound_seconds=5).addCallback(drained.append)
    assert drained == []
    reactor.advance(6)  # the bound: M1's transaction is aborted
    assert drained == [None]
    for message_id in ("M1@h", "M2@h"):
        env = engine.store.read_envelope("retry", message_id, now=reactor.seconds())
        assert env.rcpt_to_send == ["a@d.test"]
    untried = engine.store.read_envelope("retry", "M2@h", now=reactor.seconds())
    assert untried.send_tries == 0  # never offered to a server: not an attempt


def test_status_shows_hosts_domains_and_the_pause_switch(parts):
    engine, delivery, reactor = parts
    accept(engine, 1)
    reactor.advance(0)
    proto, t = talk(reactor)
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    accept(engine, 2, "z@later.test")
    reactor.advance(0)
    status = delivery.status(reactor.seconds())
    assert not status.paused and status.open_connections == 1
    [host] = status.hosts
    assert host.host == "mx.d.test (192.0.2.1:25)" and host.sent == 1
    [domain] = status.domains
    assert domain.domain == "later.test" and domain.queued_recipients == 1
    assert domain.last_error == "DNS timeout"


class LateResolver:
    """Answers only when the test says so."""

    def __init__(self):
        self.waiting = []

    def resolve(self, domain):
        d = defer.Deferred()
        self.waiting.append(d)
        return d


def test_a_stop_while_dns_is_asked_ends_at_once_and_the_late_answer_dials_nothing(parts):
    engine, delivery, reactor = parts
    resolver = delivery.resolver = LateResolver()
    accept(engine, 1)
    reactor.advance(0)
    drained = []
    delivery.drain(bound_seconds=20).addCallback(drained.append)
    reactor.advance(0)
    assert drained == [None]  # not after the lookup's own timeout
    resolver.waiting[0].callback(Destination("d.test", (Target(10, "mx.d.test", ("192.0.2.1",)),)))
    reactor.advance(0)
    assert reactor.tcpClients == []
    env = engine.store.read_envelope("retry", "M1@h", now=reactor.seconds())
    assert env.send_tries == 0 and env.rcpt_to_send == ["a@d.test"]


def notices_to_admin(engine):
    return [
        m
        for m in engine.queue.messages.values()
        if m.envelope.mail_from == "" and m.envelope.rcpt_to_send == ["admin@me.test"]
    ]


def test_low_disk_space_is_told_at_start_and_again_only_after_an_hour(parts):
    engine, delivery, reactor = parts
    engine.config.override("smtp_out", "paused", True)  # the notices stay in the queue
    engine.config.override("server", "admin_email", "admin@me.test")
    engine.config.override("server", "low_disk_space_mb", 10**9)
    reactor.advance(0)
    assert len(notices_to_admin(engine)) == 1
    for _ in range(59 * 12):  # checked every minute, still low, told once an hour
        reactor.advance(5)
    assert len(notices_to_admin(engine)) == 1
    for _ in range(2 * 12):
        reactor.advance(5)
    assert len(notices_to_admin(engine)) == 2
    engine.config.override("server", "low_disk_space_mb", 0)  # 0: never
    for _ in range(61 * 12):
        reactor.advance(5)
    assert len(notices_to_admin(engine)) == 2


def test_undeliverable_files_are_written_only_with_log_undeliverable(parts):
    engine, delivery, reactor = parts
    hard = engine.root_file("hard-undeliverable.txt")
    engine.config.override("logs", "log_undeliverable", False)
    accept(engine, 1, "y@nowhere.test")  # StaticResolver: does not exist
    reactor.advance(0)
    assert engine.counters.total_failed_hard == 1 and not os.path.exists(hard)
    engine.config.override("logs", "log_undeliverable", True)
    accept(engine, 2, "z@nowhere.test")
    reactor.advance(0)
    with open(hard, encoding="utf-8") as fh:
        line = fh.read()
    assert line.startswith("z@nowhere.test\t") and line.endswith("\n"), line


def test_a_message_left_without_recipients_is_finished_not_put_back_into_retry(parts):
    engine, delivery, reactor = parts
    env = Envelope(
        message_id="E@h", mail_from="s@src.test", rcpt_to_send=[], time_created=reactor.seconds()
    )
    engine.queue.accept_relay(env, b"Subject: x\r\n\r\nhi\r\n")
    for _ in range(3):
        reactor.advance(0)
    assert "E@h" not in engine.queue.messages and not delivery.attempts
    assert os.listdir(engine.store.dir("retry")) == []  # not an .inf the scan must skip


def test_lifting_the_hourly_cap_while_it_holds_sending_sends_at_once(parts):
    engine, delivery, reactor = parts
    engine.config.apply("smtp_out", "max_messages_per_hour", 1)
    accept(engine, 1)
    accept(engine, 2)
    reactor.advance(0)
    assert delivery.held_by_rate_cap and len(delivery.attempts) == 1
    engine.config.apply("smtp_out", "max_messages_per_hour", 0)  # the web admin lifts it
    reactor.advance(0)
    assert not delivery.held_by_rate_cap and len(delivery.attempts) == 2


def test_a_domain_that_works_again_shows_no_stale_last_error(parts):
    engine, delivery, reactor = parts
    accept(engine, 1)
    reactor.advance(0)
    proto, t = talk(reactor)
    proto.dataReceived(b"250 ok\r\n451 4.7.1 greylisted\r\n554 5.5.1 no recipients\r\n")
    [domain] = delivery.status(reactor.seconds()).domains  # M1 waits in retry/
    assert domain.domain == "d.test" and "greylisted" in domain.last_error
    accept(engine, 2)
    reactor.advance(0)
    assert t.value().endswith(
        b"DATA\r\nRSET\r\nMAIL FROM:<s@src.test>\r\nRCPT TO:<a@d.test>\r\nDATA\r\n"
    )
    proto.dataReceived(b"250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    assert engine.counters.total_sent == 1
    [domain] = delivery.status(reactor.seconds()).domains
    assert domain.last_error == ""


def test_the_engines_own_dsns_are_counted_apart_from_the_clients_mail(parts):
    engine, delivery, reactor = parts
    engine.config.override("queue", "use_dsn", True)
    accept(engine, 1, "y@nowhere.test")  # fails hard: a DSN goes to s@src.test
    for _ in range(3):
        reactor.advance(0)
    assert engine.queue.messages == {} and not delivery.attempts  # the DSN's attempt is over
    c = engine.counters
    # src.test does not exist either: the DSN failed too, but not as the client's mail.
    assert (c.total_failed_hard, c.own["failed_hard"], c.books.generated) == (1, 1, 1)
    assert c.books.failed_hard == 2  # the books follow every recipient, the engine's too


def test_undeliverable_files_hold_the_reply_or_with_the_setting_off_the_bare_address(parts):
    engine, delivery, reactor = parts
    hard = engine.root_file("hard-undeliverable.txt")
    accept(engine, 1, "y@nowhere.test")  # StaticResolver: does not exist
    reactor.advance(0)
    engine.config.override("logs", "undeliverable_reasons", False)
    accept(engine, 2, "z@nowhere.test")
    reactor.advance(0)
    with open(hard, encoding="utf-8") as fh:
        first, second = fh.read().splitlines()
    address, tab, reply = first.partition("\t")
    assert address == "y@nowhere.test" and tab and reply
    assert second == "z@nowhere.test"
    [latest, *_] = engine.recent_failures.latest()
    assert latest.category == "bad_domain"  # the engine's 5.1.2 for a missing domain
    assert engine.counters.bounces == {"bad_domain": 2}


def test_the_event_log_records_each_final_failure_with_its_category_when_flushed(parts, tmp_path):
    from mailengine.observe.eventlog import EventLog
    from mailengine.observe.events import parse_lines

    engine, delivery, reactor = parts
    engine.events = EventLog(
        str(tmp_path / "log"), retention_days=lambda: 10, is_enabled=lambda: True
    )
    engine.events.start(reactor)
    accept(engine, 1, "y@nowhere.test")
    reactor.advance(0)
    assert not os.path.exists(tmp_path / "log")  # buffered until the timer
    reactor.advance(1)
    [path] = os.listdir(tmp_path / "log")
    [event] = parse_lines((tmp_path / "log" / path).read_text())
    assert event["event"] == "failed" and event["recipient"] == "y@nowhere.test"
    assert event["category"] == "bad_domain" and event["message_id"] == "M1@h"
    engine.events.stop()


class NoWalk(MessageTable):
    """The live queue's message table, refusing to be walked while ``is_forbidden``."""

    is_forbidden = False

    def _walk(self):
        if self.is_forbidden:
            raise AssertionError("the queue was walked")

    def __iter__(self):
        self._walk()
        return super().__iter__()

    def values(self):
        self._walk()
        return super().values()

    def items(self):
        self._walk()
        return super().items()

    def keys(self):
        self._walk()
        return super().keys()


def queued(delivery, reactor):
    """{domain: (recipients, oldest seconds)} from status(), the queue not walked."""
    table = delivery.engine.queue.messages
    table.is_forbidden = True
    try:
        status = delivery.status(reactor.seconds())
    finally:
        table.is_forbidden = False
    return {d.domain: (d.queued_recipients, d.oldest_seconds) for d in status.domains}


def test_status_follows_enqueue_deliver_defer_hold_and_delete_without_walking_the_queue(parts):
    engine, delivery, reactor = parts
    engine.queue.messages = NoWalk()
    engine.config.override("smtp_out", "max_connections_per_host", 1)
    accept(engine, 1)  # d.test: sent below
    accept(engine, 2)  # waits for d.test's one connection; held by the operator
    reactor.advance(10)
    accept(engine, 3, "z@later.test")  # DNS timeout: deferred to retry/
    accept(engine, 4, "y@later.test")
    assert queued(delivery, reactor) == {"d.test": (2, 10.0), "later.test": (2, 0.0)}
    reactor.advance(0)
    m2 = engine.queue.messages.get("M2@h")
    engine.queue.hold(m2, m2.envelope)  # web/inmemory.py's hold
    assert queued(delivery, reactor) == {"d.test": (1, 10.0), "later.test": (2, 0.0)}
    proto, t = talk(reactor)
    proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    reactor.advance(5)
    assert queued(delivery, reactor) == {"later.test": (2, 5.0)}
    assert engine.queue.messages.get("M3@h").location == "retry"
    engine.store.move("M3@h", "retry", "hold")  # web/queuecontrol.py's hold of a file
    engine.queue.forget("M3@h")
    assert queued(delivery, reactor) == {"later.test": (1, 5.0)}
    engine.queue.delete(engine.queue.messages.get("M4@h"))
    assert queued(delivery, reactor) == {"later.test": (0, 0.0)}  # shown: its DNS fails
    assert os.path.exists(engine.store.path("hold", "M2@h", ".inf"))


def test_status_counts_what_an_attempt_left_to_send(parts):
    engine, delivery, reactor = parts
    env = Envelope(
        message_id="M1@h",
        mail_from="s@src.test",
        rcpt_to_send=["a@d.test", "b@d.test", "c@later.test"],
        time_created=reactor.seconds(),
    )
    engine.queue.accept_relay(env, b"Subject: x\r\n\r\nhi\r\n")
    reactor.advance(0)
    proto, t = talk(reactor)
    proto.dataReceived(b"250 ok\r\n250 ok\r\n451 4.2.1 later\r\n354 go\r\n")
    proto.dataReceived(b"250 queued\r\n")
    reactor.advance(0)
    assert queued(delivery, reactor) == {"d.test": (1, 0.0), "later.test": (1, 0.0)}


class SlowFor:
    """Answers ``slow`` only when the test says so; every other domain at once."""

    def __init__(self, slow, other):
        self.slow, self.other, self.waiting = slow, other, []

    def resolve(self, domain):
        if domain != self.slow:
            return self.other.resolve(domain)
        d = defer.Deferred()
        self.waiting.append(d)
        return d


def test_a_slow_dns_lets_only_a_few_of_its_messages_into_the_send_loop(parts):
    engine, delivery, reactor = parts
    resolver = delivery.resolver = SlowFor("slow.test", delivery.resolver)
    for n in range(50):
        accept(engine, n, f"x{n}@slow.test")
    accept(engine, 99)  # d.test, answered at once
    reactor.advance(0)
    slow = [m for m in delivery.attempts if m != "M99@h"]
    assert len(slow) == 2 and "M99@h" in delivery.attempts
    assert len(resolver.waiting) == 2  # not one lookup per waiting message
    mx = Destination("slow.test", (Target(10, "mx.slow.test", ("192.0.2.9",)),))
    for d in resolver.waiting:
        d.callback(mx)
    reactor.advance(0)
    budget = delivery.shaper.budget(delivery.shaper.destinations["slow.test"])
    assert len(delivery.attempts) == 1 + budget  # answered: the rest go, up to its budget
