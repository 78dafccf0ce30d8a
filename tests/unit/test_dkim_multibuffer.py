"""RSA signatures eight at a time (signing/multibuffer.py, [dkim] rsa_multi_buffer): the
same bytes OpenSSL makes, a wrong one never used, OpenSSL wherever it cannot run
(issue 11). Runs Intel's crypto_mb itself: skipped only where it cannot be loaded (it
is in the test extra for x86-64 Linux)."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mailengine.config.schema import DKIM_HEADERS
from mailengine.signing import multibuffer, wire
from mailengine.signing.keys import DkimKey, generate_key, pem, txt_record
from mailengine.signing.signer import Signer
from mailengine.signing.worker import serve


@pytest.fixture(scope="module")
def library():
    found, why = multibuffer.load()
    if found is None:
        pytest.skip(f"Intel crypto_mb: {why}")
    return found


@functools.cache
def rsa_key(bits=2048):
    return generate_key("rsa", bits)


def digests(count, salt=b""):
    return [hashlib.sha256(b"%s message %d" % (salt, i)).digest() for i in range(count)]


def openssl(private):
    return DkimKey("example.com", "s", "-", private).sign_digest


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
@pytest.mark.parametrize("count", [1, 3, 8])
def test_the_signatures_are_the_bytes_openssl_makes(library, bits, count):
    private = rsa_key(bits)
    lanes = multibuffer.lanes_for(private, openssl(private))
    assert lanes is not None
    wanted = digests(count, b"%d" % bits)
    assert lanes.sign(wanted) == [openssl(private)(d) for d in wanted]
    assert lanes.refused == 0


class Corrupting:
    """crypto_mb with one lane's signature or status spoilt after it ran."""

    def __init__(self, dll, lanes, lane, how):
        self.dll, self.lanes, self.lane, self.how = dll, lanes, lane, how

    def __getattr__(self, name):
        return getattr(self.dll, name)

    def mbx_rsa_private_crt_mb8(self, *args):
        status = self.dll.mbx_rsa_private_crt_mb8(*args)
        if self.how == "bytes":
            block = bytearray(self.lanes._out[self.lane].raw)
            block[100] ^= 0x01
            self.lanes._out[self.lane].raw = bytes(block)
            return status
        return status | (0x2 << (4 * self.lane))  # as for a lane it could not compute


@pytest.mark.parametrize("how", ["bytes", "status"])
def test_a_signature_that_fails_its_check_is_made_again_by_openssl(library, how):
    private = rsa_key()
    made_by_openssl = []

    def fallback(digest):
        made_by_openssl.append(digest)
        return openssl(private)(digest)

    lanes = multibuffer.lanes_for(private, fallback)
    lanes.dll = Corrupting(lanes.dll, lanes, 2, how)
    wanted = digests(5)
    assert lanes.sign(wanted) == [openssl(private)(d) for d in wanted]
    assert made_by_openssl == [wanted[2]] and lanes.refused == 1


def test_what_crypto_mb_cannot_sign_goes_to_openssl(library):
    assert multibuffer.lanes_for(rsa_key(), openssl(rsa_key())) is not None
    assert multibuffer.lanes_for(odd(), openssl(odd())) is None  # no 2304-bit method
    e3 = rsa.generate_private_key(public_exponent=3, key_size=2048)
    assert multibuffer.lanes_for(e3, openssl(e3)) is None  # it checks with e=65537 only
    lanes = multibuffer.lanes_for(rsa_key(), openssl(rsa_key()))
    for bad in ([], digests(9), [b"short"]):
        with pytest.raises(ValueError):
            lanes.sign(bad)


