"""The DKIM signing process (a real child process): it signs what the engine would sign;
when it fails, is stuck, or cannot start, the engine signs instead, counts it, logs it
once and starts a new one later; no message is lost or refused (issue 11)."""

from __future__ import annotations

import functools
import signal
import sys
import time
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from mailengine.config.schema import DKIM_HEADERS
from mailengine.signing.accept import Signing
from mailengine.signing.keys import DkimKey, generate_key
from mailengine.signing.process import SigningProcess, Unavailable
from mailengine.signing.signer import Signer
from tests.twisted.web_harness import make_engine

MESSAGE = b"From: a@example.com\r\nSubject: s\r\n\r\nx\r\n"
C = "relaxed/relaxed"


@functools.cache
def signer():
    return Signer([DkimKey("example.com", "s", "-", generate_key("ed25519"))])


def started(argv=None):
    process = SigningProcess(SimpleNamespace(signer=signer(), reactor=reactor), argv)
    process.startService()
    return process


async def until(check, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await task.deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.ensureDeferred
async def test_the_process_signs_as_the_engine_does_and_ends_at_stop():
    process = started()
    try:
        results = await defer.gatherResults(
            [process.sign(MESSAGE, 1000.0 + i, DKIM_HEADERS, C) for i in range(20)]
        )
        assert results == [signer().sign(MESSAGE, 1000.0 + i, DKIM_HEADERS, C) for i in range(20)]
        assert all(r.is_signed for r in results)
    finally:
        await process.stopService()
    assert process.transport is None and not process.pending


@pytest_twisted.ensureDeferred
async def test_a_process_that_dies_leaves_its_messages_to_the_engine_and_starts_again(tmp_path):
    engine, _ = make_engine(str(tmp_path))
    engine.signer = signer()
    process = engine.signing_process = started()
    try:
        await process.sign(MESSAGE, 1.0, DKIM_HEADERS, C)  # it is up
        process.transport.signalProcess("STOP")  # cannot answer ...
        waiting = [Signing(engine).signed(f"id{i}", MESSAGE, 1.0) for i in range(3)]
        process.transport.signalProcess("KILL")  # ... and dies with three messages asked
        signed = await defer.gatherResults(waiting)
        assert all(s.startswith(b"DKIM-Signature: ") and s.endswith(MESSAGE) for s in signed)
        assert engine.counters.dkim_signed_in_engine == 3
        assert engine.counters.dkim_signed == 3 and engine.counters.dkim_unsignable == 0
        # Until the restart is due, the engine signs (and counts) at once.
        assert process.restart_at is not None and process.transport is None
        assert (await Signing(engine).signed("id4", MESSAGE, 1.0)).startswith(b"DKIM-")
        assert engine.counters.dkim_signed_in_engine == 4
        process.restart_at = reactor.seconds()  # a minute later
        assert (await Signing(engine).signed("id5", MESSAGE, 1.0)).startswith(b"DKIM-")
        assert engine.counters.dkim_signed_in_engine == 4 and process.starts == 2
    finally:
        await process.stopService()


@pytest_twisted.ensureDeferred
async def test_a_process_that_cannot_run_or_is_stuck_fails_over_to_the_engine():
    broken = started([sys.executable, "-c", "raise SystemExit(3)"])
    try:
        await until(lambda: broken.transport is None)
        assert broken.restart_at is not None
        with pytest.raises(Unavailable):
            await broken.sign(MESSAGE, 1.0, DKIM_HEADERS, C)
    finally:
        await broken.stopService()
    stuck = started([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        asked = stuck.sign(MESSAGE, 1.0, DKIM_HEADERS, C)
        stuck.check_stuck()
        assert not asked.called  # not yet stuck
        ident = next(iter(stuck.pending))
        stuck.pending[ident] = (stuck.pending[ident][0], reactor.seconds() - 31)
        stuck.check_stuck()  # now it is: killed, its message left to the engine
        with pytest.raises(Unavailable):
            await asked
        assert stuck.transport is None
    finally:
        await stuck.stopService()


@pytest_twisted.ensureDeferred
async def test_a_crash_with_multi_buffer_rsa_on_makes_the_next_process_use_openssl_alone():
    """A signing process that dies by SIGSEGV (or SIGILL, SIGBUS...) crashed in native
    code; with multi-buffer RSA on that may be crypto_mb, so the next one goes without it
    instead of crashing again every minute. A kill (a stuck process) does not count."""
    from twisted.logger import globalLogPublisher

    rsa_signer = Signer([DkimKey("example.com", "s", "-", generate_key("rsa"))], multi_buffer=True)
    events = []
    globalLogPublisher.addObserver(events.append)
    process = SigningProcess(SimpleNamespace(signer=rsa_signer, reactor=reactor))
    process.startService()

    def notes():
        return [e["note"] for e in events if "note" in e]

    try:
        await until(lambda: len(notes()) == 1)
        process.transport.signalProcess("KILL")  # as for a stuck process: no change
        await until(lambda: process.transport is None)
        assert process.multi_buffer
        process.restart_at = reactor.seconds()
        assert (await process.sign(MESSAGE, 1.0, DKIM_HEADERS, C)).is_signed
        await until(lambda: len(notes()) == 2)
        assert notes()[1] == notes()[0] != "OpenSSL (multi-buffer RSA off)"
        process.transport.signalProcess(signal.SIGSEGV)
        await until(lambda: process.transport is None)
        assert not process.multi_buffer
        crashed = [e for e in events if "crashed with multi-buffer" in e.get("log_format", "")]
        assert len(crashed) == 1
        process.restart_at = reactor.seconds()
        result = await process.sign(MESSAGE, 1.0, DKIM_HEADERS, C)
        assert result == rsa_signer.sign(MESSAGE, 1.0, DKIM_HEADERS, C)
        await until(lambda: len(notes()) == 3)
        assert notes()[2] == "OpenSSL (multi-buffer RSA off)"
    finally:
        globalLogPublisher.removeObserver(events.append)
        await process.stopService()
