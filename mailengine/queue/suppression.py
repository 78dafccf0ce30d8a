"""``mailq/suppression.sqlite``: addresses never relayed to again (SQLite, WAL mode).

Lookups run on the reactor thread (RCPT TO) on one read connection that never
waits for a lock: a busy, locked, missing or corrupt database answers "not
suppressed", reports the problem once (``on_problem``) and mail flows. An empty
list costs no query: it is known empty until its files change (any writer, this
process or another, changes the WAL or the database), and the files are looked at
(a stat, which hands the GIL to the queue's writer thread) at most every
``RECHECK_SECONDS`` and at the first lookup of a session that began after the last
look, so a change made before a client connects is seen by that client. Writes
(automatic additions, the command, the web admin) open their own connection
and may wait for a lock; the engine runs them in a worker thread.
"""

from __future__ import annotations

import csv
import io
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
from twisted.logger import Logger

log = Logger(namespace="mailengine.suppression")

FILE_NAME = "suppression.sqlite"
WRITE_TIMEOUT_SECONDS = 5.0
CHUNK_ROWS = 10_000
RECHECK_SECONDS = 0.05  # an empty list's files are looked at no more often than this
# ... and it is asked again this often whatever its files say: a write within the file
# system's timestamp tick that leaves the WAL's size as it was would not show.
CONFIRM_SECONDS = 1.0
EMPTINESS_CHECK_EVERY = 1000  # lookups of a non-empty list between checks for "now empty"
CSV_FIELDS = ("address", "reason", "source", "created", "by")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS suppression ("
    " address TEXT PRIMARY KEY, reason TEXT NOT NULL DEFAULT '',"
    " source TEXT NOT NULL DEFAULT '', created REAL NOT NULL, by TEXT NOT NULL DEFAULT ''"
    ") WITHOUT ROWID"
)

_MATCHING = "address LIKE ? ESCAPE '\\' OR reason LIKE ? ESCAPE '\\'"
_COUNT = f"SELECT count(*) FROM suppression WHERE {_MATCHING}"  # noqa: S608 - constant
_SEARCH = (
    "SELECT address, reason, source, created, by FROM suppression "  # noqa: S608 - constant
    f"WHERE {_MATCHING} ORDER BY created DESC, address LIMIT ? OFFSET ?"
)


@attrs.frozen
class Entry:
    """One suppressed address: why, from where (delivery, bounce, cli, web:USER), when."""

    address: str
    reason: str
    source: str
    created: float
    by: str


def normalize(address: str) -> str:
    """The key: trimmed, without <>, lower case (mailboxes differing in case are one)."""
    return address.strip().strip("<>").strip().lower()


