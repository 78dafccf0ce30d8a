"""Operator actions on the queue files: list, show, delete, retry now, hold, release, summary.

One piece of code for the web admin and the ``mailengine queue`` command, safe
while the engine runs. Every change first *claims* the message by renaming its
``ID.inf`` to ``ID.inf-claimed``: the engine claims by renaming ``ID.inf`` too,
so whoever renames first owns the message and the other sees it gone. A
rewritten ``.inf`` is a new file (a new inode), which the engine's retry/ scan
notices and re-reads. Held messages live in ``hold/``, which the engine never
reads. Ids are validated by the store before they touch a path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator

import attrs

from mailengine.queue.envelope import Envelope, parse_envelope
from mailengine.queue.inf import InfError, decode_inf, is_valid_message_id
from mailengine.queue.shape import DomainShape, domain_of, queue_shape
from mailengine.queue.store import (
    DIRS,
    MAX_INF_BYTES,
    BadMessageId,
    QueueStore,
    open_regular,
    read_regular,
)

CLAIM = ".inf-claimed"
ACTIONS = ("delete", "retry-now", "hold", "release")
# Where each action may take a message from. working/ belongs to the engine
# (a message there is being sent); it returns to retry/ if the attempt fails.
ACTION_SOURCES: dict[str, tuple[str, ...]] = {
    "delete": ("retry", "hold", "incoming", "done"),
    "retry-now": ("retry",),
    "hold": ("retry",),
    "release": ("hold",),
}
NOT_FOUND = "not in the queue files (sent or removed?)"
BEING_SENT_FILES = "being sent now (in working/); try again when the attempt is over"
# An interrupted claim older than this is put back (a live action takes milliseconds).
STALE_CLAIM_SECONDS = 600.0
HEADER_LIMIT_BYTES = 64 * 1024

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``1d``, ``1w`` -> seconds; ValueError otherwise."""
    m = _AGE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not an age like 90s, 30m, 2h or 1d")
    return float(m.group(1)) * _AGE_UNITS[m.group(2).lower()]


def plural(n: int, noun: str) -> str:
    """``1 message``, ``2 messages``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def all_recipients(envelope: Envelope) -> list[str]:
    """Every recipient the message names, whatever its state (for searching)."""
    seen: dict[str, None] = {}
    for group in (
        envelope.rcpt_to_send,
        envelope.rcpt_sent,
        envelope.rcpt_failed,
        envelope.rcpt_transient,
    ):
        for address in group:
            seen.setdefault(address, None)
    return list(seen)


@attrs.frozen
class DomainCut:
    """What deleting one domain's recipients does to a message."""

    removed: int  # recipients still to send at the domain, now dropped
    kept: int  # recipients still to send elsewhere
    text: str

    @property
    def keep_message(self) -> bool:
        """Recipients elsewhere remain: the message stays (without the domain's)."""
        return self.kept > 0


def cut_domain(envelope: Envelope, domain: str, now: float) -> DomainCut:
    """Drop ``rcpt_to_send`` at ``domain`` when others remain (noted in the attempt log).

    Deleting "all mail to a domain" must not lose mail to other domains; when
    the domain was the only one left, the caller deletes the whole message.
    """
    wanted = domain.strip().lstrip("@").lower()
    keep = [r for r in envelope.rcpt_to_send if domain_of(r) != wanted]
    removed = len(envelope.rcpt_to_send) - len(keep)
    if not keep:
        return DomainCut(removed, 0, "")
    if not removed:
        return DomainCut(0, len(keep), f"no recipient at {wanted} left to send; left alone")
    envelope.rcpt_to_send = keep
    envelope.add_log(now, f"{plural(removed, 'recipient')} at {wanted} deleted by the operator")
    text = (
        f"{plural(removed, 'recipient')} at {wanted} removed; "
        f"kept for {plural(len(keep), 'other recipient')}"
    )
    return DomainCut(removed, len(keep), text)


