"""The messages the engine knows, in memory and in retry/, and when each is due.

Intake (relay mail held in memory, written to working/ first when durable,
offloaded to retry/ when memory is full), the retry/ index kept by scans,
the hand-over of due messages to the sender, and their return (retry later,
done, or dropped). Manual §5.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailengine.config.model import Config
from mailengine.observe.counters import Counters
from mailengine.queue.actions import DomainCut, cut_domain
from mailengine.queue.commit import GroupCommit
from mailengine.queue.content import to_canonical
from mailengine.queue.envelope import Envelope
from mailengine.queue.inf import InfError
from mailengine.queue.journal import ReceiptJournal
from mailengine.queue.location import IN_MEMORY, Location
from mailengine.queue.retryindex import RetryIndex, epoch_of, inode_of, rcpts_counted
from mailengine.queue.scanner import RetryScanner, ScanReport
from mailengine.queue.store import QueueStore
from mailengine.queue.tally import DestinationCount, MessageTable
from mailengine.scheduler.schedule import Schedule, has_memory_room

log = Logger(namespace="mailengine.queue")

JOURNAL_TICK_SECONDS = 5.0
# The active set (Postfix's qmgr_message_active_limit is 20,000): retry/ messages due
# within the horizon are held whole (envelope, schedule entry), up to this many; the
# rest of retry/ is in the compact index (queue/retryindex.py) and comes in as it
# comes due. Memory then does not grow with a backlog's envelopes (issue 12 item 6).
ACTIVE_LIMIT = 20_000
HORIZON_SECONDS = 3600.0
PROMOTE_SECONDS = 1.0
DATED_AHEAD_SECONDS = 30 * 86400.0
PROMOTE_BATCH = 2_000


@attrs.define(eq=False)
class QueuedMessage:
    """A message and where it is (queue/location.py)."""

    envelope: Envelope
    data: bytes | None = None
    location: Location = Location.MEMORY
    inode: int = 0  # of retry/ID.inf when indexed by a scan; 0 when we wrote it
    size: int = 0
    segment: Any = None  # the receipt journal segment holding it (Location.JOURNAL)
    epoch: int = 0  # the retry/ scan pass during which it was last indexed

    @property
    def message_id(self) -> str:
        return self.envelope.message_id


class Consumer(Protocol):
    """The sender: told when messages are due; it pulls them with ``take_due``."""

    def messages_due(self) -> None: ...


class Gate(Protocol):
    """The sender's traffic shaping, asked for each due message before it is taken."""

    def blocked_by(self, msg: QueuedMessage) -> str | None:
        """The destination that may not take it now (it is parked under that name)."""

    def admitted(self, msg: QueuedMessage) -> None:
        """It is taken: its destinations count it in flight."""