def test_without_the_library_the_reason_is_given_and_openssl_signs(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    library, why = multibuffer._load()
    assert library is None
    assert why == "not installed (no ipp-crypto; pip install 'mailengine[intel-rsa]')"
    monkeypatch.setattr(multibuffer, "_loaded", (None, why))
    key = DkimKey("example.com", "s", "-", rsa_key())
    signer = Signer([key], multi_buffer=True)
    assert signer.lanes(key) is None
    messages = [(message(i), 1_700_000_000.0) for i in range(5)]
    plain = Signer([key])
    assert signer.sign_many(messages, DKIM_HEADERS, "relaxed/relaxed") == [
        plain.sign(m, now, DKIM_HEADERS, "relaxed/relaxed") for m, now in messages
    ]


def test_a_library_that_cannot_be_loaded_is_reported(monkeypatch):
    monkeypatch.setattr(multibuffer, "_library_file", lambda dist, name: f"/nonexistent/{name}")
    library, why = multibuffer._load()
    assert library is None and why.startswith("cannot be loaded (")


def message(i, domain="example.com"):
    return (
        b"From: Sender <s@%s>\r\nTo: r%d@x.test\r\nSubject: number %d\r\n"
        b"Message-ID: <%d@%s>\r\n\r\nbody %d\r\n" % (domain.encode(), i, i, i, domain.encode(), i)
    )


@pytest.mark.parametrize("count", [1, 2, 3, 9, 11, 17])
def test_signing_many_gives_each_message_what_signing_it_alone_gives(library, count):
    """RSA in groups of eight (the last one by OpenSSL when it is below MIN_LANES), the
    Ed25519 key beside it, messages with no key and unsignable ones in between; dkimpy
    verifies every signature."""
    keys = [
        DkimKey("example.com", "r", "-", rsa_key()),
        DkimKey("example.com", "e", "-", generate_key("ed25519")),
        DkimKey("other.test", "r2", "-", rsa_key(3072)),
    ]
    messages = []
    for i in range(count):
        kind = i % 5
        if kind == 3:
            content = b"From: a@example.com\r\nFrom: b@example.com\r\n\r\ntwo Froms\r\n"
        elif kind == 4:
            content = message(i, "nokey.test")
        else:
            content = message(i, "other.test" if kind == 2 else "example.com")
        messages.append((content, 1_700_000_000.0 + i))
    batched = Signer(keys, multi_buffer=True)
    signed = batched.sign_many(messages, DKIM_HEADERS, "relaxed/relaxed")
    alone = Signer(keys)
    assert signed == [alone.sign(m, now, DKIM_HEADERS, "relaxed/relaxed") for m, now in messages]
    records = {f"{k.dns_name}.".encode(): txt_record(k.private).encode() for k in keys}
    for result, (content, _) in zip(signed, messages, strict=True):
        if result.is_signed:
            data = result.header + content
            count_ = data.count(b"DKIM-Signature:")
            for idx in range(count_):
                assert dkim.DKIM(data).verify(idx=idx, dnsfunc=lambda n, timeout=5: records.get(n))
    assert all(lanes is None or lanes.refused == 0 for lanes in batched._lanes.values())


def one_read(key, count):
    """What the signing process answers to ``count`` messages that come in one read
    (multi-buffer on)."""
    stream = wire.keys_frame([(key.domain, key.selector, pem(key.private))], True)
    stream += wire.settings_frame(DKIM_HEADERS, "relaxed/relaxed")
    stream += b"".join(
        wire.sign_head(i, 1_700_000_000.0, len(message(i))) + message(i)
        for i in range(1, count + 1)
    )
    reads = iter([stream, b""])
    written = []
    serve(lambda: next(reads), written.append)
    note, *answers = wire.Frames().feed(b"".join(written))
    assert note == (wire.NOTE, 0, f"{multibuffer.load()[1]}, up to eight at a time".encode())
    return answers


def test_the_signing_process_signs_a_reads_messages_together(library, monkeypatch):
    """With multi-buffer on in the keys frame, eleven messages in one read are signed in
    one ``sign_many``; answers as the engine's own signer would give."""
    key = DkimKey("example.com", "r", "-", rsa_key())
    calls = []
    real = Signer.sign_many

    def counting(self, messages, headers, canonicalization):
        messages = list(messages)
        calls.append((len(messages), self.multi_buffer))
        return real(self, messages, headers, canonicalization)

    monkeypatch.setattr(Signer, "sign_many", counting)
    answers = one_read(key, 11)
    assert calls == [(11, True)]
    plain = Signer([key])
    assert [ident for _, ident, _ in answers] == list(range(1, 12))
    for kind, ident, payload in answers:
        expected = plain.sign(message(ident), 1_700_000_000.0, DKIM_HEADERS, "relaxed/relaxed")
        assert wire.read_result(kind, payload) == expected


def test_when_signing_together_raises_each_message_is_signed_alone(library, monkeypatch):
    """One bad message must not cost the others their signatures: the read is signed
    message by message, and only the one that raises is answered with an error (the
    engine signs that one itself)."""
    key = DkimKey("example.com", "r", "-", rsa_key())
    real = Signer.sign

    def broken(self, messages, headers, canonicalization):
        raise RuntimeError("cannot")

    def fragile(self, content, now, headers, canonicalization):
        if b"number 2" in content:
            raise RuntimeError("cannot")
        return real(self, content, now, headers, canonicalization)

    monkeypatch.setattr(Signer, "sign_many", broken)
    monkeypatch.setattr(Signer, "sign", fragile)
    answers = one_read(key, 4)
    assert [(kind, ident) for kind, ident, _ in answers] == [
        (wire.SIGNED, 1),
        (wire.ERROR, 2),
        (wire.SIGNED, 3),
        (wire.SIGNED, 4),
    ]
    assert b"RuntimeError: cannot" in answers[1][2]


def test_the_log_is_told_how_rsa_is_signed(library, monkeypatch):
    def signer(*bits_list, multi_buffer=True, ed=False):
        keys = [
            DkimKey("example.com", f"s{bits}", "-", rsa_key(bits) if bits != 2304 else odd())
            for bits in bits_list
        ]
        if ed:
            keys.append(DkimKey("example.com", "e", "-", generate_key("ed25519")))
        return Signer(keys, multi_buffer=multi_buffer).rsa_signatures()

    what = multibuffer.load()[1]
    assert signer(ed=True) == ""
    assert signer(2048, multi_buffer=False) == "OpenSSL (multi-buffer RSA off)"
    assert signer(2048, 4096, ed=True) == f"{what}, up to eight at a time"
    assert signer(2048, 2304) == (
        f"{what}, up to eight at a time; OpenSSL for s2304._domainkey.example.com"
    )
    assert signer(2304) == f"OpenSSL; {what} takes none of the keys"
    monkeypatch.setattr(multibuffer, "_loaded", (None, "not installed (no ipp-crypto)"))
    assert signer(2048) == "OpenSSL; multi-buffer RSA not installed (no ipp-crypto)"


@functools.cache
def odd():
    return rsa.generate_private_key(public_exponent=65537, key_size=2304)


def test_keys_frame_carries_the_setting():
    ((kind, _, payload),) = wire.Frames().feed(wire.keys_frame([], False))
    assert kind == wire.KEYS and payload == b"[[], false]"