@attrs.frozen
class QueueFilter:
    """Which messages: directories, a recipient domain, an address, a text, a minimum age."""

    dirs: tuple[str, ...] = ("retry",)
    domain: str = ""  # a recipient domain, exactly (example.com, not sub.example.com)
    address: str = ""  # the sender or a recipient, exactly (case-insensitive)
    text: str = ""  # a part of the id, the sender or a recipient
    older_than_seconds: float = 0.0

    @property
    def is_everything(self) -> bool:
        return not (self.domain or self.address or self.text or self.older_than_seconds)

    def matches(self, message_id: str, envelope: Envelope, now: float) -> bool:
        recipients = all_recipients(envelope)
        if self.domain:
            wanted = self.domain.strip().lstrip("@").lower()
            if all(domain_of(r) != wanted for r in recipients):
                return False
        if self.address:
            wanted = self.address.strip().strip("<>").lower()
            if wanted != envelope.mail_from.lower() and all(
                r.lower() != wanted for r in recipients
            ):
                return False
        if self.text:
            needle = self.text.strip().lower()
            haystack = [message_id, envelope.mail_from, *recipients]
            if all(needle not in h.lower() for h in haystack):
                return False
        return not (
            self.older_than_seconds and now - envelope.time_created < self.older_than_seconds
        )


@attrs.frozen
class QueueEntry:
    """One message file pair as found in a directory; ``error`` when its ``.inf`` is unusable."""

    message_id: str
    dirname: str
    mtime: float
    envelope: Envelope | None = None
    error: str = ""
    size: int = 0
    is_being_sent: bool = False  # in memory, taken by the delivery engine, on a connection
    is_waiting_to_send: bool = False  # taken, still waiting for DNS or a connection

    @property
    def recipients(self) -> list[str]:
        if self.envelope is None:
            return []
        return self.envelope.rcpt_to_send or all_recipients(self.envelope)


@attrs.frozen
class MessageDetail:
    entry: QueueEntry
    inf_text: str
    headers: str


@attrs.frozen
class ActionResult:
    message_id: str
    action: str
    ok: bool
    text: str  # what happened, for the operator: "held (retry/ -> hold/)", "not found", ...
    source: str = ""  # the directory the message was in
    changed_recipients: int = 0  # recipients deleted
    dest: str = ""  # where the message is afterwards ("" when gone or unchanged)
    sender: str = ""  # the message's MAIL FROM and the recipients the action touched
    recipients: tuple[str, ...] = ()  # (for the event log)


