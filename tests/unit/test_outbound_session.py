"""The outbound session state machine (pure): transcripts of replies in, commands out."""

import pytest

from mailengine.delivery.outcome import HARD, SENT, SOFT
from mailengine.delivery.session import (
    BODY,
    CLOSING,
    DONE,
    END,
    READY,
    REFUSED,
    REPLY_LINE_LIMIT,
    SESSION_READY,
    START_TLS,
    TLS_FAILED,
    VIOLATION,
    WAIT,
    WRITE,
    Session,
)
from mailengine.delivery.transaction import Transaction, render_dialogue

EHLO_PIPELINING = b"250-mx hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"


def feed(session, data):
    """One read, as client.py does it: each line's action; a body asked for is 'written'
    at the end of the read."""
    session.new_read()
    actions = [session.receive_line(line.rstrip(b"\r")) for line in data.split(b"\n")[:-1]]
    if BODY in actions:
        session.body_written()
    return actions


def ready(ehlo=EHLO_PIPELINING, **kwargs):
    session = Session(b"me.test", **kwargs)
    assert feed(session, b"220 mx ESMTP\r\n") == [WRITE] and session.out == b"EHLO me.test\r\n"
    assert feed(session, ehlo)[-1] == SESSION_READY and session.state == READY
    return session


def converse(session, recipients, data, *, test_mode=False):
    """Start a transaction for ``recipients`` (None: carry on) and feed ``data``."""
    txn = None
    if recipients is not None:
        txn = Transaction("s@x.test", recipients, test_mode=test_mode)
        session.start(txn)
    feed(session, data)
    return txn


def kinds(txn):
    return [(r.address, r.kind, r.code) for r in txn.results()]


def test_pipelined_transaction_writes_everything_at_once_and_sends_the_body_after_354():
    session = ready()
    txn = Transaction("s@x.test", ["a@d.test", "b@d.test"], mail_params=session.mail_params(10))
    assert session.start(txn) == (
        b"MAIL FROM:<s@x.test> SIZE=10 BODY=8BITMIME\r\n"
        b"RCPT TO:<a@d.test>\r\nRCPT TO:<b@d.test>\r\nDATA\r\n"
    )
    assert feed(session, b"250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n") == [WAIT] * 3 + [BODY]
    assert feed(session, b"250 queued\r\n") == [DONE] and txn.is_clean
    assert kinds(txn) == [("a@d.test", SENT, 250), ("b@d.test", HARD, 550)]
    assert txn.results()[1].reply == "550 no"


def test_without_pipelining_commands_go_one_by_one_and_a_refused_mail_from_ends_it():
    session = ready(b"250 mx hello\r\n")
    txn = converse(session, ["a@d.test"], b"250 ok\r\n")
    assert session.out == b"RCPT TO:<a@d.test>\r\n"
    feed(session, b"550 5.7.1 no\r\n")
    assert session.needs_rset and kinds(txn) == [("a@d.test", HARD, 550)]
    second = Transaction("s@x.test", ["a@d.test"])
    assert session.start(second) == b"RSET\r\n"
    assert feed(session, b"250 reset\r\n") == [WRITE]
    assert session.out == b"MAIL FROM:<s@x.test>\r\n"
    assert feed(session, b"451 4.3.0 later\r\n") == [DONE]
    assert kinds(second) == [("a@d.test", SOFT, 451)]


def test_a_354_without_accepted_recipients_is_ended_with_a_lone_dot():
    session = ready()
    txn = converse(session, ["a@d.test"], b"250 ok\r\n550 no\r\n")
    assert feed(session, b"354 go\r\n") == [WRITE] and session.out == b".\r\n"
    assert feed(session, b"554 no valid recipients\r\n") == [DONE]
    assert kinds(txn) == [("a@d.test", HARD, 550)] and session.needs_rset


