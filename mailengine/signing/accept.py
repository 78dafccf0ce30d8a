"""DKIM-signs mail as the queue takes it, before it is stored: the relay copy of a received
message and the mail the engine writes itself (DSNs, reports, notices). Twisted side.

With ``[dkim] separate_process`` (the default) the signing process (signing/process.py)
signs; when it is unavailable the engine signs the message itself, as below, and counts
it."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailengine.config.model import Config
from mailengine.observe.counters import Counters
from mailengine.signing.process import SigningProcess, Unavailable
from mailengine.signing.signer import Signed, Signer
from mailengine.signing.wire import RemoteError

log = Logger(namespace="mailengine.signing")

# Signed in the engine: up to this size a message is signed on the reactor thread. Measured through
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

    @property
    def signing_process(self) -> SigningProcess | None: ...


class Signing:
    """Signs with the keys of the From: domain; a message that cannot be signed goes on
    unsigned with a warning and is counted, never refused."""

    def __init__(self, engine: SigningParts) -> None:
        self.engine = engine

    @property
    def has_keys(self) -> bool:
        """False: nothing would be signed (the intake stores without a round through
        ``signed``)."""
        return bool(self.engine.signer)

    def signed(self, message_id: str, content: bytes, now: float) -> defer.Deferred:
        """Fires with ``content`` headed by its DKIM-Signature fields, or as it was."""
        engine = self.engine
        signer = engine.signer
        if not signer:
            return defer.succeed(content)
        dkim = engine.config.dkim
        work = partial(signer.sign, content, now, dkim.headers, dkim.canonicalization)
        process = engine.signing_process
        if process is None:
            d = self._in_engine(work, content)
        else:
            d = process.sign(content, now, dkim.headers, dkim.canonicalization)
            d.addErrback(self._instead, work, content)

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

    def _in_engine(self, work: Callable[[], Signed], content: bytes) -> defer.Deferred:
        run_in_thread = self.engine.run_in_thread
        if run_in_thread is None or len(content) <= INLINE_BYTES:
            return defer.maybeDeferred(work)
        return run_in_thread(work)

    def _instead(
        self, failure: Failure, work: Callable[[], Signed], content: bytes
    ) -> defer.Deferred:
        """The signing process could not sign it: sign it here (the signer's own error
        then shows in full, or ends as ``failed`` does)."""
        if failure.check(Unavailable):
            self.engine.counters.dkim_signed_in_engine += 1
        elif failure.check(RemoteError) is None:
            return failure  # type: ignore[return-value]
        return self._in_engine(work, content)

    def _unsigned(self, message_id: str, why: str) -> None:
        self.engine.counters.signing(signed=False)
        if why:
            log.warn("{id}: not DKIM-signed, sent unsigned: {why}", id=message_id, why=why)
