"""DKIM-signs mail as the queue takes it, before it is stored: the relay copy of a received
message and the mail the engine writes itself (DSNs, reports, notices). Twisted side."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailengine.config.model import Config
from mailengine.observe.counters import Counters
from mailengine.signing.signer import Signed, Signer

log = Logger(namespace="mailengine.signing")

# Up to this size a message is signed on the reactor thread. Measured through
# bench/relay.py (4 KB messages, durable relay): signing in the thread pool cost
# 0.6-0.8 ms more CPU per message than signing inline (the hop, its wake-up and the
# GIL passed back and forth), while signing inline blocks the reactor for well under
# a millisecond (bench/dkim_sign.py). A large message's canonicalisation would block
# it for longer, so it goes to the pool.
INLINE_BYTES = 64 * 1024


class SigningParts(Protocol):
    """What signing needs of the engine (``Engine``): keys, settings, a thread, counts."""

    @property
    def signer(self) -> Signer: ...

    @property
    def config(self) -> Config: ...

    @property
    def run_in_thread(self) -> Callable[[Callable[[], Any]], Any] | None: ...

    @property
    def counters(self) -> Counters: ...


class Signing:
    """Signs with the keys of the From: domain; a message that cannot be signed goes on
    unsigned with a warning and is counted, never refused."""

    def __init__(self, engine: SigningParts) -> None:
        self.engine = engine

    def signed(self, message_id: str, content: bytes, now: float) -> defer.Deferred:
        """Fires with ``content`` headed by its DKIM-Signature fields, or as it was."""
        engine = self.engine
        signer = engine.signer
        if not signer:
            return defer.succeed(content)
        dkim = engine.config.dkim
        work = partial(signer.sign, content, now, dkim.headers, dkim.canonicalization)
        if engine.run_in_thread is None or len(content) <= INLINE_BYTES:
            d = defer.maybeDeferred(work)
        else:
            d = engine.run_in_thread(work)

        def done(result: Signed) -> bytes:
            if result.problem:
                self._unsigned(message_id, result.problem)
                return content
            if result.is_signed:
                engine.counters.signing(signed=True)
                return result.header + content
            return content  # no key for its From: domain

        def failed(failure: Failure) -> bytes:
            log.failure("{id}: DKIM signing failed; sent unsigned", failure, id=message_id)
            self._unsigned(message_id, "")
            return content

        return d.addCallbacks(done, failed)

    def _unsigned(self, message_id: str, why: str) -> None:
        self.engine.counters.signing(signed=False)
        if why:
            log.warn("{id}: not DKIM-signed, sent unsigned: {why}", id=message_id, why=why)
