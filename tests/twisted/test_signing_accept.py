"""Signing the relay copy: inline for ordinary messages, in the thread pool for large ones;
a signer that breaks never loses or refuses the message (issue 11)."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from mailengine.signing.accept import INLINE_BYTES, Signing
from mailengine.signing.keys import DkimKey, generate_key
from mailengine.signing.signer import Signer
from tests.twisted.web_harness import make_engine

HEAD = b"From: a@example.com\r\nSubject: s\r\n\r\n"


class ThreadPool:
    """Runs work at once and remembers that it was asked to."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, work):
        self.calls += 1
        return defer.maybeDeferred(work)


def engine_with_key(tmp_path):
    engine, _ = make_engine(str(tmp_path))
    engine.signer = Signer([DkimKey("example.com", "s", "-", generate_key("ed25519"))])
    engine.run_in_thread = ThreadPool()
    return engine


@pytest_twisted.ensureDeferred
async def test_an_ordinary_message_is_signed_inline_and_a_large_one_in_the_pool(tmp_path):
    engine = engine_with_key(tmp_path)
    small = HEAD + b"x\r\n"
    signed = await Signing(engine).signed("id1", small, 1.0)
    assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(small)
    assert engine.run_in_thread.calls == 0
    large = HEAD + (b"y" * 76 + b"\r\n") * (INLINE_BYTES // 78 + 1)
    signed = await Signing(engine).signed("id2", large, 1.0)
    assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(large)
    assert engine.run_in_thread.calls == 1
    assert (engine.counters.dkim_signed, engine.counters.dkim_unsignable) == (2, 0)


class BrokenSigner(Signer):
    def sign(self, *args, **kwargs):
        raise RuntimeError("a bug")


@pytest_twisted.ensureDeferred
async def test_a_signer_that_breaks_sends_the_message_unsigned_and_counts_it(tmp_path):
    engine = engine_with_key(tmp_path)
    engine.signer = BrokenSigner(engine.signer.by_domain["example.com"])
    content = HEAD + b"x\r\n"
    assert await Signing(engine).signed("id1", content, 1.0) == content
    assert engine.counters.dkim_unsignable == 1
