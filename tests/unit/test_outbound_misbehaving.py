"""The pure session against the misbehaving receiver (tests/misbehaving.py), in memory.

Property (issue 9): whatever mixture of faults the server shows, the machine
never raises and no recipient is counted sent unless the server really took
the message for it, whole, and said so. The normal run tries a bounded number
of examples; ``pytest -m slow`` tries many more.
"""

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mailengine.delivery.outcome import SENT, SOFT
from mailengine.delivery.session import CLOSING, LOST, VIOLATION
from tests.misbehaving import Fault, Receiver, converse, faults

receivers = st.builds(
    Receiver,
    faults=st.lists(faults, max_size=4),
    pipelining=st.booleans(),
    offers_starttls=st.booleans(),
    split=st.booleans(),
    bare_lf=st.booleans(),
    long_lines=st.booleans(),
)
recipients = st.lists(
    st.sampled_from(["a@d.test", "b@d.test", "bad@d.test", "c@d.test"]),
    min_size=1,
    max_size=3,
    unique=True,
)
bodies = st.sampled_from([b"hello\r\n", b"..leading dot\r\nx\r\n", b"Subject: s\r\n\r\n" * 50])


def compensates(receiver):
    """A reply too many to MAIL or RCPT, then none to a later RCPT of the pipelined group:
    every reply lands where a correct server's would, so no client can tell (README,
    Sending: the limits). The property holds for every other mixture."""
    kinds = {(f.kind, f.step) for f in receiver.faults}
    return (
        receiver.pipelining
        and bool(kinds & {("extra", "MAIL"), ("extra", "RCPT")})
        and ("missing", "RCPT") in kinds
    )


def check_nothing_sent_without_proof(receiver, jobs, offer_tls):
    assume(not compensates(receiver))
    jobs = [(rcpts, b"job %d\r\n" % i + body) for i, (rcpts, body) in enumerate(jobs)]
    exchange = converse(receiver, jobs, should_offer_tls=offer_tls)  # never raises
    for index, results in exchange.results.items():
        rcpts, body = jobs[index]
        assert [r.address for r in results] == rcpts
        for r in results:
            if r.kind == SENT:
                assert any(
                    d.acknowledged and r.address in d.rcpts and d.body == body
                    for d in receiver.deliveries
                ), (r, receiver.deliveries)


@given(receivers, st.lists(st.tuples(recipients, bodies), min_size=1, max_size=3), st.booleans())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_nothing_is_counted_sent_without_the_proof(receiver, jobs, offer_tls):
    check_nothing_sent_without_proof(receiver, jobs, offer_tls)


@pytest.mark.slow
@given(receivers, st.lists(st.tuples(recipients, bodies), min_size=1, max_size=4), st.booleans())
@settings(max_examples=20000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_nothing_is_counted_sent_without_the_proof_long_run(receiver, jobs, offer_tls):
    check_nothing_sent_without_proof(receiver, jobs, offer_tls)


# -- each misbehaviour on its own -----------------------------------------------------


def run(receiver, jobs=((["a@d.test"], b"hi\r\n"),), **kwargs):
    exchange = converse(receiver, list(jobs), **kwargs)
    return exchange, [
        [(r.address, r.kind, r.code) for r in rs] for _, rs in sorted(exchange.results.items())
    ]


def test_a_well_behaved_receiver_gets_everything_sent_in_every_shape():
    for shape in (
        {},
        {"split": True},
        {"bare_lf": True},
        {"long_lines": True},
        {"pipelining": False},
    ):
        receiver = Receiver(**shape)
        _, results = run(receiver, [(["a@d.test"], b"1\r\n"), (["b@d.test"], b"2\r\n")])
        assert results == [[("a@d.test", SENT, 250)], [("b@d.test", SENT, 250)]], shape
        assert [d.acknowledged for d in receiver.deliveries] == [True, True]


def test_250_to_a_pipelined_data_is_a_protocol_error_and_nothing_is_sent():
    receiver = Receiver([Fault("wrong", "DATA", code=250)])
    exchange, results = run(receiver)
    assert exchange.ending == VIOLATION and results == [[("a@d.test", SOFT, 0)]]
    assert receiver.deliveries == []


@pytest.mark.parametrize("step", ["MAIL", "RCPT", "DATA", "EHLO"])
def test_one_reply_too_many_is_caught_before_anything_counts_as_sent(step):
    receiver = Receiver([Fault("extra", step)])
    exchange, results = run(receiver, [(["a@d.test"], b"1\r\n"), (["b@d.test"], b"2\r\n")])
    assert exchange.ending == VIOLATION
    assert all(kind == SOFT for rs in results for _, kind, _ in rs)


def test_an_extra_reply_after_the_dot_leaves_the_proven_message_sent_and_defers_the_next():
    receiver = Receiver([Fault("extra", "DOT")], pipelining=False)
    exchange, results = run(receiver, [(["a@d.test"], b"1\r\n"), (["b@d.test"], b"2\r\n")])
    assert exchange.ending == VIOLATION
    assert results == [[("a@d.test", SENT, 250)], [("b@d.test", SOFT, 0)]]


def test_452_to_some_recipients_defers_only_those():
    receiver = Receiver()
    _, results = run(receiver, [(["a@d.test", "bad@d.test", "c@d.test"], b"x\r\n")])
    assert results == [
        [("a@d.test", SENT, 250), ("bad@d.test", SOFT, 452), ("c@d.test", SENT, 250)]
    ]


@pytest.mark.parametrize("step", ["MAIL", "RCPT", "DATA", "DOT"])
def test_a_421_anywhere_defers_the_open_recipients(step):
    exchange, results = run(Receiver([Fault("421", step)]))
    assert exchange.ending == CLOSING and results == [[("a@d.test", SOFT, 421)]]


@pytest.mark.parametrize("step", ["CONNECT", "EHLO", "MAIL", "RCPT", "DATA", "DOT"])
@pytest.mark.parametrize("kind", ["close", "close-after", "stall", "missing"])
def test_a_close_or_stall_at_any_step_is_never_a_delivery_unless_the_250_came(step, kind):
    receiver = Receiver([Fault(kind, step)])
    exchange, results = run(receiver)
    if kind == "close-after" and step == "DOT":
        assert results == [[("a@d.test", SENT, 250)]]  # the 250 came before the close
    else:
        assert all(k == SOFT for rs in results for _, k, _ in rs)
        assert exchange.ending in (LOST, VIOLATION)


def test_a_garbage_greeting_is_a_protocol_error():
    exchange, results = run(Receiver([Fault("garbage", "CONNECT")]))
    assert exchange.ending == VIOLATION and results == []


def test_starttls_cut_after_its_220_is_lost_during_the_tls_setup():
    receiver = Receiver([Fault("close-after", "STARTTLS")], offers_starttls=True)
    exchange, results = run(receiver, should_offer_tls=True)
    assert exchange.ending == LOST and exchange.tls_cut and results == []
