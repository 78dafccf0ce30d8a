"""The per-destination tally: recipients queued and oldest message, kept as messages
come and go (no walk of the queue)."""

import attrs
from hypothesis import given
from hypothesis import strategies as st

from mailengine.queue.tally import DestinationCount, DestinationTally, MessageTable


def test_a_message_counts_its_recipients_under_each_of_their_domains():
    tally = DestinationTally()
    tally.add("M1", ["a@x.test", "b@X.test.", "c@y.test"], 100.0)
    assert tally.get("x.test") == DestinationCount("x.test", 2, 100.0)
    assert tally.get("y.test") == DestinationCount("y.test", 1, 100.0)
    assert tally.get("z.test") is None


def test_the_oldest_follows_when_the_oldest_message_leaves():
    tally = DestinationTally()
    tally.add("old", ["a@x.test"], 10.0)
    tally.add("new", ["b@x.test"], 30.0)
    tally.add("mid", ["c@x.test"], 20.0)
    assert tally.get("x.test") == DestinationCount("x.test", 3, 10.0)
    tally.remove("old")
    assert tally.get("x.test") == DestinationCount("x.test", 2, 20.0)
    tally.remove("mid")
    tally.remove("new")
    assert tally.get("x.test") is None and len(tally) == 0


def test_adding_a_message_again_replaces_its_count():
    tally = DestinationTally()
    tally.add("M1", ["a@x.test", "b@y.test"], 10.0)
    tally.add("M1", ["b@y.test"], 10.0)  # the x.test recipient was sent
    assert tally.get("x.test") is None
    assert tally.get("y.test") == DestinationCount("y.test", 1, 10.0)
    tally.add("M1", [], 10.0)
    assert len(tally) == 0 and "M1" not in tally


def test_the_totals_count_every_destination_together():
    tally = DestinationTally()
    assert tally.recipients == 0 and tally.oldest_created() is None
    tally.add("M1", ["a@x.test", "b@y.test", "no-domain"], 20.0)
    tally.add("M2", ["c@x.test"], 10.0)
    assert tally.recipients == 4 and tally.oldest_created() == 10.0
    tally.remove("M2")
    assert tally.recipients == 3 and tally.oldest_created() == 20.0


def test_removing_an_unknown_message_changes_nothing():
    tally = DestinationTally()
    tally.add("M1", ["a@x.test"], 10.0)
    tally.remove("M2")
    assert tally.get("x.test") == DestinationCount("x.test", 1, 10.0)


def test_top_ranks_by_recipients_then_name():
    tally = DestinationTally()
    tally.add("M1", ["a@b.test", "b@b.test"], 5.0)
    tally.add("M2", ["a@a.test", "b@a.test"], 6.0)
    tally.add("M3", ["a@c.test"], 1.0)
    assert [c.domain for c in tally.top(2)] == ["a.test", "b.test"]
    assert tally.top(10)[-1] == DestinationCount("c.test", 1, 1.0)


def test_leftovers_of_messages_gone_do_not_pile_up():
    tally = DestinationTally()
    tally.add("keep", ["a@x.test"], 0.0)
    for n in range(10_000):
        tally.add(f"M{n}", ["a@x.test"], float(n + 1))
        tally.remove(f"M{n}")
    line = tally._lines["x.test"]
    assert len(line.heap) <= 2 * len(line.members) + 17


@given(
    st.lists(
        st.tuples(
            st.integers(0, 9),  # message key
            st.lists(st.sampled_from(["a@x.test", "b@y.test", "c@z.test"]), max_size=4),
            st.integers(0, 50),  # created
            st.booleans(),  # remove instead
        ),
        max_size=60,
    )
)
def test_the_tally_always_equals_a_count_from_scratch(steps):
    tally = DestinationTally()
    live: dict[str, tuple[list[str], float]] = {}
    for key, addresses, created, is_removal in steps:
        if is_removal:
            tally.remove(str(key))
            live.pop(str(key), None)
        else:
            tally.add(str(key), addresses, float(created))
            live[str(key)] = (addresses, float(created))
    expected: dict[str, list[float]] = {}
    for addresses, created in live.values():
        for address in addresses:
            entry = expected.setdefault(address.split("@")[1], [0, created])
            entry[0] += 1
            entry[1] = min(entry[1], created)
    got = {c.domain: [c.recipients, c.oldest_created] for c in tally.top(10)}
    assert got == expected
    assert tally.recipients == sum(len(a) for a, _ in live.values() if a)
    oldest = min((c for a, c in live.values() if a), default=None)
    assert tally.oldest_created() == oldest


@attrs.define
class Env:
    rcpt_to_send: list[str]
    time_created: float


@attrs.define
class Msg:
    envelope: Env


def test_the_message_table_tallies_what_is_set_and_removed():
    table: MessageTable[Msg] = MessageTable()
    table["M1"] = Msg(Env(["a@x.test"], 1.0))
    table["M2"] = Msg(Env(["b@x.test"], 2.0))
    table["M3"] = Msg(Env(["c@y.test"], 3.0))
    assert table.tally.get("x.test") == DestinationCount("x.test", 2, 1.0)
    assert table.pop("M1") is not None and table.pop("M1", None) is None
    del table["M3"]
    assert table.tally.get("x.test") == DestinationCount("x.test", 1, 2.0)
    assert table.tally.get("y.test") is None
    table["M2"].envelope.rcpt_to_send = []
    table.recount("M2")
    assert len(table.tally) == 0
    table.setdefault("M4", Msg(Env(["d@z.test"], 4.0)))
    assert table.tally.get("z.test") == DestinationCount("z.test", 1, 4.0)
    table.clear()
    assert len(table.tally) == 0