def test_a_failed_final_reply_decides_every_accepted_recipient():
    session = ready()
    txn = converse(session, ["a@d.test", "b@d.test"], b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    feed(session, b"452 4.3.1 full\r\n")
    assert kinds(txn) == [("a@d.test", SOFT, 452), ("b@d.test", SOFT, 452)]


def test_452_to_some_recipients_defers_only_those():
    session = ready()
    txn = converse(
        session, ["a@d.test", "b@d.test", "c@d.test"], b"250 ok\r\n250 ok\r\n452 4.5.3 too many\r\n"
    )
    converse(session, None, b"250 ok\r\n354 go\r\n")
    feed(session, b"250 queued\r\n")
    assert kinds(txn) == [("a@d.test", SENT, 250), ("b@d.test", SOFT, 452), ("c@d.test", SENT, 250)]


def test_test_mode_sends_rset_instead_of_data_and_counts_accepted_recipients_as_sent():
    session = ready()
    txn = Transaction("s@x.test", ["a@d.test", "b@d.test"], test_mode=True)
    assert session.start(txn).endswith(b"RCPT TO:<b@d.test>\r\nRSET\r\n")
    assert feed(session, b"250 ok\r\n250 ok\r\n550 no\r\n250 reset\r\n")[-1] == DONE
    assert txn.is_clean and not session.needs_rset
    assert [r.kind for r in txn.results()] == [SENT, HARD]


def test_replies_missing_when_the_connection_failed_are_soft_with_the_reason():
    session = ready()
    txn = converse(session, ["a@d.test"], b"250 ok\r\n250 ok\r\n354 go\r\n")
    session.connection_lost("timeout waiting for a reply")
    [r] = txn.results(["--> x"])
    assert r.kind == SOFT and r.reply == "timeout waiting for a reply" and r.transcript == ["--> x"]


def test_the_dialogue_renders_as_the_manuals_transcript():
    session = ready(b"250 mx\r\n")
    txn = converse(session, ["john@d.test"], b"250 sender ok\r\n")
    feed(session, b"550 <john@d.test>... no such user\r\n")
    assert render_dialogue(txn.dialogue) == [
        "--> MAIL FROM:<s@x.test>",
        "<-- 250 sender ok",
        "--> RCPT TO:<john@d.test>",
        "<-- 550 <john@d.test>... no such user",
    ]


# -- desynchronisation: a protocol error, every open recipient deferred ---------------


@pytest.mark.parametrize(
    ("replies", "why"),
    [
        (b"250 ok\r\n250 ok\r\n250 queued\r\n", "250 queued is no reply to DATA"),
        (b"250 ok\r\n354 go\r\n", "354 go is no reply to RCPT"),
        (b"250 ok\r\n250 ok\r\n250 extra\r\n354 go\r\n", "250 extra is no reply to DATA"),
        (b"250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n", "before the data was all sent"),
        (b"250 ok\r\n250 ok\r\n220 hello\r\n", "220 hello is no reply to DATA"),
        (b"250 ok\r\n250 ok\r\n99 odd\r\n", "malformed reply"),
        (b"250 ok\r\n250 ok\r\n654 odd\r\n", "654 odd is no reply to DATA"),
        (b"250 ok\r\nfoo\r\n", "malformed reply"),
        (b"250-ok\r\n251 mixed\r\n", "broken multiline reply"),
    ],
)
def test_a_reply_out_of_step_ends_the_session_and_defers_everyone(replies, why):
    session = ready()
    txn = converse(session, ["a@d.test"], b"")
    assert END in feed(session, replies)
    assert session.ending == VIOLATION and why in session.error
    [r] = txn.results()
    assert (r.kind, r.code) == (SOFT, 0) and r.reply.startswith("protocol error: ")


def test_a_hard_rejection_is_not_believed_once_the_replies_are_out_of_step():
    session = ready()
    txn = converse(session, ["a@d.test"], b"250 ok\r\n550 no\r\n250 ok\r\n")  # extra reply
    assert session.ending == VIOLATION
    assert kinds(txn) == [("a@d.test", SOFT, 0)]


def test_a_reply_with_no_command_outstanding_is_a_protocol_error_but_421_is_a_goodbye():
    session = ready()
    assert feed(session, b"250 surprise\r\n") == [END] and session.ending == VIOLATION
    session = ready()
    assert feed(session, b"421 4.4.2 idle too long\r\n") == [END] and session.ending == CLOSING
    assert session.quit() == b"QUIT\r\n"


def test_replies_that_came_before_their_command_was_sent_are_out_of_step():
    session = Session(b"me.test")
    assert feed(session, b"220 mx\r\n250 mx\r\n") == [WRITE, END]
    assert "before EHLO was sent" in session.error


def test_without_pipelining_a_reply_early_for_the_next_command_is_out_of_step():
    session = ready(b"250 mx\r\n")
    txn = converse(session, ["a@d.test"], b"250 ok\r\n250 ok\r\n")
    assert session.ending == VIOLATION and kinds(txn) == [("a@d.test", SOFT, 0)]


def test_a_421_at_any_point_defers_the_open_recipients_and_keeps_decided_ones():
    session = ready()
    txn = converse(session, ["a@d.test", "b@d.test"], b"250 ok\r\n550 5.1.1 unknown\r\n")
    assert feed(session, b"421 4.3.2 shutting down\r\n") == [END] and session.ending == CLOSING
    assert kinds(txn) == [("a@d.test", HARD, 550), ("b@d.test", SOFT, 421)]
    assert txn.results()[1].reply == "421 4.3.2 shutting down"


def test_the_closing_dot_that_gets_no_reply_is_deferred_never_sent():
    session = ready()
    txn = converse(session, ["a@d.test"], b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert txn.body_written
    session.connection_lost("connection lost")
    assert kinds(txn) == [("a@d.test", SOFT, 0)]


# -- opening ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("greeting", "ending"),
    [
        (b"554 5.7.1 go away\r\n", REFUSED),
        (b"450 busy\r\n", REFUSED),
        (b"421 too busy\r\n", CLOSING),
        (b"HTTP/1.1 400 Bad Request\r\n", VIOLATION),
        (b"250 hello\r\n", VIOLATION),
    ],
)
def test_a_greeting_that_is_not_220_ends_the_session(greeting, ending):
    session = Session(b"me.test")
    assert feed(session, greeting) == [END] and session.ending == ending


def test_ehlo_refused_falls_back_to_helo_and_then_nothing_is_pipelined():
    session = Session(b"me.test")
    feed(session, b"220 old\r\n")
    assert feed(session, b"502 what?\r\n") == [WRITE] and session.out == b"HELO me.test\r\n"
    assert feed(session, b"250 hi\r\n") == [SESSION_READY] and not session.pipelining


def test_starttls_when_offered_then_ehlo_again_over_tls():
    session = Session(b"me.test", should_offer_tls=True)
    feed(session, b"220 mx\r\n")
    assert feed(session, b"250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n") == [WAIT, WAIT, WRITE]
    assert session.out == b"STARTTLS\r\n"
    assert feed(session, b"220 2.0.0 Ready to start TLS\r\n") == [START_TLS]
    assert session.is_tls_pending
    assert session.tls_started() == b"EHLO me.test\r\n" and session.is_tls_pending
    assert feed(session, b"250-mx\r\n250 PIPELINING\r\n")[-1] == SESSION_READY
    assert not session.is_tls_pending and session.tls_active


def test_tls_required_but_not_offered_or_refused_is_a_tls_failure():
    session = Session(b"me.test", should_offer_tls=True, require_tls=True)
    feed(session, b"220 mx\r\n")
    assert feed(session, b"250 mx\r\n") == [END] and session.ending == TLS_FAILED
    session = Session(b"me.test", should_offer_tls=True)
    feed(session, b"220 mx\r\n")
    feed(session, b"250-mx\r\n250 STARTTLS\r\n")
    assert feed(session, b"454 4.7.0 not now\r\n") == [END] and session.ending == TLS_FAILED


# -- tolerated -------------------------------------------------------------------


def test_bare_lf_lines_and_multiline_replies_split_across_reads_are_fine():
    session = Session(b"me.test")
    feed(session, b"220 mx\n")
    assert feed(session, b"250-mx hello\n250-PIPE") == [WAIT]  # the shell keeps the rest
    session.new_read()
    assert session.receive_line(b"250-PIPELINING") == WAIT
    assert feed(session, b"250 SIZE 2000\r\n") == [SESSION_READY]
    assert session.pipelining and session.size_limit == 2000


def test_an_over_long_reply_line_is_cut_and_the_session_goes_on():
    session = ready()
    txn = converse(session, ["a@d.test"], b"250 ok\r\n550 " + b"x" * 5000 + b"\r\n")
    feed(session, b"554 no valid recipients\r\n")
    [r] = txn.results()
    assert r.kind == HARD and len(r.reply) == REPLY_LINE_LIMIT
    assert session.state == READY


def test_a_negative_reply_outside_the_rfc_table_is_tolerated():
    session = ready()
    txn = converse(session, ["a@d.test"], b"250 ok\r\n554 5.7.1 relay access denied\r\n")
    feed(session, b"554 5.5.1 no valid recipients\r\n")
    assert kinds(txn) == [("a@d.test", HARD, 554)] and session.state == READY


def test_a_reused_session_sends_nothing_after_a_completed_transaction_but_rset_after_a_failed():
    session = ready()
    converse(session, ["a@d.test"], b"250 ok\r\n250 ok\r\n354 go\r\n")
    feed(session, b"250 queued\r\n")
    assert session.start(Transaction("s@x.test", ["b@d.test"])).startswith(b"MAIL")
    feed(session, b"250 ok\r\n250 ok\r\n354 go\r\n")
    feed(session, b"554 5.7.1 spam\r\n")
    assert session.start(Transaction("s@x.test", ["b@d.test"])).startswith(b"RSET\r\nMAIL")
