"""Replies straight to the socket while the transport holds nothing back (Twisted side).

A reply written through the transport costs two epoll_ctl calls and a reactor turn
(register for writability, write, unregister), and profiling showed the transport's
buffer almost always empty between replies; so a reply goes out with send(2) at once and
only what the socket does not take goes to the transport. Every reply then follows it
through the transport, in order, until the transport has written all it holds and asks
its pull producer (this object) for more: IConsumer's public contract, no private
attributes of Twisted's. Plain TCP only: behind TLS every byte goes through the TLS layer.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.interfaces import IPullProducer
from zope.interface import implementer


@implementer(IPullProducer)
class ReplyWriter:
    """Writes one session's replies, in order, to its socket or its transport."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        get_handle = getattr(transport, "getHandle", None)
        handle = get_handle() if get_handle is not None else None
        # A TLS transport's handle is its TLS connection: its send would skip the TLS layer.
        self.sock: socket.socket | None = handle if isinstance(handle, socket.socket) else None
        self.is_queued = False  # the transport holds bytes: replies go after them
        self._registering = False

    def write(self, data: bytes) -> None:
        transport = self.transport
        if (
            self.sock is not None
            and not self.is_queued
            and transport.connected
            and not transport.disconnecting
        ):
            try:
                sent = self.sock.send(data)
            except OSError:  # EAGAIN, or a dead peer the reactor will notice on its own
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
            self._queue_from_now()
        transport.write(data)

    def _queue_from_now(self) -> None:
        self.is_queued = True
        self._registering = True  # a pull producer is asked for data as it registers
        try:
            self.transport.registerProducer(self, False)
        except RuntimeError:  # another producer is registered: the transport writes all
            self.sock = None
        finally:
            self._registering = False

    def resumeProducing(self) -> None:
        """The transport has written out all it held: replies may go straight again."""
        if self._registering:
            return
        self.transport.unregisterProducer()  # a close asked for meanwhile now goes ahead
        self.is_queued = False

    def stopProducing(self) -> None:
        """The connection is gone."""
        self.sock = None

    def before_tls(self) -> None:
        """STARTTLS: from now on every byte goes through the transport and its TLS layer
        (what the transport still holds goes out first, as it would)."""
        self.sock = None
        if self.is_queued:
            self.is_queued = False
            self.transport.unregisterProducer()