class LiveQueue:
    """One per engine. Decisions come from the scheduler; files from the store."""

    def __init__(
        self,
        store: QueueStore,
        config: Config,
        clock: IReactorTime,
        committer: GroupCommit,
        counters: Counters,
        now: Callable[[], float] | None = None,
        run_in_thread: Callable[[Callable[[], Any]], defer.Deferred] | None = None,
    ) -> None:
        self.store = store
        # File reading off the reactor thread (inline when none is given: tests).
        self.run_in_thread = run_in_thread or defer.maybeDeferred
        self.index = RetryIndex()
        self._promote_call: IDelayedCall | None = None
        self._promoting = False
        self.config = config
        self.clock = clock
        self.committer = committer
        self.counters = counters
        self._now = now or clock.seconds
        # Tallied per destination as messages come and go (queue/tally.py).
        self.messages: MessageTable[QueuedMessage] = MessageTable()
        self.schedule = Schedule()
        self.memory_count = 0
        self.memory_bytes = 0
        self.consumer: Consumer | None = None
        self._wake: IDelayedCall | None = None
        self._stopping = False
        self.write_error = ""  # why the last write to retry/ failed
        self.journal = ReceiptJournal(store.dir("working"), self._now)
        committer.sync_journal = self.journal.sync
        self._journal_tick: IDelayedCall | None = None
        config.subscribe(self._setting_changed)
        self.scanner = RetryScanner(self)

    # -- memory accounting -------------------------------------------------

    def _reserve(self, size: int) -> None:
        self.memory_count += 1
        self.memory_bytes += size

    def _release(self, msg: QueuedMessage) -> None:
        if msg.data is not None or msg.location == Location.RESERVED:
            self.memory_count -= 1
            self.memory_bytes -= msg.size
        msg.data = None

    def has_room(self, size: int) -> bool:
        q = self.config.queue
        return has_memory_room(
            self.memory_count,
            self.memory_bytes,
            size,
            max_messages=q.max_messages_in_memory,
            max_kb=q.max_memory_kb,
        )

    # -- intake ------------------------------------------------------------

    def accept_relay(self, envelope: Envelope, data: bytes) -> defer.Deferred:
        """Take relay mail; the Deferred fires once it is as safe as configured.

        Memory when there is room and a sender, with use_disk_for_relay first
        appended to the receipt journal in working/ and fsynced (group commit:
        one fdatasync covers a batch); retry/ when memory is full, sending is
        paused, or no sender runs (manual §5: "mail accumulates in retry/").
        """
        now = self._now()
        durable = self.config.queue.use_disk_for_relay
        size = len(data)
        msg = QueuedMessage(envelope, None, Location.RESERVED, size=size)
        if (
            self.consumer is None
            or self._stopping
            or self.config.smtp_out.paused
            or not self.has_room(size)
        ):
            envelope.retry_time = now
            return self._write_retry(msg, data, durable)
        self._reserve(size)
        self.messages[envelope.message_id] = msg
        if not durable:
            self._hold(msg, data, Location.MEMORY)
            return defer.succeed(envelope.message_id)
        try:
            msg.segment, append = self.journal.append(
                envelope.message_id, envelope.to_inf().encode(), data
            )
        except OSError:  # no journal segment could be opened (disk full, permissions)
            self._release(msg)
            self.messages.pop(envelope.message_id, None)
            return defer.fail()
        d = self.committer.submit(append, journal=True)
        self._arm_journal_tick()

        def written(_: Any) -> str:
            self._hold(msg, data, Location.JOURNAL)
            if self.config.smtp_out.paused:
                self.spill_to_retry()  # paused while the append was on its way
            return envelope.message_id

        def failed(f: Any) -> Any:
            self._settle(msg)
            self._release(msg)
            self.messages.pop(envelope.message_id, None)
            return f

        return d.addCallbacks(written, failed)

    # -- the receipt journal -------------------------------------------------

    def _settle(self, msg: QueuedMessage) -> None:
        """The message no longer needs the journal (delivered, or safely in files)."""
        segment, msg.segment = msg.segment, None
        if segment is not None:
            for work in self.journal.settle(segment, msg.message_id):
                self._background(work, msg.message_id, "settling in the journal")

    def _background(self, work: Any, message_id: str, what: str) -> None:
        self.committer.submit(work).addErrback(self._log_failure, message_id, what)

    def _arm_journal_tick(self) -> None:
        if self._journal_tick is None or not self._journal_tick.active():
            self._journal_tick = self.clock.callLater(JOURNAL_TICK_SECONDS, self.journal_tick)

    def journal_tick(self) -> None:
        """Retire settled segments; write messages in flight for long to working/ files."""
        self._journal_tick = None
        works, overdue = self.journal.tick()
        for work in works:
            self._background(work, "-", "removing a journal segment")
        for message_id in overdue:
            msg = self.messages.get(message_id)
            if msg is not None and msg.location == Location.JOURNAL and msg.data is not None:
                self._materialize(msg)
        if self.journal.has_segments:
            self._arm_journal_tick()

    def _materialize(self, msg: QueuedMessage) -> None:
        """Journal -> working/ files (fsynced), then settle: the manual's working/ form."""
        envelope, data = msg.envelope, msg.data
        assert data is not None
        inf_bytes = envelope.to_inf().encode()
        msg.location = Location.WORKING  # later work on it runs after this write (commit order)

        def write() -> None:
            self.store.write_data_and_inf("working", envelope.message_id, data, inf_bytes)

        d = self.committer.submit(write, durable=True)
        d.addCallback(lambda _: self._settle(msg))
        d.addErrback(self._log_failure, msg.message_id, "writing to working/")

    def _hold(self, msg: QueuedMessage, data: bytes, location: Location) -> None:
        msg.data = data
        msg.location = location
        self.schedule.add(msg.message_id, self._now(), msg.envelope.priority)
        self._notify()

    def _write_retry(self, msg: QueuedMessage, data: bytes, durable: bool) -> defer.Deferred:
        envelope = msg.envelope
        inf_bytes = envelope.to_inf().encode()
        write = self.put_work("retry", envelope.message_id, Location.OFFLOADING, data, inf_bytes)
        # Known while its files are written, so a retry/ scan meanwhile does not
        # take it for mail another program dropped in.
        msg.location = Location.OFFLOADING
        self.messages[envelope.message_id] = msg

        def written(inode: int) -> str:
            msg.inode = inode
            self._index_retry(msg)
            if self.config.logs.debug_program:
                log.info("{id}: offloaded to retry/", id=envelope.message_id)
            return envelope.message_id

        def failed(failure: Any) -> Any:
            if self.messages.get(envelope.message_id) is msg:
                del self.messages[envelope.message_id]
            return failure

        return self.committer.submit(write, durable=durable).addCallbacks(written, failed)

    def _index_retry(self, msg: QueuedMessage) -> None:
        """A message now in retry/: active (whole, scheduled) when it is due within the
        horizon and the active set has room, else only in the compact index."""
        message_id = msg.message_id
        msg.location = Location.RETRY
        msg.epoch = max(msg.epoch, self.scanner.epoch)
        msg.data = None
        now = self._now()
        due = msg.envelope.retry_time if msg.envelope.retry_time is not None else now
        if due > now + HORIZON_SECONDS or not self._has_active_room(message_id):
            self.messages.pop(message_id, None)
            self.schedule.remove(message_id)
            rcpts = len(msg.envelope.rcpt_to_send)  # in the books: it was read
            self.index.add(message_id, due, msg.inode, msg.epoch, rcpts)
            self._arm_promote()
            return
        self.index.remove(message_id)  # (counted in the books as held whole now)
        self.messages[message_id] = msg
        self.schedule.add(message_id, due, msg.envelope.priority)
        self._notify()

    def _has_active_room(self, message_id: str) -> bool:
        # Everything known whole that is not message data in memory: retry/ messages
        # and the few being moved.
        held = len(self.messages) - self.memory_count - (message_id in self.messages)
        return held < ACTIVE_LIMIT

    def _arm_promote(self) -> None:
        if self._promote_call is None and not self._stopping:
            self._promote_call = self.clock.callLater(PROMOTE_SECONDS, self.promote)

    def promote(self) -> None:
        """Bring index entries that come due within the horizon into the active set
        (their files are read in a worker thread), as room allows."""
        self._promote_call = None
        if self._stopping or self._promoting:
            self._arm_promote()
            return
        room = ACTIVE_LIMIT - (len(self.messages) - self.memory_count)
        if room > 0:
            picked = self.index.pop_due(self._now() + HORIZON_SECONDS, min(room, PROMOTE_BATCH))
            if picked:
                # They leave the books here and come back in, read afresh, when found.
                self.counters.books.removed += sum(rcpts_counted(p) for _, p in picked)
                self._promoting = True
                d = self.scanner.read_ids(picked, self.run_in_thread)

                def done(result: Any) -> None:
                    self._promoting = False
                    if isinstance(result, Failure):
                        log.failure("reading retry/ messages that came due failed", result)
                    self._arm_promote()

                d.addBoth(done)
                return
        if len(self.index):
            self._arm_promote()

    def drop_indexed(self, message_id: str) -> bool:
        """Remove an entry of the compact index (its file went, or is read afresh)."""
        packed = self.index.remove(message_id)
        if packed is None:
            return False
        self.counters.books.removed += rcpts_counted(packed)
        return True

    @property
    def indexed_count(self) -> int:
        """Messages the engine knows: held whole, and in the compact index of retry/."""
        return len(self.messages) + len(self.index)

    def accept_incoming(self, envelope: Envelope, data: bytes) -> defer.Deferred:
        """Mail for a local domain: incoming/ with save_incoming, else dropped (manual §2).

        Saved mail is synced before the 250 whatever use_disk_for_relay says: that
        setting chooses memory for relay mail only, and incoming mail has no other copy.
        """
        if not self.config.queue.save_incoming:
            return defer.succeed(envelope.message_id)
        inf_bytes = envelope.to_inf().encode()

        def write() -> None:
            self.store.write_data_and_inf("incoming", envelope.message_id, data, inf_bytes)

        return self.committer.submit(write, durable=True).addCallback(lambda _: envelope.message_id)

    def _setting_changed(self, section: str, key: str, value: Any) -> None:
        if (section, key) == ("smtp_out", "paused") and value:
            self.spill_to_retry()

    def spill_to_retry(self) -> int:
        """Sending paused: write every waiting message held in memory or working/ to retry/.

        Manual §3: while paused, mail accumulates in retry/ (where an operator can see
        and manage it); messages already in flight finish their attempt.
        """
        waiting = [self.messages[str(k)] for k in self.schedule if k in self.messages]
        spilled = [m for m in waiting if m.location in IN_MEMORY]
        for msg in spilled:
            self.schedule.remove(msg.message_id)
            if msg.envelope.retry_time is None:
                msg.envelope.retry_time = self._now()
            self.retry_later(msg)
        if spilled:
            log.info(
                "sending paused: {n} messages held in memory written to retry/", n=len(spilled)
            )
        return len(spilled)

    # -- the retry/ scan (queue/scanner.py reads; the index lives here) ----

    def now(self) -> float:
        return self._now()

    def scan_retry(self) -> ScanReport:
        """Index files in retry/ that other programs (or a restart) put there (inline)."""
        return self.scanner.scan()

    def scan_retry_in_background(self, run_in_thread: Any) -> defer.Deferred:
        """The same, listing and reading in worker threads (the periodic check)."""
        return self.scanner.scan_in_background(run_in_thread)

    def retry_state(self, message_id: str, inode: int, epoch: int) -> str:
        """What a listed ``retry/ID.inf`` is to the index: "known" (marked as seen by
        pass ``epoch``), "busy" (ours, being written or moved) or "unknown" (new, or
        replaced by another program: re-read)."""
        known = self.messages.get(message_id)
        if known is None:
            packed = self.index.get(message_id)
            if packed is not None and inode_of(packed) in (0, inode):
                self.index.mark_seen(message_id, epoch)
                return "known"
            return "unknown"
        if known.location != Location.RETRY:
            return "busy"
        if known.inode in (0, inode):
            known.inode = inode
            known.epoch = max(known.epoch, epoch)
            return "known"
        return "unknown"

    def index_unread(self, message_id: str, inode: int, mtime: float, epoch: int) -> bool:
        """Index a listed file without reading it when its time says it is not due soon:
        the engine dates a deferred message's ``.inf`` to its retry time (as Postfix
        dates deferred files), so a big backlog is indexed from the listing alone."""
        now = self._now()
        # Further ahead than any retry interval: not our dating (a clock or a copy
        # gone wrong); the file says when it is due.
        if not now + HORIZON_SECONDS < mtime <= now + DATED_AHEAD_SECONDS:
            return False
        self.index.add(message_id, mtime, inode, epoch)
        self._arm_promote()
        return True

    def index_found(self, envelope: Envelope, inode: int, epoch: int) -> bool:
        """Index a message read from retry/ by a scan; False when it is ours meanwhile."""
        message_id = envelope.message_id
        known = self.messages.get(message_id)
        if known is not None:
            if known.location != Location.RETRY or known.inode in (0, inode):
                return False
            self.schedule.remove(message_id)  # replaced by another program
            del self.messages[message_id]
            self.counters.books.removed += len(known.envelope.rcpt_to_send)
        self.drop_indexed(message_id)
        msg = QueuedMessage(
            envelope, None, Location.RETRY, inode=inode, size=envelope.received_size
        )
        msg.epoch = epoch
        self._index_retry(msg)
        self.counters.books.found += len(envelope.rcpt_to_send)
        return True

    def known_inode(self, message_id: str) -> int | None:
        """The inode of ``retry/ID.inf`` as indexed (0: not indexed); None while the
        message is ours elsewhere (in memory, being sent, being written)."""
        known = self.messages.get(message_id)
        if known is None:
            packed = self.index.get(message_id)
            return 0 if packed is None else inode_of(packed)
        return known.inode if known.location == Location.RETRY else None

    def forget_if_gone(self, message_id: str, epoch: int) -> bool:
        """Its ``retry/ID.inf`` is gone (held, deleted or claimed by an operator action):
        forget it, unless it was indexed again since the check began (``epoch``)."""
        known = self.messages.get(message_id)
        if known is None:
            packed = self.index.get(message_id)
            if packed is None or epoch_of(packed) >= epoch:
                return False
            return self.drop_indexed(message_id)
        if known.location != Location.RETRY or known.epoch >= epoch:
            return False
        self.forget(message_id)
        return True

    def forget_unseen(self, epoch: int) -> int:
        """After a scan pass: forget active retry/ messages whose files are gone (removed
        or held by the operator): not seen by the pass, nor indexed since it began.
        (The compact index is walked in slices by the scanner: ``index.stale``.)"""
        gone = [
            message_id
            for message_id, msg in self.messages.items()
            if msg.location == Location.RETRY and msg.inode and msg.epoch < epoch
        ]
        for message_id in gone:
            self.forget(message_id)
        return len(gone)

    def forget(self, message_id: str) -> QueuedMessage | None:
        """Stop tracking a message (its files were removed or moved by someone else)."""
        self.drop_indexed(message_id)
        self.schedule.remove(message_id)
        msg = self.messages.pop(message_id, None)
        if msg is not None:
            self._release(msg)
            self._settle(msg)
            self.counters.books.removed += len(msg.envelope.rcpt_to_send)
        return msg

    # -- operator actions (the web admin) on messages held in memory --------

    def is_taken(self, message_id: str) -> bool:
        """Taken by the sender (known but no longer scheduled): left alone."""
        return message_id not in self.schedule

    def cut_domain(self, msg: QueuedMessage, domain: str, now: float) -> DomainCut:
        """Drop its recipients at ``domain`` when others remain (queue.actions.cut_domain);
        a message in working/ gets its ``.inf`` rewritten."""
        cut = cut_domain(msg.envelope, domain, now)
        if cut.keep_message:
            self.messages.recount(msg.message_id)
            self.counters.books.removed += cut.removed
            if cut.removed and msg.location == Location.WORKING:
                inf = msg.envelope.to_inf().encode()
                work = partial(self.store.replace_inf, "working", msg.message_id, inf)
                self._background(work, msg.message_id, "queue file update")
        return cut

    def delete(self, msg: QueuedMessage) -> None:
        """Forget it (its memory released, its journal copy settled), its files too."""
        location = msg.location
        self.forget(msg.message_id)
        if location == Location.WORKING:
            work = partial(self.store.delete, "working", msg.message_id)
            self._background(work, msg.message_id, "queue file update")

    def hold(self, msg: QueuedMessage, envelope: Envelope) -> defer.Deferred:
        """Write it with ``envelope`` to hold/ (a rename from working/, else new files),
        then forget it. Meanwhile the sender cannot take it, nor a pause, a stop or
        the journal write it elsewhere. When the write fails it goes to retry/ instead
        and the Deferred fails."""
        message_id, source = msg.message_id, msg.location
        put = self.put_work("hold", message_id, source, msg.data, envelope.to_inf().encode())
        self.schedule.remove(message_id)
        msg.location = Location.HOLDING

        def held(_: Any) -> None:
            self.forget(message_id)

        def failed(failure: Failure) -> Failure:
            log.failure("{id}: could not write it to hold/", failure, id=message_id)
            msg.location = source
            self.retry_later(msg)
            return failure

        return self.committer.submit(put, durable=True).addCallbacks(held, failed)

    def make_due_now(self, msg: QueuedMessage, now: float) -> bool:
        """Make it due now; False when it already was."""
        due = self.schedule.due_time(msg.message_id)
        if due is None or due <= now:
            return False
        self.schedule.add(msg.message_id, now, msg.envelope.priority)
        if self.consumer is not None:
            self.consumer.messages_due()
        return True

    # -- hand-over to the sender -------------------------------------------

    def _notify(self) -> None:
        if self.consumer is None:
            return
        now = self._now()
        if self.schedule.has_due(now):
            self.consumer.messages_due()
        self._arm_wake()

    def _arm_wake(self) -> None:
        due = self.schedule.next_due()
        if due is None:
            return
        if self._wake is not None and self._wake.active():
            if self._wake.getTime() <= due:
                return
            self._wake.cancel()
        delay = max(0.0, due - self._now())
        self._wake = self.clock.callLater(delay, self._notify)

    def take_due(self, limit: int, gate: Gate | None = None) -> list[QueuedMessage]:
        """Up to ``limit`` due messages, best priority first, with their data loaded.

        A message whose destination may not take it now (``gate``) is parked under
        that destination, still scheduled, until the sender releases it
        (``release``). A message in retry/ is claimed by renaming it to working/; if
        another program moved or removed it first, it is forgotten. Disk messages are
        loaded only while memory has room.
        """
        now = self._now()
        out: list[QueuedMessage] = []
        while len(out) < limit:
            ids = self.schedule.pop_due(now, 1)
            if not ids:
                break
            message_id = str(ids[0])
            msg = self.messages.get(message_id)
            if msg is None:
                continue
            group = gate.blocked_by(msg) if gate is not None else None
            if group is not None:
                self.schedule.park(message_id, group, now, msg.envelope.priority)
                continue
            if msg.location == Location.RETRY:
                if not self.has_room(msg.size or 4096):
                    self.schedule.add(message_id, now, msg.envelope.priority)
                    break
                if not self._load(msg, now):
                    continue
            if gate is not None:
                gate.admitted(msg)
            out.append(msg)
        return out

    def due_now(self, which: Callable[[QueuedMessage], bool]) -> int:
        """Make every scheduled message ``which`` picks due at once (the operator's
        "retry now"); a walk of the index, for an operator's click, not the send loop."""
        now = self._now()
        count = 0
        for message_id in self.schedule:
            msg = self.messages.get(str(message_id))
            if msg is not None and which(msg):
                self.schedule.add(message_id, now, msg.envelope.priority)
                count += 1
        if count:
            self._notify()
        return count

    def parked_destinations(self) -> list[str]:
        """Destinations with messages parked under them (waiting for room)."""
        return [str(group) for group in self.schedule.parked_groups()]

    def release(self, destination: str, count: int) -> int:
        """Offer up to ``count`` messages parked under ``destination`` again."""
        moved = self.schedule.release(destination, count)
        if moved and self.consumer is not None:
            self.consumer.messages_due()
        return moved

    def _load(self, msg: QueuedMessage, now: float) -> bool:
        message_id = msg.message_id
        try:
            self.store.move(message_id, "retry", "working")
        except FileNotFoundError:
            self.forget(message_id)
            return False
        try:
            envelope = self.store.read_envelope("working", message_id, now=now)
            data = to_canonical(self.store.read_data("working", message_id))
        except (InfError, OSError) as exc:
            log.warn(
                "{id}: cannot load from working/, moved back to retry/: {why}",
                id=message_id,
                why=exc,
            )
            try:
                self.store.move(message_id, "working", "retry")
            except OSError:
                pass
            self.forget(message_id)
            self.scanner.mark_bad(message_id, self.store.inode("retry", message_id))
            return False
        msg.envelope = envelope
        self.messages.recount(message_id)
        msg.size = len(data)
        self._reserve(msg.size)
        msg.data = data
        msg.location = Location.WORKING
        return True

    def retry_later(self, msg: QueuedMessage) -> defer.Deferred:
        """Put a message back into retry/ with its updated envelope; due at its retrytime.

        A message whose only safe copy is the journal is written durably first.
        """
        envelope = msg.envelope
        inf_bytes = envelope.to_inf().encode()
        data, location = msg.data, msg.location
        self._release(msg)
        msg.location = Location.MOVING
        self.messages.recount(envelope.message_id)  # its attempt took some recipients
        durable = location == Location.JOURNAL or self.config.queue.use_disk_for_relay

        put = self.put_work("retry", envelope.message_id, location, data, inf_bytes)
        due = envelope.retry_time

        def write() -> int:
            inode = put()
            if due is not None:
                try:
                    self.store.date_inf("retry", envelope.message_id, due)
                except FileNotFoundError:
                    # Another worker process took it already (it read the retry time from
                    # the .inf): the copy is safe, and failing here would keep it twice.
                    pass
            return inode

        def written(inode: int) -> None:
            # Known by inode: a later rewrite by `mailengine queue` (a new file) is re-read.
            msg.inode = inode
            self._settle(msg)
            self._index_retry(msg)

        d = self.committer.submit(write, durable=durable)
        return d.addCallback(written).addErrback(self._lost_write, msg, data, location)

    def complete(self, msg: QueuedMessage) -> defer.Deferred:
        """Finished: moved to done/ (status=done) with save_done, else removed."""
        envelope = msg.envelope
        data, location = msg.data, msg.location
        self._release(msg)
        self.messages.pop(envelope.message_id, None)
        self.schedule.remove(envelope.message_id)
        self._settle(msg)  # delivered: a crash now may repeat it, never lose it
        write: Callable[[], Any]
        if self.config.queue.save_done:
            envelope.status = "done"
            inf_bytes = envelope.to_inf().encode()
            write = self.put_work("done", envelope.message_id, location, data, inf_bytes)
        elif location == Location.WORKING:
            write = partial(self.store.delete, "working", envelope.message_id)
        else:
            return defer.succeed(None)
        return self.committer.submit(write, durable=False).addErrback(
            self._log_failure, envelope.message_id, "finishing"
        )

    def put_work(
        self,
        dirname: str,
        message_id: str,
        location: Location,
        data: bytes | None,
        inf_bytes: bytes,
    ) -> Callable[[], int]:
        """Work that puts a message into ``dirname`` (a rename from working/, else new
        files) and returns the inode of its new ``.inf``."""

        def put() -> int:
            if location == Location.WORKING:
                self.store.replace_inf("working", message_id, inf_bytes)
                self.store.move(message_id, "working", dirname)
            else:
                assert data is not None
                self.store.write_data_and_inf(dirname, message_id, data, inf_bytes)
            return self.store.inode(dirname, message_id)

        return put

    def _lost_write(
        self, failure: Any, msg: QueuedMessage, data: bytes | None, location: Location
    ) -> None:
        # Keep the message where it was and due again later rather than lose it.
        self.write_error = str(failure.value)
        if not failure.check(OSError):
            log.failure("{id}: cannot write to retry/; kept in memory", failure, id=msg.message_id)
        elif not self._stopping:  # a stop says it once for all (queue.writeback)
            log.warn(
                "{id}: cannot write to retry/ ({why}); kept in memory",
                id=msg.message_id,
                why=self.write_error,
            )
        if data is not None:
            self._reserve(len(data))
            msg.data = data
        msg.location = location
        self.messages[msg.message_id] = msg
        self.schedule.add(msg.message_id, self._now() + 60, msg.envelope.priority)

    def _log_failure(self, failure: Any, message_id: str, what: str) -> None:
        log.failure("{id}: error while {what}", failure, id=message_id, what=what)

    # -- shutdown ----------------------------------------------------------

    def drain(self) -> defer.Deferred:
        """Write every message still held (memory or working/) to retry/ (graceful stop)."""
        self._stopping = True
        if self._promote_call is not None and self._promote_call.active():
            self._promote_call.cancel()
        if self._wake is not None and self._wake.active():
            self._wake.cancel()
        if self._journal_tick is not None and self._journal_tick.active():
            self._journal_tick.cancel()
        waits = [
            self.retry_later(msg)
            for msg in list(self.messages.values())
            if msg.location in IN_MEMORY
        ]
        d = defer.DeferredList(waits, consumeErrors=True)

        def close_journal(_: Any) -> defer.Deferred:
            for work in self.journal.close_all():
                self._background(work, "-", "removing a journal segment")
            return self.committer.when_idle()

        return d.addCallback(close_journal)

    # -- views -------------------------------------------------------------

    def held_only_in_memory(self) -> int:
        """Messages with no copy on disk (a stop must not end while there are any)."""
        return sum(1 for m in self.messages.values() if m.location == Location.MEMORY)

    def queued_recipients(self) -> int:
        """Recipients still to send of every message the engine holds (the books' queued),
        as tallied when messages come and go (no walk)."""
        return self.messages.tally.recipients + self.index.recipients

    def oldest_created(self) -> float | None:
        """The creation time of the oldest message held whole (None: none)."""
        return self.messages.tally.oldest_created()

    def destination(self, domain: str) -> DestinationCount | None:
        """Recipients queued for ``domain`` in the messages held whole, and the oldest's
        creation time (kept as messages come and go: no walk)."""
        return self.messages.tally.get(domain)

    def top_destinations(self, n: int) -> list[DestinationCount]:
        """The ``n`` destinations with the most recipients queued (no walk of the queue)."""
        return self.messages.tally.top(n)

    def counts(self) -> dict[str, int]:
        by: dict[str, int] = {"memory": 0, "journal": 0, "working": 0, "retry": 0}
        for msg in self.messages.values():
            if msg.location in by:
                by[msg.location] += 1
        by["retry"] += len(self.index)
        return by
