"""The suppression list's SQLite store: lookups, CSV, and never refusing mail wrongly."""

import io
import sqlite3

from mailengine.inbound.replies import suppressed_reply
from mailengine.queue.suppression import (
    CONFIRM_SECONDS,
    EMPTINESS_CHECK_EVERY,
    RECHECK_SECONDS,
    Entry,
    SuppressionList,
    entries_from_csv,
    entries_to_csv,
)


def test_added_addresses_are_found_case_insensitively_and_removed(tmp_path):
    listing = SuppressionList(str(tmp_path / "s.sqlite"))
    assert listing.lookup("a@x.test") is None  # no file yet: nothing suppressed
    assert listing.add("<A@X.test>", "bad mailbox: 550 5.1.1", "delivery", "engine", 100.0)
    assert not listing.add("a@x.test", "again", "cli", "me", 200.0)  # the first reason stays
    entry = listing.lookup("a@X.TEST")
    assert entry == Entry("a@x.test", "bad mailbox: 550 5.1.1", "delivery", 100.0, "engine")
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert listing.remove("A@x.test") and not listing.remove("a@x.test")
    assert listing.lookup("a@x.test") is None


def test_search_matches_address_or_reason_literally_newest_first(tmp_path):
    listing = SuppressionList(str(tmp_path / "s.sqlite"))
    listing.add("a_b@x.test", "full", "cli", "me", 1.0)
    listing.add("axb@x.test", "50% spam", "cli", "me", 2.0)
    assert [e.address for e in listing.search("x.test")[0]] == ["axb@x.test", "a_b@x.test"]
    assert [e.address for e in listing.search("a_b")[0]] == ["a_b@x.test"]
    assert listing.search("50%") == ([listing.lookup("axb@x.test")], 1)
    assert listing.search("", 1, 1)[1] == 2


def test_csv_export_imports_back_and_bare_address_lines_are_accepted(tmp_path):
    listing = SuppressionList(str(tmp_path / "s.sqlite"))
    listing.add("a@x.test", 'reason, with "quotes"', "cli", "me", 5.0)
    out = io.StringIO()
    assert entries_to_csv(listing.entries(), out) == 1
    other = SuppressionList(str(tmp_path / "t.sqlite"))
    rows = list(entries_from_csv(out.getvalue(), now=9.0, source="import", by="x"))
    assert other.add_many(rows) == 1 and other.lookup("a@x.test") == listing.lookup("a@x.test")
    bare = list(entries_from_csv("b@y.test\nc@y.test,why\n", now=9.0, source="import", by="x"))
    assert [(e.address, e.reason, e.created) for e in bare] == [
        ("b@y.test", "", 9.0),
        ("c@y.test", "why", 9.0),
    ]
    try:
        list(entries_from_csv("address\nnot an address\n", now=0, source="s", by="b"))
    except ValueError as exc:
        assert "row 1" in str(exc)
    else:
        raise AssertionError("accepted a bad row")


def test_a_corrupt_database_lets_mail_through_and_is_reported_once(tmp_path):
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    told = []
    listing = SuppressionList(str(path), on_problem=told.append)
    assert listing.lookup("a@x.test") is None
    assert listing.lookup("b@x.test") is None
    assert len(told) == 1 and str(path) in told[0] and listing.problems == 2


def test_a_locked_database_answers_at_once_and_lets_mail_through(tmp_path):
    path = str(tmp_path / "s.sqlite")
    listing = SuppressionList(path, on_problem=lambda text: told.append(text))
    told: list[str] = []
    listing.add("a@x.test", "why", "cli", "me", 1.0)
    assert listing.lookup("a@x.test") is not None
    listing.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=DELETE")  # out of WAL: a writer now blocks readers
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert listing.lookup("a@x.test") is None  # busy: not refused, and no waiting
        assert told
    finally:
        holder.execute("ROLLBACK")
        holder.execute("PRAGMA journal_mode=WAL")
        holder.close()
    assert listing.lookup("a@x.test") is not None


def test_the_refusal_names_the_address_the_reason_and_the_day():
    reply = suppressed_reply("a@x.test", "bad mailbox:\n550 5.1.1", 86400 * 365)
    assert reply == b"5.1.1 <a@x.test> is suppressed (bad mailbox: 550 5.1.1, since 1971-01-01)"


def test_an_empty_list_answers_without_a_query_until_any_writer_changes_its_files(tmp_path):
    path = str(tmp_path / "s.sqlite")
    listing = SuppressionList(path)
    listing.prepare()  # the engine creates the empty database at start
    assert listing.lookup("a@x.test") is None  # opens the reader (which creates the WAL)
    assert listing.lookup("a@x.test") is None
    queries: list[str] = []
    assert listing._reader is not None
    listing._reader.set_trace_callback(queries.append)
    for _ in range(50):
        assert listing.lookup("a@x.test") is None
    assert queries == []  # known empty: a stat of its files, no SQL
    # Another program (the `mailengine suppress` command) writes through its own list.
    SuppressionList(path).add("a@x.test", "why", "cli", "me", 1.0)
    assert listing.lookup("A@x.test") is not None  # seen at the very next lookup
    SuppressionList(path).remove("a@x.test")
    assert listing.lookup("a@x.test") is None


def test_a_list_that_empties_is_noticed_after_some_lookups(tmp_path):
    path = str(tmp_path / "s.sqlite")
    listing = SuppressionList(path)
    listing.add("a@x.test", "why", "cli", "me", 1.0)
    assert listing.lookup("b@x.test") is None
    listing.remove("a@x.test")
    for _ in range(EMPTINESS_CHECK_EVERY + 1):
        assert listing.lookup("a@x.test") is None
    assert listing._empty_at is not None


def test_a_busy_session_trusts_a_fresh_look_but_a_new_session_sees_every_earlier_change(
    tmp_path,
):
    now = [100.0]
    path = str(tmp_path / "s.sqlite")
    listing = SuppressionList(path, clock=lambda: now[0])
    listing.prepare()
    for _ in range(3):
        assert listing.lookup("a@x.test", session_start=50.0) is None
    SuppressionList(path).add("a@x.test", "why", "cli", "me", 1.0)
    # A session older than the last look, within RECHECK_SECONDS of it: the cached answer.
    assert listing.lookup("a@x.test", session_start=50.0) is None
    # A session that began after the last look sees the change at once...
    now[0] += 0.001
    assert listing.lookup("a@x.test", session_start=now[0]) is not None
    listing.remove("a@x.test")
    listing.lookup("b@x.test")
    for _ in range(EMPTINESS_CHECK_EVERY + 2):
        listing.lookup("b@x.test", session_start=50.0)
    SuppressionList(path).add("a@x.test", "why", "cli", "me", 1.0)
    # ...and the old session once RECHECK_SECONDS have passed.
    now[0] += RECHECK_SECONDS
    assert listing.lookup("a@x.test", session_start=50.0) is not None


def test_a_known_empty_list_is_asked_again_every_confirm_seconds_whatever_its_files_say(
    tmp_path,
):
    now = [100.0]
    listing = SuppressionList(str(tmp_path / "s.sqlite"), clock=lambda: now[0])
    listing.prepare()
    listing.lookup("a@x.test")
    listing.lookup("a@x.test")  # known empty from here
    queries: list[str] = []
    assert listing._reader is not None
    listing._reader.set_trace_callback(queries.append)
    now[0] += CONFIRM_SECONDS / 2
    assert listing.lookup("a@x.test") is None and queries == []
    now[0] += CONFIRM_SECONDS  # a write its timestamps could hide would show now
    assert listing.lookup("a@x.test") is None and len(queries) == 1
