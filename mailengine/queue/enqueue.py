"""The manual's ``sendMessage``: put a message into ``mailq/retry/`` the safe way."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable

from mailengine.queue.content import build_message
from mailengine.queue.envelope import Envelope
from mailengine.queue.ids import MessageIdFactory
from mailengine.queue.store import QueueStore

_factories: dict[int, MessageIdFactory] = {}


def _next_id() -> str:
    pid = os.getpid()  # a forked child must not repeat its parent's ids
    factory = _factories.get(pid)
    if factory is None:
        factory = _factories[pid] = MessageIdFactory(pid, time.time(), socket.gethostname())
    return factory.next_id()


def enqueue(
    mailq_dir: str,
    mail_from: str,
    recipients: Iterable[str] | str,
    headers: str | bytes,
    body: str | bytes,
    *,
    priority: int = 0,
    sign: Callable[[bytes], bytes] | None = None,
) -> str:
    """Write ``ID.dat`` then ``ID.inf`` into ``mailq_dir/retry/``, fsynced; return the id.

    ``recipients`` is a list or the manual's comma-separated ``RcptToSend``.
    ``sign`` turns the message into its DKIM-signed form before it is written.
    Each file is written under a temporary name in retry/ and renamed into
    place, ``.dat`` before ``.inf``, so a running engine never reads half a message.
    """
    if isinstance(recipients, str):
        recipients = recipients.split(",")
    rcpts = [r.strip().strip("<>") for r in recipients if r.strip()]
    if not rcpts:
        raise ValueError("no recipients")
    for r in rcpts:
        if "@" not in r or any(c in r for c in ", \r\n"):
            raise ValueError(f"not an address: {r!r}")
    sender = mail_from.strip().strip("<>")
    if any(c in sender for c in " \r\n"):
        raise ValueError(f"not an address: {mail_from!r}")
    store = QueueStore(mailq_dir)
    store.ensure_dirs()
    now = time.time()
    envelope = Envelope(
        message_id=_next_id(),
        mail_from=sender,
        rcpt_to_send=rcpts,
        time_created=now,
        priority=priority,
        retry_time=now,
    )
    content = build_message(headers, body)
    if sign is not None:
        content = sign(content)
    store.write_message("retry", envelope, content, durable=True)
    return envelope.message_id
