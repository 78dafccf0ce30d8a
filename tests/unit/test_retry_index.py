"""The compact index of retry/ (queue/retryindex.py): buckets by due minute, stale skips."""

from mailengine.queue.retryindex import (
    UNREAD,
    RetryIndex,
    due_of,
    epoch_of,
    inode_of,
    pack,
    rcpts_of,
)


def popped(index, until, limit):
    return [(message_id, inode_of(p)) for message_id, p in index.pop_due(until, limit)]


def test_packing_keeps_due_inode_and_epoch():
    packed = pack(1_764_000_000.7, 2**40 + 5, 17, rcpts=3)
    assert (due_of(packed), inode_of(packed), epoch_of(packed)) == (1_764_000_000, 2**40 + 5, 17)
    assert rcpts_of(packed) == 3 and rcpts_of(pack(1, 1, 1)) == UNREAD


def test_ids_come_out_earliest_minute_first_up_to_a_limit_and_leave_the_index():
    index = RetryIndex()
    for i, due in enumerate([500, 100, 130, 9000]):
        index.add(f"M{i}", due, inode=i + 1, epoch=1)
    assert index.next_due() == 60  # the bucket of due 100
    assert popped(index, 200, 10) == [("M1", 2), ("M2", 3)]
    assert len(index) == 2 and "M1" not in index
    assert popped(index, 10_000, 1) == [("M0", 1)]
    assert popped(index, 10_000, 5) == [("M3", 4)]
    assert index.next_due() is None


def test_removed_and_rescheduled_ids_are_skipped_where_they_waited():
    index = RetryIndex()
    index.add("A", 100, 1, 1)
    index.add("B", 100, 2, 1)
    index.remove("A")
    index.add("B", 5000, 2, 1)  # rescheduled: waits in a later bucket now
    assert popped(index, 200, 10) == []
    assert popped(index, 6000, 10) == [("B", 2)]


def test_entries_not_seen_since_a_pass_began_are_stale():
    index = RetryIndex()
    for name in "ABC":
        index.add(name, 100, 1, epoch=3)
    index.mark_seen("A", 4)
    index.add("C", 100, 1, epoch=5)  # indexed during the pass
    assert list(index.stale(index.ids(), epoch=4)) == ["B"]


def test_recipients_of_read_entries_are_summed_for_the_books_unread_ones_are_not():
    index = RetryIndex()
    index.add("A", 100, 1, 1, rcpts=2)
    index.add("B", 100, 2, 1)  # from the listing alone
    index.add("C", 9000, 3, 1, rcpts=5)
    assert index.recipients == 7
    index.add("A", 200, 1, 1, rcpts=1)  # rewritten: one recipient left
    assert index.recipients == 6
    index.pop_due(until=300, limit=10)
    assert index.recipients == 5
    index.remove("C")
    assert index.recipients == 0
