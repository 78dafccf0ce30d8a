"""Inbound SMTP dialogues through StringTransport: each protocol edge case as a transcript."""

import base64
import hashlib
import hmac
import os

import pytest
from twisted.internet.address import IPv4Address
from twisted.logger import globalLogPublisher

from mailengine.config.passwords import set_password
from mailengine.inbound.auth import cram_md5_fields
from mailengine.inbound.sending import ReplyWriter
from mailengine.inbound.server import RefusedSession
from tests.twisted.inbound_rig import FullDisk, Rig
from tests.twisted.test_reply_writer import ShortSendSocket

LOCAL = {("server", "local_domains"): ["local.test"]}
ENHANCED_EXEMPT = (b"220", b"354", b"334")


@pytest.fixture
def rig(tmp_path):
    return Rig(tmp_path, LOCAL)


def add_user(rig, user, password, extra=None):
    set_password(os.path.join(rig.root, "config", "smtp-users.txt"), user, password, extra)
    rig.clock.advance(1)  # smtp-users.txt is looked at again at most once a second


def inf_fields(rig, dirname):
    [inf] = [n for n in rig.files(dirname) if n.endswith(".inf")]
    return dict(line.split("=", 1) for line in rig.read(dirname, inf).decode().splitlines())


def dat(rig, dirname):
    [name] = [n for n in rig.files(dirname) if n.endswith(".dat")]
    return rig.read(dirname, name)