class QueueActions:
    """Operator actions over one mailq/ tree; each call takes ``now`` (epoch seconds)."""

    def __init__(self, store: QueueStore) -> None:
        self.store = store

    # -- finding and reading ---------------------------------------------------

    def locate(self, message_id: str) -> str | None:
        """The directory holding ``ID.inf``; BadMessageId for ids that are not queue names."""
        if not is_valid_message_id(message_id):
            raise BadMessageId(message_id)
        for dirname in DIRS:
            if os.path.exists(self.store.path(dirname, message_id, ".inf")):
                return dirname
        return None

    def read_entry(
        self, dirname: str, message_id: str, now: float, mtime: float = 0.0
    ) -> QueueEntry:
        size = 0
        try:
            size = os.path.getsize(self.store.path(dirname, message_id, ".dat"))
            envelope = self.store.read_envelope(
                dirname, message_id, now=now, require_recipients=False
            )
        except (InfError, OSError) as exc:
            return QueueEntry(
                message_id, dirname, mtime, None, str(exc) or type(exc).__name__, size
            )
        return QueueEntry(message_id, dirname, mtime, envelope, "", size)

    def entries(self, which: QueueFilter, now: float) -> Iterator[QueueEntry]:
        """Matching messages, oldest file first within each directory."""
        for dirname in which.dirs:
            found = sorted(self.store.scan(dirname), key=lambda f: (f[2], f[0]))
            for message_id, _, mtime in found:
                entry = self.read_entry(dirname, message_id, now, mtime)
                if entry.envelope is None:
                    # Unreadable: shown when listing everything or searching for its id.
                    if which.is_everything or (
                        which.text and which.text.strip().lower() in message_id.lower()
                    ):
                        yield entry
                    continue
                if which.matches(message_id, entry.envelope, now):
                    yield entry

    def page(
        self, which: QueueFilter, now: float, offset: int = 0, limit: int = 50
    ) -> tuple[list[QueueEntry], int]:
        """One page of matching messages and how many match in all.

        Without a filter only the page's ``.inf`` files are read.
        """
        if not which.is_everything:
            matched = list(self.entries(which, now))
            return matched[offset : offset + limit], len(matched)
        files = [
            (dirname, message_id, mtime)
            for dirname in which.dirs
            for message_id, _, mtime in sorted(self.store.scan(dirname), key=lambda f: (f[2], f[0]))
        ]
        chosen = files[offset : offset + limit]
        return [self.read_entry(d, m, now, t) for d, m, t in chosen], len(files)

    def show(self, message_id: str, now: float) -> MessageDetail | None:
        dirname = self.locate(message_id)
        if dirname is None:
            return None
        entry = self.read_entry(dirname, message_id, now)
        try:
            inf_text = self.store.read_inf(dirname, message_id).decode("utf-8", "replace")
        except (InfError, OSError):
            inf_text = ""
        return MessageDetail(entry, inf_text, self.read_headers(dirname, message_id))

    def read_headers(self, dirname: str, message_id: str) -> str:
        try:
            with os.fdopen(open_regular(self.store.path(dirname, message_id, ".dat")), "rb") as fh:
                head = fh.read(HEADER_LIMIT_BYTES)
        except OSError:
            return ""
        text = head.decode("utf-8", "replace").replace("\r\n", "\n")
        headers, sep, _ = text.partition("\n\n")
        return headers if sep or len(head) < HEADER_LIMIT_BYTES else headers + "\n[...]"

    def envelopes(self, dirs: Iterable[str], now: float) -> list[Envelope]:
        """Every readable envelope in ``dirs``."""
        found = []
        for dirname in dirs:
            for message_id, _, _ in self.store.scan(dirname):
                entry = self.read_entry(dirname, message_id, now)
                if entry.envelope is not None:
                    found.append(entry.envelope)
        return found

    def summary(self, dirs: Iterable[str], now: float) -> list[DomainShape]:
        return queue_shape(self.envelopes(dirs, now), now)

    # -- changing --------------------------------------------------------------

    def act(self, action: str, message_id: str, now: float) -> ActionResult:
        """One action on one message, wherever it is; the result says what happened."""
        if action not in ACTIONS:
            raise ValueError(f"no queue action {action!r} (actions: {', '.join(ACTIONS)})")
        dirname = self.locate(message_id)
        if dirname is None:
            return ActionResult(message_id, action, False, NOT_FOUND)
        result = self._act_in(action, dirname, message_id, now, domain="")
        self.store.sync_all()
        return result

    def act_on_matching(self, action: str, which: QueueFilter, now: float) -> list[ActionResult]:
        """``action`` on every message ``which`` selects (e.g. all mail to one domain).

        Delete with a domain removes only that domain's recipients from a message
        that also has others; the message itself goes when none are left.
        """
        if action not in ACTIONS:
            raise ValueError(f"no queue action {action!r} (actions: {', '.join(ACTIONS)})")
        results = []
        for dirname in which.dirs:
            if dirname not in ACTION_SOURCES[action]:
                continue
            for entry in list(self.entries(attrs.evolve(which, dirs=(dirname,)), now)):
                results.append(
                    self._act_in(action, dirname, entry.message_id, now, domain=which.domain)
                )
        if results:
            self.store.sync_all()
        return results

    def _act_in(
        self, action: str, dirname: str, message_id: str, now: float, domain: str
    ) -> ActionResult:
        sources = ACTION_SOURCES[action]
        if dirname not in sources:
            why = (
                BEING_SENT_FILES
                if dirname == "working"
                else f"is in {dirname}/; {action} works on messages in "
                + " or ".join(f"{s}/" for s in sources)
            )
            return ActionResult(message_id, action, False, why, dirname)
        claimed = self._claim(dirname, message_id)
        if claimed is None:
            return ActionResult(
                message_id, action, False, "taken by the engine or another action first", dirname
            )
        try:
            envelope = self._read_claimed(claimed, message_id, now)
        except (InfError, OSError) as exc:
            if action != "delete":
                os.rename(claimed, self.store.path(dirname, message_id, ".inf"))
                return ActionResult(message_id, action, False, f"unreadable .inf: {exc}", dirname)
            envelope = None
        before = tuple(envelope.rcpt_to_send) if envelope is not None else ()
        result = self._change(action, dirname, message_id, claimed, envelope, domain, now)
        if envelope is None or not result.ok:
            return result
        touched = before
        if action == "delete" and result.dest:  # only one domain's recipients went
            kept = {a.lower() for a in envelope.rcpt_to_send}
            touched = tuple(a for a in before if a.lower() not in kept)
        return attrs.evolve(result, sender=envelope.mail_from, recipients=touched)

    def _change(
        self,
        action: str,
        dirname: str,
        message_id: str,
        claimed: str,
        envelope: Envelope | None,
        domain: str,
        now: float,
    ) -> ActionResult:
        if action == "delete":
            return self._delete(dirname, message_id, claimed, envelope, domain, now)
        assert envelope is not None
        if action == "hold":
            envelope.add_log(now, "held by the operator")
            return self._put(dirname, "hold", claimed, envelope, action, "held")
        envelope.retry_time = now
        if action == "release":
            envelope.add_log(now, "released by the operator")
            return self._put(dirname, "retry", claimed, envelope, action, "released")
        envelope.add_log(now, "retry now requested by the operator")
        return self._put(dirname, "retry", claimed, envelope, action, "due now")

    def _claim(self, dirname: str, message_id: str) -> str | None:
        claimed = self.store.path(dirname, message_id, CLAIM)
        try:
            os.rename(self.store.path(dirname, message_id, ".inf"), claimed)
        except FileNotFoundError:
            return None
        return claimed

    def _read_claimed(self, claimed: str, message_id: str, now: float) -> Envelope:
        text = decode_inf(read_regular(claimed, MAX_INF_BYTES))
        return parse_envelope(text, message_id, now=now, require_recipients=False)

    def _put(
        self, src: str, dst: str, claimed: str, envelope: Envelope, action: str, done: str
    ) -> ActionResult:
        """Write the claimed message's new ``.inf`` into ``dst`` (moving its ``.dat``)."""
        message_id = envelope.message_id
        if src != dst:
            try:
                os.rename(
                    self.store.path(src, message_id, ".dat"),
                    self.store.path(dst, message_id, ".dat"),
                )
            except OSError as exc:
                os.rename(claimed, self.store.path(src, message_id, ".inf"))
                return ActionResult(
                    message_id, action, False, f"cannot move its .dat: {exc.strerror}", src
                )
        self.store.replace_inf(dst, message_id, envelope.to_inf().encode())
        os.unlink(claimed)
        where = f"{src}/ -> {dst}/" if src != dst else f"in {dst}/"
        return ActionResult(message_id, action, True, f"{done} ({where})", src, dest=dst)

    def _delete(
        self,
        dirname: str,
        message_id: str,
        claimed: str,
        envelope: Envelope | None,
        domain: str,
        now: float,
    ) -> ActionResult:
        if envelope is not None and domain:
            cut = cut_domain(envelope, domain, now)
            if cut.keep_message:
                if cut.removed:
                    self.store.replace_inf(dirname, message_id, envelope.to_inf().encode())
                    os.unlink(claimed)
                else:
                    os.rename(claimed, self.store.path(dirname, message_id, ".inf"))
                return ActionResult(
                    message_id,
                    "delete",
                    bool(cut.removed),
                    cut.text,
                    dirname,
                    cut.removed,
                    dest=dirname if cut.removed else "",
                )
        try:
            os.unlink(self.store.path(dirname, message_id, ".dat"))
        except FileNotFoundError:
            pass
        os.unlink(claimed)
        count = len(envelope.rcpt_to_send) if envelope is not None else 0
        return ActionResult(message_id, "delete", True, f"deleted from {dirname}/", dirname, count)

    # -- repair ----------------------------------------------------------------

    def restore_stale_claims(
        self,
        now: float,
        min_age: float = STALE_CLAIM_SECONDS,
        young: list[str] | None = None,
    ) -> list[str]:
        """Put back claims an interrupted action left (a crash between its renames).

        The ``.inf`` goes beside its ``.dat``; a claim whose message already has
        its new ``.inf`` is removed. Claims younger than ``min_age`` may belong to
        an action still running: left alone, and their ids added to ``young``.
        """
        restored = []
        for dirname in DIRS:
            try:
                with os.scandir(self.store.dir(dirname)) as entries:  # maybe millions
                    names = [e.name for e in entries if e.name.endswith(CLAIM)]
            except FileNotFoundError:
                continue
            for name in names:
                message_id = name[: -len(CLAIM)]
                if not is_valid_message_id(message_id):
                    continue
                claimed = self.store.path(dirname, message_id, CLAIM)
                try:
                    # ctime: the rename that made the claim (mtime is the old file's).
                    if now - os.stat(claimed).st_ctime < min_age:
                        if young is not None:
                            young.append(message_id)
                        continue
                except FileNotFoundError:
                    continue
                home = next(
                    (d for d in DIRS if os.path.exists(self.store.path(d, message_id, ".dat"))),
                    dirname,
                )
                if os.path.exists(self.store.path(home, message_id, ".inf")):
                    os.unlink(claimed)
                else:
                    os.rename(claimed, self.store.path(home, message_id, ".inf"))
                    restored.append(message_id)
        return restored