class SuppressionList:
    """The list at ``path``; ``on_problem(text)`` hears of a lookup that failed."""

    def __init__(
        self,
        path: str,
        on_problem: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.clock = clock  # monotonic; sessions give their start on it
        self.on_problem = on_problem
        self._reader: sqlite3.Connection | None = None
        self.problems = 0
        self.failing = False  # told once per run of failures (alert once, not per RCPT)
        self._wal_path = path + "-wal"
        # The files' signature when the list was last seen empty (None: not known empty),
        # and how many lookups of a non-empty list go by before asking again.
        self._empty_at: tuple[int, int, int] | None = None
        self._looked_at = float("-inf")  # when the files were last looked at (clock)
        self._confirmed_at = float("-inf")  # when a query last found it empty (clock)
        self._emptiness_check_in = 0

    def _files_signature(self) -> tuple[int, int, int]:
        """Changes whenever anybody writes: every commit goes through the WAL, and a
        checkpoint (or a writer in another journal mode) changes the database file."""
        signature = [0, 0, 0]
        for i, name in ((0, self._wal_path), (1, self.path)):
            try:
                st = os.stat(name)
            except OSError:
                continue
            signature[i] = st.st_mtime_ns
            signature[2] ^= st.st_size << i
        return signature[0], signature[1], signature[2]

    # -- reading (reactor thread) -------------------------------------------------

    def _read_connection(self) -> sqlite3.Connection | None:
        if self._reader is None:
            if not os.path.exists(self.path):
                return None  # nothing suppressed yet; created by the first write
            # timeout=0: a locked database answers at once (SQLITE_BUSY), never stalls RCPT.
            self._reader = sqlite3.connect(self.path, timeout=0, check_same_thread=False)
        return self._reader

    def lookup(self, address: str, session_start: float | None = None) -> Entry | None:
        """The entry for ``address``, or None (also when the database cannot answer).

        ``session_start`` (this list's clock): the answer reflects every change made
        before then; None asks for the newest state."""
        if self._empty_at is not None or self._emptiness_check_in <= 0:
            now = self.clock()
            if (
                self._empty_at is not None
                and session_start is not None
                and session_start < self._looked_at <= now < self._looked_at + RECHECK_SECONDS
            ):
                return None  # known empty, looked at moments ago and since the session began
            signature = self._files_signature()
            self._looked_at = now
            if signature == self._empty_at and now < self._confirmed_at + CONFIRM_SECONDS:
                return None  # nothing was written since the list was seen empty
            self._empty_at = None
            self._emptiness_check_in = EMPTINESS_CHECK_EVERY
            try:
                db = self._read_connection()
                if db is None:
                    self._empty_at = signature  # no file yet: empty until one appears
                    self._confirmed_at = now
                    return None
                if db.execute("SELECT NOT EXISTS (SELECT 1 FROM suppression)").fetchone()[0]:
                    # Known empty only if nothing changed around the query (a write after
                    # it shows as a change next time; the first read may create the WAL).
                    if self._files_signature() == signature:
                        self._empty_at = signature
                        self._confirmed_at = now
                    else:
                        self._emptiness_check_in = 0  # ask again at the next lookup
                    self.failing = False
                    return None
            except sqlite3.Error as exc:
                self._problem(exc)
                return None
        self._emptiness_check_in -= 1
        try:
            db = self._read_connection()
            if db is None:
                return None
            # fetchall: the statement runs to its end, so no read transaction stays open
            # (it would pin an old snapshot and stop WAL checkpoints).
            rows = db.execute(
                "SELECT address, reason, source, created, by FROM suppression WHERE address = ?",
                (normalize(address),),
            ).fetchall()
        except sqlite3.Error as exc:
            self._problem(exc)
            return None
        self.failing = False
        return Entry(*rows[0]) if rows else None

    def _problem(self, exc: sqlite3.Error) -> None:
        self.problems += 1
        if self._reader is not None:
            try:
                self._reader.close()
            except sqlite3.Error:
                pass
            self._reader = None  # opened afresh next time (the file may be replaced)
        if self.on_problem is not None and not self.failing:
            self.on_problem(f"{self.path}: {exc}")
        self.failing = True

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- writing (worker threads, the command) ------------------------------------

    def _write_connection(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        db = sqlite3.connect(self.path, timeout=WRITE_TIMEOUT_SECONDS, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_SCHEMA)
        return db

    def prepare(self) -> None:
        """Create the database (WAL, schema) now: its first write switches the journal
        mode under an exclusive lock, which would make an early lookup busy."""
        self._write_connection().close()

    def add_many(self, entries: Iterable[Entry]) -> int:
        """Insert entries whose address is not listed yet (the first reason stays);
        returns how many were new."""
        rows = [
            (normalize(e.address), e.reason, e.source, e.created, e.by)
            for e in entries
            if normalize(e.address)
        ]
        db = self._write_connection()
        try:
            before = db.total_changes
            # Short transactions: the engine's own additions never wait long for a big import.
            for start in range(0, len(rows), CHUNK_ROWS):
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT OR IGNORE INTO suppression (address, reason, source, created, by) "
                    "VALUES (?, ?, ?, ?, ?)",
                    rows[start : start + CHUNK_ROWS],
                )
                db.execute("COMMIT")
            return db.total_changes - before
        finally:
            db.close()

    def add(self, address: str, reason: str, source: str, by: str, now: float) -> bool:
        return self.add_many([Entry(address, reason, source, now, by)]) == 1

    def remove(self, address: str) -> bool:
        db = self._write_connection()
        try:
            cur = db.execute("DELETE FROM suppression WHERE address = ?", (normalize(address),))
            return cur.rowcount > 0
        finally:
            db.close()

    def search(self, text: str = "", offset: int = 0, limit: int = 100) -> tuple[list[Entry], int]:
        """Entries whose address or reason contains ``text``, newest first, and the count."""
        if not os.path.exists(self.path):
            return [], 0
        db = self._write_connection()
        pattern = "%" + _like_escape(text.strip().lower()) + "%"
        try:
            (total,) = db.execute(_COUNT, (pattern, pattern)).fetchone()
            rows = db.execute(_SEARCH, (pattern, pattern, limit, offset)).fetchall()
        finally:
            db.close()
        return [Entry(*r) for r in rows], int(total)

    def entries(self) -> Iterator[Entry]:
        """Every entry in address order (export)."""
        if not os.path.exists(self.path):
            return
        db = self._write_connection()
        try:
            yield from (
                Entry(*r)
                for r in db.execute(
                    "SELECT address, reason, source, created, by FROM suppression ORDER BY address"
                )
            )
        finally:
            db.close()


def suppress_later(engine: Any, entries: list[Entry]) -> None:
    """Add ``entries`` in the engine's worker thread (never on the reactor thread)."""
    suppression = engine.suppression
    if not entries or suppression is None:
        return

    def add() -> int:
        return suppression.add_many(entries)

    def added(n: int) -> None:
        if n:
            log.info(
                "suppression list: {n} address(es) added ({who})",
                n=n,
                who=", ".join(e.address for e in entries[:5]),
            )

    d = engine.committer.submit(add)
    d.addCallbacks(
        added,
        lambda f: log.warn("suppression list: cannot add ({why})", why=f.getErrorMessage()),
    )


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- CSV ------------------------------------------------------------------------------


def entries_to_csv(entries: Iterable[Entry], out: io.TextIOBase | object) -> int:
    """``address,reason,source,created,by`` with a header row; returns the row count."""
    writer = csv.writer(out)  # type: ignore[arg-type]
    writer.writerow(CSV_FIELDS)
    n = 0
    for e in entries:
        writer.writerow((e.address, e.reason, e.source, f"{e.created:.3f}", e.by))
        n += 1
    return n


def entries_from_csv(
    text: str, *, now: float, source: str, by: str, reason: str = ""
) -> Iterator[Entry]:
    """Rows of a CSV file: the export's columns (header row optional) or bare addresses.
    Missing columns take ``reason``/``source``/``by`` and ``now``; ValueError names a
    bad row."""
    rows = list(csv.reader(io.StringIO(text)))
    if rows and [c.strip().lower() for c in rows[0]][:1] == ["address"]:
        header = [c.strip().lower() for c in rows[0]]
        rows = rows[1:]
    else:
        header = list(CSV_FIELDS)
    for number, row in enumerate(rows, 1):
        if not row or not "".join(row).strip():
            continue
        values = dict(zip(header, (c.strip() for c in row), strict=False))
        address = normalize(values.get("address", ""))
        if "@" not in address or any(c.isspace() for c in address):
            raise ValueError(f"row {number}: {values.get('address', '')!r} is not an address")
        try:
            created = float(values["created"]) if values.get("created") else now
        except ValueError:
            raise ValueError(f"row {number}: created must be epoch seconds") from None
        yield Entry(
            address,
            values.get("reason") or reason,
            values.get("source") or source,
            created,
            values.get("by") or by,
        )
