"""Inbound replies (inbound/sending.py): straight to the socket while the transport holds
nothing, through the transport in order after a short send until it says it is empty
(it asks its pull producer for more), and never straight once STARTTLS begins."""

from __future__ import annotations

import socket

import pytest
from twisted.internet.testing import StringTransport

from mailengine.inbound.sending import ReplyWriter


class ShortSendSocket(socket.socket):
    """A real socket object whose send(2) takes only ``room`` bytes, then would block."""

    def __init__(self, room: int) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.room = room
        self.sent = b""

    def send(self, data, flags=0):  # type: ignore[override]
        if self.room <= 0:
            raise BlockingIOError
        taken = bytes(data[: self.room])
        self.room -= len(taken)
        self.sent += taken
        return len(taken)


@pytest.fixture
def wired():
    with ShortSendSocket(room=10) as sock:
        transport = StringTransport()
        transport.getHandle = lambda: sock
        transport.connected = True
        yield ReplyWriter(transport), transport, sock


def test_a_reply_the_socket_takes_whole_never_touches_the_transport(wired):
    writer, transport, sock = wired
    writer.write(b"250 Ok\r\n")
    assert sock.sent == b"250 Ok\r\n" and transport.value() == b""
    assert transport.producer is None and not writer.is_queued


def test_after_a_short_send_replies_queue_in_order_until_the_transport_is_empty(wired):
    writer, transport, sock = wired
    writer.write(b"250-first line\r\n")  # 10 bytes go, 6 are queued
    sock.room = 100  # the socket has room again, but the transport still holds bytes
    writer.write(b"250 second\r\n")
    assert sock.sent == b"250-first "
    assert transport.value() == b"line\r\n250 second\r\n"
    assert transport.producer is writer and transport.streaming is False
    writer.resumeProducing()  # the transport wrote all it held
    assert transport.producer is None
    writer.write(b"250 third\r\n")
    assert sock.sent == b"250-first 250 third\r\n"  # straight again
    assert transport.value() == b"line\r\n250 second\r\n"


def test_a_socket_that_takes_nothing_queues_the_whole_reply(wired):
    writer, transport, sock = wired
    sock.room = 0
    writer.write(b"421 bye\r\n")
    assert sock.sent == b"" and transport.value() == b"421 bye\r\n"


def test_from_starttls_on_every_byte_goes_through_the_transport(wired):
    writer, transport, sock = wired
    writer.write(b"220 Ready to start TLS here\r\n")  # a short send: the rest is queued
    writer.before_tls()
    assert transport.producer is None  # the queued rest still goes, by the transport
    sock.room = 100
    writer.write(b"250 Ok\r\n")
    assert sock.sent == b"220 Ready "
    assert transport.value() == b"to start TLS here\r\n250 Ok\r\n"


def test_a_tls_transports_handle_is_not_written_to():
    transport = StringTransport()
    transport.getHandle = lambda: object()  # what a TLS transport hands out: not a socket
    transport.connected = True
    writer = ReplyWriter(transport)
    writer.write(b"250 Ok\r\n")
    assert transport.value() == b"250 Ok\r\n"