def test_pipelined_commands_are_answered_in_order_even_while_the_disk_is_slow(tmp_path):
    rig = Rig(tmp_path, LOCAL, sender=True)
    rig.config.apply("queue", "use_disk_for_relay", True)
    rig.threads.hold = True
    s = rig.connect()
    replies = s.send(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\n")
    assert replies[-3:] == [
        b"250 2.1.0 Ok",
        b"250 2.1.5 Ok",
        b"354 End data with <CR><LF>.<CR><LF>",
    ]
    # The body, its end and the next commands in one read; the relay copy is still
    # being written, so nothing after "." may be answered yet.
    assert s.send(b"Subject: t\r\n\r\nhi\r\n.\r\nNOOP\r\nQUIT\r\n") == []
    rig.threads.release()
    replies = s.replies()
    assert replies[0].startswith(b"250 2.0.0 Ok: queued as P7T1000C")
    assert replies[1:] == [b"250 2.0.0 Ok", b"221 2.0.0 Bye"]
    assert s.transport.disconnecting
    # Handed to the delivery engine in memory, its safe copy in the receipt journal.
    [held] = rig.queue.messages.values()
    assert held.location == "journal" and held.data.endswith(b"\r\n\r\nhi\r\n")
    assert rig.files("retry") == [] and rig.sender.told


def test_body_lines_are_never_run_as_commands_while_a_reply_is_pending(rig):
    rig.threads.hold = True
    rig.config.apply("queue", "save_incoming", True)
    s = rig.connect()
    s.send(b"HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nDATA\r\n")
    s.send(b"one\r\n.\r\nMAIL FROM:<c@d.test>\r\nRCPT TO:<y@local.test>\r\nDATA\r\ntwo\r\n.\r\n")
    rig.threads.release()
    codes = [int(line[:3]) for line in s.replies()]
    assert codes == [250, 250, 250, 354, 250]
    assert len(rig.files("incoming")) == 4


def test_plaintext_pipelined_behind_starttls_is_discarded(rig):
    rig.factory.tls = object()
    s = rig.connect(tls_capable=True)
    ehlo = s.send(b"EHLO c.test\r\n")
    assert b"250 STARTTLS" in ehlo
    replies = s.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@remote.test>\r\n")
    assert replies == [b"220 2.0.0 Ready to start TLS"]
    assert s.transport.tls_started
    # After the handshake the client starts over; no MAIL survived.
    assert s.codes(b"RCPT TO:<v@local.test>\r\n") == [503]
    assert b"STARTTLS" not in b"".join(s.send(b"EHLO c.test\r\n"))
    assert s.codes(b"STARTTLS\r\n") == [503]


def test_starttls_is_refused_when_no_certificate_is_configured(rig):
    s = rig.connect(tls_capable=True)
    assert b"STARTTLS" not in b"".join(s.send(b"EHLO c.test\r\n"))
    assert s.send(b"STARTTLS\r\n") == [b"454 4.7.0 TLS not available"]


def test_a_bare_lf_dot_does_not_end_data_so_smuggled_commands_stay_content(rig):
    rig.config.apply("queue", "save_incoming", True)
    s = rig.connect()
    s.send(b"HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nDATA\r\n")
    smuggle = b"Subject: s\r\n\r\nhi\n.\nMAIL FROM:<evil@x.test>\nRCPT TO:<v@remote.test>\n"
    assert s.send(smuggle) == []
    assert s.codes(b"DATA\n.\r\n.\r\n") == [250]
    assert s.codes(b"RCPT TO:<v@local.test>\r\n") == [503]  # no MAIL was ever run
    body = dat(rig, "incoming").split(b"\r\n\r\n", 1)[1]
    assert body == b"hi\r\n.\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@remote.test>\r\nDATA\r\n.\r\n"


def test_an_overlong_line_in_data_stays_in_data(rig):
    rig.config.apply("queue", "save_incoming", True)
    s = rig.connect()
    s.send(b"HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nDATA\r\n")
    assert s.send(b"Subject: long\r\n\r\n" + b"x" * 70000) == []
    assert s.send(b"\r\nRSET\r\nMAIL FROM:<evil@x.test>\r\n") == []
    assert s.codes(b".\r\n") == [250]
    body = dat(rig, "incoming").split(b"\r\n\r\n", 1)[1]
    assert body == b"x" * 70000 + b"\r\nRSET\r\nMAIL FROM:<evil@x.test>\r\n"


def test_an_overlong_command_line_gets_500_and_the_session_goes_on(rig):
    s = rig.connect()
    assert s.codes(b"HELO c\r\n") == [250]
    assert s.send(b"NOOP " + b"a" * 20000) == [b"500 5.5.2 Error: line too long"]
    assert s.send(b"b" * 20000) == []
    assert s.codes(b"still the long line\r\nNOOP\r\n") == [250]
    assert s.codes(b"MAIL FROM:<" + b"c" * 17000 + b"@x>\r\nNOOP\r\n") == [500, 250]


def test_dot_stuffed_lines_are_stored_unstuffed_and_the_inf_names_the_session(rig):
    rig.config.apply("queue", "save_incoming", True)
    s = rig.connect(peer="192.0.2.5")
    rig.config.apply("smtp_in", "relay_ips", ["0"])
    s.send(b"EHLO client.example\r\nMAIL FROM:<sender@b.test>\r\nRCPT TO:<x@local.test>\r\n")
    s.send(b"DATA\r\n")
    assert s.codes(b"Subject: d\r\n\r\n..leading dot\r\n...two\r\n.\r\n") == [250]
    content = dat(rig, "incoming")
    assert content.startswith(b"Received: from client.example ([192.0.2.5])\r\n")
    assert content.endswith(b"\r\n\r\n.leading dot\r\n..two\r\n")
    fields = inf_fields(rig, "incoming")
    assert fields["helo"] == "client.example"
    assert fields["peertcpip"] == fields["peerhostname"] == "192.0.2.5"
    assert fields["localtcpip"] == "127.0.0.1"
    assert fields["localhostname"] == "mx.test"
    assert fields["mailfrom"] == "sender@b.test"
    assert fields["rcpttosend"] == "x@local.test"
    assert fields["datasize"] == str(len(content))
    assert fields["timecreated"] == "2001/09/09 01:46:40"


def test_every_reply_carries_an_enhanced_status_code(rig):
    s = rig.connect(peer="198.51.100.7")
    s.send(b"EHLO c\r\n")  # RFC 2034 §3: the EHLO reply carries none
    dialogue = (
        b"NOOP\r\nHELP\r\nVRFY x\r\nEXPN x\r\nBOGUS\r\n\r\nRCPT TO:<x@local.test>\r\n"
        b"DATA\r\nMAIL FROM:bad address\r\nMAIL FROM:<a@b.test> FOO=1\r\n"
        b"MAIL FROM:<a@b.test>\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\n"
        b"RCPT TO:<@>\r\nDATA\r\nRSET\r\nAUTH PLAIN\r\nSTARTTLS\r\nQUIT\r\n"
    )
    final = [line for line in s.send(dialogue) if line[3:4] == b" "]
    assert len(final) == 19
    for line in final:
        if line[:3] not in ENHANCED_EXEMPT:
            assert line[4:5] in b"245" and line[5:6] == b".", line


def test_mail_size_over_the_limit_gets_552_and_size_within_is_accepted(rig):
    rig.config.apply("smtp_in", "max_message_size_bytes", 2000)
    s = rig.connect()
    assert b"250-SIZE 2000" in s.send(b"EHLO c\r\n")
    assert s.send(b"MAIL FROM:<a@b.test> SIZE=2001\r\n") == [
        b"552 5.3.4 Message size exceeds fixed maximum message size"
    ]
    assert s.codes(b"MAIL FROM:<a@b.test> SIZE=2000 BODY=8BITMIME\r\n") == [250]
    assert s.codes(b"RSET\r\nMAIL FROM:<a@b.test> SIZE=x\r\n") == [250, 501]
    assert rig.counters.rejected == 1


def test_size_zero_advertises_plain_size(rig):
    rig.config.apply("smtp_in", "max_message_size_bytes", 0)
    s = rig.connect()
    assert b"250-SIZE" in s.send(b"EHLO c\r\n")
    assert s.codes(b"MAIL FROM:<a@b.test> SIZE=999999999999\r\n") == [250]


def test_a_message_growing_past_the_limit_is_read_to_the_end_then_refused_with_552(rig):
    rig.config.apply("smtp_in", "max_message_size_bytes", 1024)
    rig.config.apply("queue", "save_incoming", True)
    s = rig.connect()
    s.send(b"HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nDATA\r\n")
    for _ in range(30):
        assert s.send(b"y" * 98 + b"\r\n") == []
    assert s.send(b".\r\nNOOP\r\n") == [
        b"552 5.3.4 Message size exceeds fixed maximum message size",
        b"250 2.0.0 Ok",
    ]
    assert rig.files("incoming") == []


def test_the_null_sender_is_accepted_and_rejected_senders_get_550(rig):
    rig.config.apply("smtp_in", "reject_mail_from", ["spammer.com"])
    s = rig.connect()
    assert s.codes(b"HELO c\r\nMAIL FROM:<>\r\nRSET\r\n") == [250, 250, 250]
    assert s.send(b"MAIL FROM:<joe@Spammer.COM>\r\n") == [b"550 5.7.1 Sender address rejected"]


def test_relay_is_refused_with_554_and_the_session_goes_on(rig):
    s = rig.connect(peer="198.51.100.7")
    s.send(b"HELO c\r\nMAIL FROM:<a@b.test>\r\n")
    assert s.send(b"RCPT TO:<v@remote.test>\r\n") == [
        b"554 5.7.1 <v@remote.test>: relay not approved"
    ]
    assert s.codes(b"RCPT TO:<x@local.test>\r\nDATA\r\nhi\r\n.\r\n") == [250, 354, 250]
    assert rig.counters.recv_inbound == 1 and rig.counters.rejected == 1


def test_data_with_only_refused_recipients_gets_554_and_no_354(rig):
    s = rig.connect(peer="198.51.100.7")
    s.send(b"HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<v@remote.test>\r\n")
    assert s.codes(b"DATA\r\n") == [554]


def test_a_storage_failure_answers_452_never_5xx(rig):
    rig.config.apply("queue", "save_incoming", True)
    os.rename(rig.store.dir("incoming"), rig.store.dir("incoming") + "-gone")
    s = rig.connect()
    s.send(b"HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nDATA\r\n")
    assert s.send(b"hi\r\n.\r\n") == [b"452 4.3.1 Insufficient system storage, try again later"]
    assert s.codes(b"NOOP\r\n") == [250]


def break_directory(rig, dirname):
    """Put a plain file where a queue directory should be (every write there fails)."""
    path = rig.store.dir(dirname)
    os.rename(path, path + "-gone")
    with open(path, "w"):
        pass

    def mend():
        os.unlink(path)
        os.rename(path + "-gone", path)

    return mend


def durable_split_rig(tmp_path):
    """Local and relay recipients both kept durably; relay mail held for a sender."""
    rig = Rig(tmp_path, LOCAL, sender=True)
    rig.config.apply("queue", "use_disk_for_relay", True)
    rig.config.apply("queue", "save_incoming", True)
    return rig


def send_split(session):
    """One message to a local and a relay recipient; the codes from MAIL to end of DATA."""
    return session.codes(
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nRCPT TO:<y@remote.test>\r\n"
        b"DATA\r\nhi\r\n.\r\n"
    )


def test_a_disk_full_answers_452_for_local_and_offloaded_relay_mail(tmp_path):
    rig = Rig(tmp_path, LOCAL, store=FullDisk)
    rig.config.apply("queue", "save_incoming", True)
    s = rig.connect()
    s.send(b"HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nDATA\r\n")
    assert s.send(b"hi\r\n.\r\n") == [b"452 4.3.1 Insufficient system storage, try again later"]
    # No sender runs here, so relay mail goes to retry/: just as full.
    s.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<y@remote.test>\r\nDATA\r\n")
    assert s.codes(b"hi\r\n.\r\n") == [452]
    rig.store.full = False
    assert s.codes(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<y@remote.test>\r\nDATA\r\nhi\r\n.\r\n") == [
        250,
        250,
        354,
        250,
    ]
    assert (rig.counters.recv_inbound, rig.counters.recv_relay) == (0, 1)


def test_a_full_disk_under_the_receipt_journal_answers_452_and_holds_nothing(tmp_path):
    rig = Rig(tmp_path, LOCAL, sender=True)
    rig.config.apply("queue", "use_disk_for_relay", True)
    s = rig.connect()
    relay = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<y@remote.test>\r\nDATA\r\nhi\r\n.\r\n"
    assert s.codes(b"HELO c\r\n" + relay) == [250, 250, 250, 354, 250]
    segment_fd = rig.queue.journal.active.fd
    kept = os.dup(segment_fd)
    full = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
    os.dup2(full, segment_fd)
    try:
        assert s.codes(relay) == [250, 250, 354, 452]
    finally:
        os.dup2(kept, segment_fd)
        os.close(kept)
        os.close(full)
    assert rig.queue.memory_count == 1  # only the first message is held
    assert s.codes(relay) == [250, 250, 354, 250]
    assert [m.location for m in rig.queue.messages.values()] == ["journal", "journal"]


def test_a_receipt_journal_that_cannot_be_written_answers_452_and_the_session_goes_on(tmp_path):
    rig = Rig(tmp_path, LOCAL, sender=True)
    rig.config.apply("queue", "use_disk_for_relay", True)
    mend = break_directory(rig, "working")
    s = rig.connect()
    s.send(b"HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<y@remote.test>\r\nDATA\r\n")
    assert s.send(b"hi\r\n.\r\n") == [b"452 4.3.1 Insufficient system storage, try again later"]
    assert not s.transport.disconnecting
    mend()
    assert s.codes(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<y@remote.test>\r\nDATA\r\nhi\r\n.\r\n") == [
        250,
        250,
        354,
        250,
    ]
    assert rig.queue.counts()["journal"] == 1


def test_a_split_transaction_hands_its_relay_copy_on_only_once_the_local_copy_is_safe(tmp_path):
    rig = durable_split_rig(tmp_path)
    rig.threads.hold = True  # a slow disk
    s = rig.connect()
    s.send(b"HELO c\r\n")
    assert send_split(s) == [250, 250, 250, 354]
    assert rig.queue.messages == {}  # the relay copy waits for the incoming/ write
    rig.threads.step()  # the incoming/ write done; now the journal append waits
    assert [m.location for m in rig.queue.messages.values()] == ["reserved"]
    rig.threads.release()
    assert s.replies()[0].startswith(b"250 2.0.0 Ok: queued as")
    assert [m.location for m in rig.queue.messages.values()] == ["journal"]


def received(rig):
    """(inbound, relay, total) messages counted as received."""
    c = rig.counters
    return c.recv_inbound, c.recv_relay, c.total_recv


def booked(rig):
    """(recipients received, of them local, recipients the queue must hold)."""
    books = rig.counters.books
    return books.received, books.local, books.should_be_queued


def test_a_split_transaction_sends_nothing_on_when_its_local_copy_fails(tmp_path):
    rig = durable_split_rig(tmp_path)
    mend = break_directory(rig, "incoming")
    s = rig.connect()
    s.send(b"HELO c\r\n")
    assert send_split(s) == [250, 250, 250, 354, 452]
    assert rig.queue.messages == {} and rig.sender.told == 0  # no relay copy to send twice
    mend()
    assert send_split(s) == [250, 250, 250, 354, 250]  # the client's retry
    [relay] = rig.queue.messages.values()
    assert relay.location == "journal" and relay.envelope.rcpt_to_send == ["y@remote.test"]
    assert inf_fields(rig, "incoming")["rcpttosend"] == "x@local.test"
    assert received(rig) == (0, 1, 1)
    assert booked(rig) == (2, 1, 1)


def test_a_split_transaction_keeps_no_local_copy_when_its_relay_copy_fails(tmp_path):
    rig = durable_split_rig(tmp_path)
    mend = break_directory(rig, "working")
    s = rig.connect()
    s.send(b"HELO c\r\n")
    assert send_split(s) == [250, 250, 250, 354, 452]
    assert rig.files("incoming") == []  # the retry would otherwise store it twice
    mend()
    assert send_split(s) == [250, 250, 250, 354, 250]
    assert len(rig.files("incoming")) == 2
    assert received(rig) == (0, 1, 1)


def test_a_mixed_transaction_becomes_one_incoming_and_one_relay_entry(rig):
    rig.config.apply("queue", "save_incoming", True)
    s = rig.connect()
    s.send(b"HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\n")
    s.send(b"RCPT TO:<y@remote.test>\r\nRCPT TO:<z@remote.test>\r\nDATA\r\n")
    assert s.codes(b"hi\r\n.\r\n") == [250]
    assert inf_fields(rig, "retry")["rcpttosend"] == "y@remote.test,z@remote.test"
    assert inf_fields(rig, "incoming")["rcpttosend"] == "x@local.test"
    # One SMTP message, counted once (as relay: part of it travels on).
    assert received(rig) == (0, 1, 1)
    assert booked(rig) == (3, 1, 2)


def test_idle_sessions_get_421_after_timeout_seconds(rig):
    rig.config.apply("smtp_in", "timeout_seconds", 30)
    s = rig.connect()
    s.send(b"HELO c\r\n")
    rig.clock.advance(29)
    assert not s.transport.disconnecting
    s.send(b"NOOP\r\n")
    rig.clock.advance(30)
    assert s.replies() == [b"421 4.4.2 mx.test Error: timeout exceeded"]
    assert s.transport.disconnecting


def test_a_client_waiting_for_its_250_while_the_disk_is_slow_is_not_timed_out(rig):
    rig.config.apply("smtp_in", "timeout_seconds", 30)
    rig.config.apply("queue", "save_incoming", True)
    rig.threads.hold = True
    s = rig.connect()
    s.send(b"HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nDATA\r\nhi\r\n.\r\n")
    rig.clock.advance(45)
    assert not s.transport.disconnecting  # a 421 now would make the client send it again
    rig.threads.release()
    assert s.replies()[-1].startswith(b"250 2.0.0 Ok: queued as")
    rig.clock.advance(30)
    assert s.replies() == [b"421 4.4.2 mx.test Error: timeout exceeded"]


def test_a_malformed_auth_blob_gets_501_and_the_session_goes_on(rig):
    add_user(rig, "joe", "pw")
    rig.config.apply("smtp_in", "allow_plain_auth_without_tls", True)
    s = rig.connect()
    assert b"250 AUTH PLAIN LOGIN CRAM-MD5" in s.send(b"EHLO c\r\n")
    blob = base64.b64encode(b"no-nul-separators")
    assert s.send(b"AUTH PLAIN " + blob + b"\r\n") == [
        b"501 5.5.2 Malformed authentication response"
    ]
    assert s.codes(b"AUTH CRAM-MD5\r\n") == [334]
    assert s.send(base64.b64encode(b"nospace") + b"\r\n")[0].startswith(b"501 ")
    assert s.codes(b"NOOP\r\n") == [250]


def test_plain_auth_needs_tls_unless_allowed_and_cram_md5_works_without(rig):
    add_user(rig, "joe", "s3cret", extra=cram_md5_fields("s3cret"))
    s = rig.connect()
    assert b"250 AUTH CRAM-MD5" in s.send(b"EHLO c\r\n")
    plain = base64.b64encode(b"\0joe\0s3cret")
    assert s.send(b"AUTH PLAIN " + plain + b"\r\n") == [
        b"538 5.7.11 Encryption required for requested authentication mechanism"
    ]
    [challenge_line] = s.send(b"AUTH CRAM-MD5\r\n")
    challenge = base64.b64decode(challenge_line[4:])
    answer = b"joe " + hmac.new(b"s3cret", challenge, hashlib.md5).hexdigest().encode()
    assert s.send(base64.b64encode(answer) + b"\r\n") == [b"235 2.7.0 Authentication successful."]
    s.send(b"MAIL FROM:<a@b.test>\r\n")
    assert s.codes(b"RCPT TO:<v@remote.test>\r\n") == [250]  # authenticated: may relay


def test_wrong_passwords_get_535_and_the_fifth_failure_closes(rig):
    add_user(rig, "joe", "right")
    rig.config.apply("smtp_in", "allow_plain_auth_without_tls", True)
    s = rig.connect(peer="198.51.100.7")
    s.send(b"EHLO c\r\n")
    wrong = b"AUTH PLAIN " + base64.b64encode(b"\0joe\0wrong") + b"\r\n"
    for _ in range(4):
        assert s.codes(wrong) == [535]
    assert s.codes(wrong) == [535, 421]
    assert s.transport.disconnecting


def test_auth_login_in_two_steps(rig):
    add_user(rig, "joe", "pw")
    rig.config.apply("smtp_in", "allow_plain_auth_without_tls", True)
    s = rig.connect()
    s.send(b"EHLO c\r\n")
    assert s.codes(b"AUTH LOGIN\r\n") == [334]
    assert s.codes(base64.b64encode(b"joe") + b"\r\n") == [334]
    assert s.codes(base64.b64encode(b"pw") + b"\r\n") == [235]
    assert b"AUTH" not in b"".join(s.send(b"EHLO c\r\n"))


@pytest.mark.parametrize(
    ("mechanisms", "offered"),
    [(["CRAM-MD5"], b"250 AUTH CRAM-MD5"), (["LOGIN", "PLAIN"], b"250 AUTH LOGIN PLAIN")],
)
def test_auth_mechanisms_chooses_what_is_offered_and_accepted(tmp_path, mechanisms, offered):
    rig = Rig(tmp_path, {**LOCAL, ("smtp_in", "auth_mechanisms"): mechanisms})
    add_user(rig, "joe", "pw")
    rig.config.apply("smtp_in", "allow_plain_auth_without_tls", True)
    s = rig.connect()
    assert s.send(b"EHLO c\r\n")[-1] == offered
    for mechanism in (b"PLAIN", b"LOGIN", b"CRAM-MD5"):
        code = s.codes(b"AUTH " + mechanism + b"\r\n")[0]
        assert code == (334 if mechanism in offered else 504), mechanism
        if code == 334:
            assert s.codes(b"*\r\n")[0] == 501  # RFC 4954: "*" cancels the exchange


def test_no_auth_mechanisms_means_no_auth(tmp_path):
    rig = Rig(tmp_path, {**LOCAL, ("smtp_in", "auth_mechanisms"): []})
    add_user(rig, "joe", "pw")
    s = rig.connect()
    assert b"AUTH" not in b"".join(s.send(b"EHLO c\r\n"))
    assert s.codes(b"AUTH CRAM-MD5\r\n") == [504]


def test_no_auth_is_offered_without_users(rig):
    s = rig.connect()
    assert b"AUTH" not in b"".join(s.send(b"EHLO c\r\n"))
    assert s.codes(b"AUTH CRAM-MD5\r\n") == [504]


def test_bytes_that_are_not_ascii_get_500_not_a_dropped_session(rig):
    s = rig.connect()
    assert s.codes(b"\xff\xfe\r\nM\xc3\xa4IL FROM:<a@b>\r\nNOOP\r\n") == [500, 500, 250]
    assert s.codes(b'MAIL FROM:<"\xff"@b.test>\r\nNOOP\r\n') == [553, 250]


def test_beyond_max_connections_new_peers_get_421_but_priority_ips_get_in(rig):
    rig.config.apply("smtp_in", "max_connections", 1)
    rig.config.apply("smtp_in", "priority_ips", ["10.1.1.1"])
    first = rig.connect(peer="10.0.0.1")
    refused = rig.factory.buildProtocol(IPv4Address("TCP", "10.0.0.2", 1))
    assert isinstance(refused, RefusedSession)
    assert refused.text.startswith(b"421 4.7.0 mx.test")
    assert not isinstance(
        rig.factory.buildProtocol(IPv4Address("TCP", "10.1.1.1", 1)), RefusedSession
    )
    first.close()
    assert rig.factory.admission.total == 1


def test_drain_closes_idle_sessions_and_lets_a_transaction_finish(rig):
    rig.threads.hold = True
    rig.config.apply("queue", "save_incoming", True)
    idle = rig.connect()
    busy = rig.connect()
    late = rig.connect()
    idle.send(b"HELO c\r\n")
    busy.send(b"HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nDATA\r\nhi\r\n.\r\n")
    late.send(b"HELO c\r\nMAIL FROM:<a@b.test>\r\n")
    done = rig.factory.drain()
    assert idle.replies()[-1].startswith(b"421 4.3.2") and idle.transport.disconnecting
    assert not busy.transport.disconnecting
    idle.close()
    rig.threads.release()
    assert busy.replies()[-2:][0].startswith(b"250 2.0.0 Ok: queued")
    assert busy.transport.disconnecting
    busy.close()
    assert late.codes(b"RCPT TO:<x@local.test>\r\n") == [250]
    assert late.codes(b"DATA\r\nagain\r\n.\r\n") == [354, 250, 421]
    assert not done.called
    late.close()
    assert done.called
    assert isinstance(rig.factory.buildProtocol(IPv4Address("TCP", "10.0.0.9", 1)), RefusedSession)


def test_new_mail_during_drain_gets_421(rig):
    s = rig.connect()
    s.send(b"HELO c\r\n")
    s.proto.server.draining = True  # as after drain() while a reply was pending
    assert s.send(b"MAIL FROM:<a@b.test>\r\n")[0].startswith(b"421 4.3.2")


def test_debug_smtp_in_logs_each_dialogue_line_when_switched_on(rig):
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        s = rig.connect()
        s.send(b"NOOP\r\n")
        rig.config.apply("logs", "debug_smtp_in", True)
        s.send(b"HELO c\r\nAUTH PLAIN secret\r\n")
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [e["line"] for e in events if "smtp in" in e["log_format"]]
    assert "NOOP" not in lines
    assert "HELO c" in lines and "250 mx.test Hello 127.0.0.1, nice to meet you" in lines
    assert "AUTH PLAIN (authentication data)" in lines  # an initial response is a secret too
    assert not any("secret" in line for line in lines)


def test_bounce_mail_is_recorded_hard_or_soft(rig):
    s = rig.connect(peer="198.51.100.7")
    s.send(b"HELO mx.example\r\nMAIL FROM:<>\r\n")
    assert s.codes(b"RCPT TO:<mailengine-bounce-joe%example.com@local.test>\r\n") == [250]
    assert s.codes(b"DATA\r\nSubject: failed\r\n\r\n550 5.1.1 unknown user\r\n.\r\n") == [354, 250]
    s.send(b"MAIL FROM:<>\r\nRCPT TO:<mailengine-bounce-ann%example.org@local.test>\r\nDATA\r\n")
    assert s.codes(b"Subject: delayed\r\n\r\n452 4.2.2 mailbox full\r\n.\r\n") == [250]
    with open(rig.engine.root_file("hard-bounces.txt")) as fh:
        assert fh.read() == "joe@example.com\n"
    with open(rig.engine.root_file("soft-bounces.txt")) as fh:
        assert fh.read() == "ann@example.org\n"
    assert rig.counters.recv_inbound == 2


def test_a_bounce_without_a_status_is_recorded_unclassified_and_kept_with_save_incoming(rig):
    rig.config.apply("queue", "save_incoming", True)
    s = rig.connect(peer="198.51.100.7")
    s.send(b"HELO mx.example\r\nMAIL FROM:<>\r\n")
    s.send(b"RCPT TO:<mailengine-bounce-joe%example.com@local.test>\r\nRCPT TO:<x@local.test>\r\n")
    assert s.codes(b"DATA\r\nSubject: Out of office\r\n\r\nBack on Monday.\r\n.\r\n") == [
        354,
        250,
    ]
    assert not os.path.exists(rig.engine.root_file("hard-bounces.txt"))
    assert not os.path.exists(rig.engine.root_file("soft-bounces.txt"))
    with open(rig.engine.root_file("unclassified-bounces.txt")) as fh:
        assert fh.read() == "joe@example.com\n"
    fields = inf_fields(rig, "incoming")
    assert fields["rcpttosend"] == "x@local.test,mailengine-bounce-joe%example.com@local.test"
    assert dat(rig, "incoming").endswith(b"Back on Monday.\r\n")
    assert rig.counters.recv_inbound == 1  # one message for local recipients


def test_a_bounce_that_cannot_be_recorded_gets_452_and_keeps_no_incoming_copy(rig):
    rig.config.apply("queue", "save_incoming", True)
    os.mkdir(rig.engine.root_file("hard-bounces.txt"))  # appending to it fails
    s = rig.connect(peer="198.51.100.7")
    s.send(b"HELO mx.example\r\nMAIL FROM:<>\r\n")
    s.send(b"RCPT TO:<mailengine-bounce-joe%example.com@local.test>\r\n")
    assert s.codes(b"DATA\r\nSubject: failed\r\n\r\n550 5.1.1 unknown user\r\n.\r\n") == [
        354,
        452,
    ]
    assert rig.files("incoming") == []  # the sender's retry would store it twice
    assert rig.counters.recv_inbound == 0


def test_a_plain_smtp_users_line_is_rewritten_with_a_hash_and_cram_md5_midstates(rig):
    path = os.path.join(rig.root, "config", "smtp-users.txt")
    with open(path, "w") as fh:
        fh.write("ann:plain:secret\n")
    rig.clock.advance(1)
    s = rig.connect()
    s.send(b"EHLO c\r\n")
    with open(path) as fh:
        stored = fh.read()
    assert stored.startswith("ann:scrypt$") and ":cram-md5$" in stored
    assert "plain:secret" not in stored
    [challenge_line] = s.send(b"AUTH CRAM-MD5\r\n")
    challenge = base64.b64decode(challenge_line[4:])
    answer = b"ann " + hmac.new(b"plain:secret", challenge, hashlib.md5).hexdigest().encode()
    assert s.codes(base64.b64encode(answer) + b"\r\n") == [235]


def test_replies_go_straight_to_the_socket_and_a_short_send_queues_the_rest(rig):
    s = rig.connect()
    with ShortSendSocket(room=20) as sock:
        s.transport.getHandle = lambda: sock
        s.transport.connected = True
        s.proto._replies = ReplyWriter(s.transport)  # as connectionMade makes it
        s.send(b"NOOP\r\n")
        assert sock.sent == b"250 2.0.0 Ok\r\n"
        s.send(b"HELP\r\nNOOP\r\n")
        whole = sock.sent + s.transport.value()[len(s.greeting[0]) + 2 :]
        assert whole.endswith(b"\r\n250 2.0.0 Ok\r\n") and whole.count(b"\r\n") == 3
        assert sock.sent == whole[:20]
        assert s.transport.producer is s.proto._replies  # told when the transport is empty


def test_addresses_that_would_break_the_inf_file_are_refused(rig):
    s = rig.connect()
    s.send(b"HELO c\r\n")
    assert s.codes(b'MAIL FROM:<"a\rb"@x.test>\r\n') == [553]
    assert s.codes(b"MAIL FROM:<a@b.test>\r\n") == [250]
    assert s.codes(b'RCPT TO:<"x,y@remote.test"@local.test>\r\n') == [553]
    assert s.codes(b'RCPT TO:<"x\nrcpttosend=v@remote.test"@local.test>\r\n') == [553]
    assert s.codes(b'RCPT TO:<"x.y"@local.test>\r\n') == [250]
