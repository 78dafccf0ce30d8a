"""The recipient books: the equation, its log line and mailq/books.txt (pure)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailengine.observe.books import Books, balance_line, books_text, parse_books_text
from mailengine.observe.counters import Counters


def test_books_balance_when_every_recipient_taken_in_has_an_outcome_or_is_queued():
    books = Books(received=10, generated=2, found=3, sent=6, failed_hard=2, failed_soft=1)
    books.local, books.removed = 1, 1
    assert books.should_be_queued == 4
    assert books.unaccounted(4) == 0
    assert balance_line(books, 4).endswith(": balanced")
    assert "NOT balanced: +1 recipients unaccounted for" in balance_line(books, 3)


def test_one_message_with_local_and_relay_recipients_is_received_once():
    counters = Counters(started=0.0)
    counters.received_message(relay=2, local=1)
    assert (counters.total_recv, counters.recv_relay, counters.recv_inbound) == (1, 1, 0)
    assert (counters.books.received, counters.books.local) == (3, 1)
    counters.received_message(relay=0, local=2)
    assert (counters.total_recv, counters.recv_inbound) == (2, 1)


def test_the_engines_own_mail_moves_the_books_but_not_the_clients_counts():
    counters = Counters(started=0.0)
    counters.attempt_outcome(sent=2, failed_hard=1, failed_soft=0, deferred=1, own=False)
    counters.attempt_outcome(sent=1, failed_hard=0, failed_soft=1, deferred=2, own=True)
    assert (counters.total_sent, counters.total_failed_soft, counters.total_deferred) == (2, 0, 1)
    assert counters.own == {"sent": 1, "failed_hard": 0, "failed_soft": 1, "deferred": 2}
    assert (counters.books.sent, counters.books.failed_soft) == (3, 1)


def test_books_text_round_trips_and_a_damaged_count_is_an_error():
    books = Books(received=5, found=1, sent=3, removed=1)
    text = books_text(books, queued=2, written_at="2026/12/04 17:00:00", state="stopped")
    parsed, fields = parse_books_text(text)
    assert parsed == books
    assert fields == {"state": "stopped", "written": "2026/12/04 17:00:00", "queued": "2"}
    with pytest.raises(ValueError, match="sent='x'"):
        parse_books_text(text.replace("sent=3", "sent=x"))


def test_the_audit_finds_files_that_disagree_with_the_books_or_contradict_themselves(tmp_path):
    from mailengine.queue.audit import audit_lines, read_books, survey
    from mailengine.queue.envelope import Envelope
    from mailengine.queue.store import QueueStore

    store = QueueStore(str(tmp_path))
    store.ensure_dirs()
    books = Books(received=3, sent=1)
    text = books_text(books, queued=2, written_at="-", state="stopped")
    store.write_file("books.txt", text.encode())
    store.write_message("retry", Envelope("A@h", "s@x.test", ["a@y.test", "b@y.test"], 0), b"x")
    lines, ok = audit_lines(read_books(store), survey(store, 0))
    assert ok and "they agree" in "\n".join(lines)
    twice = Envelope("B@h", "s@x.test", ["c@y.test"], 0, rcpt_sent=["C@y.test"])
    store.write_message("retry", twice, b"x")
    lines, ok = audit_lines(read_books(store), survey(store, 0))
    text = "\n".join(lines)
    assert not ok
    assert "hold 3 recipients still to send, the books 2: they DISAGREE" in text
    assert "retry/B@h.inf: still to send but already sent or failed: c@y.test" in text


@given(
    st.builds(Books, *[st.integers(0, 10**12)] * 8),
    st.integers(0, 10**12),
    st.sampled_from(["running", "stopped"]),
)
def test_any_books_survive_their_file(books, queued, state):
    text = books_text(books, queued=queued, written_at="2026/12/04 17:00:00", state=state)
    parsed, fields = parse_books_text(text)
    assert parsed == books and fields["queued"] == str(queued) and fields["state"] == state
