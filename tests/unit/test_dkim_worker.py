"""The DKIM signing process's loop and wire (pure): what it answers is what the engine's
own signer gives, however the pipe cuts the frames (issue 11)."""

from __future__ import annotations

import functools
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from mailengine.config.schema import DKIM_HEADERS
from mailengine.signing import wire
from mailengine.signing.keys import DkimKey, generate_key, pem
from mailengine.signing.signer import Signed, Signer
from mailengine.signing.worker import serve

MESSAGES = [
    b"From: a@example.com\r\nTo: b@x.test\r\nSubject: s\r\n\r\nbody\r\n.dot\r\n",
    b"From: a@other.test\r\n\r\nno key\r\n",
    b"From: a@example.com\r\nFrom: b@example.com\r\n\r\ntwo Froms\r\n",
    b"From: n@news.example.com\r\n\r\n" + b"\xff" * 3000 + b"\r\n",
]


@functools.cache
def keys():
    return (
        DkimKey("example.com", "r", "-", generate_key("rsa")),
        DkimKey("example.com", "e", "-", generate_key("ed25519")),
    )


def run(frames: bytes, cuts: list[int]) -> list[tuple[bytes, int, bytes]]:
    """serve() over ``frames`` delivered in pieces cut at ``cuts``; the frames it wrote."""
    points = sorted({min(c, len(frames)) for c in cuts} | {0, len(frames)})
    chunks = [frames[a:b] for a, b in itertools.pairwise(points)]
    reads = iter([*chunks, b""])
    written: list[bytes] = []
    serve(lambda: next(reads), written.append)
    answers = wire.Frames().feed(b"".join(written))
    # The keys are answered by how RSA is signed (an RSA key is among them).
    assert answers[0] == (wire.NOTE, 0, b"OpenSSL (multi-buffer RSA off)")
    return answers[1:]


def request(ident: int, content: bytes, now: float = 1_700_000_000.0) -> bytes:
    return wire.sign_head(ident, now, len(content)) + content


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=12))
def test_the_process_answers_each_message_as_the_engines_signer_does(cuts):
    stream = wire.keys_frame([(k.domain, k.selector, pem(k.private)) for k in keys()], False)
    stream += wire.settings_frame(DKIM_HEADERS, "relaxed/simple")
    stream += b"".join(request(i + 1, m) for i, m in enumerate(MESSAGES))
    answers = run(stream, cuts)
    assert [ident for _, ident, _ in answers] == [1, 2, 3, 4]
    signer = Signer(keys())
    for (kind, _, payload), message in zip(answers, MESSAGES, strict=True):
        expected = signer.sign(message, 1_700_000_000.0, DKIM_HEADERS, "relaxed/simple")
        assert wire.read_result(kind, payload) == expected
    kinds = [kind for kind, _, _ in answers]
    assert kinds == [wire.SIGNED, wire.UNSIGNED, wire.PROBLEM, wire.SIGNED]


def test_a_signer_error_is_answered_as_an_error_and_the_next_message_still_signed():
    stream = wire.keys_frame([(k.domain, k.selector, pem(k.private)) for k in keys()], False)
    stream += wire.settings_frame(DKIM_HEADERS, "no/such")  # the signer raises for it
    stream += request(7, MESSAGES[0])
    stream += wire.settings_frame(DKIM_HEADERS, "relaxed/relaxed")
    stream += request(8, MESSAGES[0])
    (kind, ident, payload), (kind2, ident2, payload2) = run(stream, [])
    assert (kind, ident, kind2, ident2) == (wire.ERROR, 7, wire.SIGNED, 8)
    assert b"InvalidCanonicalizationPolicyError" in payload
    assert wire.read_result(kind2, payload2).is_signed


def test_result_frames_carry_every_outcome():
    for result in (Signed(), Signed(problem="it has 2 From: fields"), Signed(b"X: y\r\n", "a.b")):
        ((kind, ident, payload),) = wire.Frames().feed(wire.result_frame(5, result))
        assert ident == 5 and wire.read_result(kind, payload) == result
