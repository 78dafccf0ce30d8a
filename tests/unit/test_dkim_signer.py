"""The DKIM signer (pure): which key signs, what cannot be signed, and that dkimpy's
verifier accepts what it makes, for any body (issue 11)."""

from __future__ import annotations

import base64
import functools
import hashlib

import dkim
import pytest
from dkim.canonicalization import CanonicalizationPolicy
from hypothesis import given, settings
from hypothesis import strategies as st

from mailengine.config.schema import DKIM_HEADERS
from mailengine.queue.content import to_canonical
from mailengine.signing.keys import DkimKey, generate_key, txt_record
from mailengine.signing.signer import (
    Signer,
    canonical_body,
    from_domain,
    names_to_sign,
    parse_header,
)

CANONICALIZATIONS = ("relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple")


@functools.cache
def private(kind):
    return generate_key(kind)  # RSA generation is slow: one key per run


def key(domain, selector, kind="rsa"):
    return DkimKey(domain, selector, f"/keys/{domain}.{selector}", private(kind))


def lookup_for(*keys):
    records = {f"{k.dns_name}.".encode(): txt_record(k.private).encode() for k in keys}
    return lambda name, timeout=5: records.get(name)


def verify_all(data, lookup):
    count = data.count(b"DKIM-Signature:")
    return count and all(dkim.DKIM(data).verify(idx=i, dnsfunc=lookup) for i in range(count))


def test_the_from_domain_or_its_closest_parent_with_keys_signs():
    parent, child = key("example.com", "p"), key("news.example.com", "c")
    signer = Signer([parent, child])
    assert signer.keys_for("news.example.com") == [child]
    assert signer.keys_for("a.b.news.example.com") == [child]
    assert signer.keys_for("mail.example.com") == [parent]
    assert signer.keys_for("EXAMPLE.com.") == [parent]
    assert signer.keys_for("notexample.com") == []
    assert signer.keys_for("com") == []


def test_an_rsa_and_an_ed25519_key_give_two_signatures_rsa_first():
    ed, rsa = key("example.com", "e", "ed25519"), key("example.com", "r")
    signed = Signer([ed, rsa]).sign(
        b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n",
        1_700_000_000,
        DKIM_HEADERS,
        "relaxed/relaxed",
    )
    first, second = signed.header.split(b"DKIM-Signature: ")[1:]
    assert b"a=rsa-sha256" in first and b"s=r;" in first and b"t=1700000000;" in first
    assert b"a=ed25519-sha256" in second and signed.domain == "example.com"
    assert verify_all(
        signed.header + b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n", lookup_for(ed, rsa)
    )


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (b"Subject: none\r\n", "it has no From: field"),
        (b"From: a@example.com\r\nFrom: b@example.com\r\n", "it has 2 From: fields"),
        (b"From: a@example.com, b@example.org\r\n", "names no single domain"),
        (b"From: undisclosed\r\n", "names no single domain"),
        (b"From a@example.com\r\nbad line\r\n", "the header cannot be parsed"),
    ],
)
def test_a_message_that_cannot_be_signed_says_why_and_gets_no_signature(header, problem):
    signed = Signer([key("example.com", "s")]).sign(
        header + b"\r\nbody\r\n", 0, DKIM_HEADERS, "relaxed/relaxed"
    )
    assert not signed.is_signed and problem in signed.problem


def test_no_key_for_the_domain_is_no_problem_and_no_keys_sign_nothing():
    message = b"From: a@other.org\r\n\r\nx\r\n"
    assert Signer([key("example.com", "s")]).sign(message, 0, DKIM_HEADERS, "simple/simple") == (
        Signer([]).sign(message, 0, DKIM_HEADERS, "simple/simple")
    )
    assert not Signer([]).sign(message, 0, DKIM_HEADERS, "simple/simple").problem


def test_from_domain_reads_display_names_comments_and_idn():
    assert from_domain([(b"From", b' "A, B" <a@Example.COM> (x)\r\n')]) == ("example.com", "")
    assert from_domain([(b"from", " x@bücher.example\r\n".encode())]) == (
        "xn--bcher-kva.example",
        "",
    )


def test_from_is_signed_once_more_than_it_appears_others_as_often_as_they_appear():
    instances = {b"from": [(b"From", b"x")], b"received": [(b"Received", b"y")]}
    instances[b"to"] = [(b"To", b"a"), (b"TO", b"b")]
    wanted = [b"from", b"to", b"subject"]
    assert names_to_sign(instances, wanted) == [b"from", b"from", b"to", b"to"]


bodies = st.lists(
    st.sampled_from(
        [
            b"",
            b" ",
            b"\t",
            b"  ",
            b".",
            b"..",
            b"a",
            b"b c",
            b"\xc3\xa9",
            b"\xff",
            b"x" * 80,
            b"\r\n",
            b"\n",
            b"\r",
        ]
    ),
    max_size=30,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(body=bodies, c=st.sampled_from(CANONICALIZATIONS))
def test_the_fast_body_canonicalisation_is_dkimpys(body, c):
    body = to_canonical(body)
    policy = CanonicalizationPolicy.from_c_value(c.encode())
    assert canonical_body(policy, body) == policy.canonicalize_body(body)


@settings(max_examples=60, deadline=None)
@given(
    body=bodies,
    subject=st.text(alphabet=" \tabcé", max_size=100),
    c=st.sampled_from(CANONICALIZATIONS),
)
def test_dkimpy_verifies_every_signature_for_any_body_and_canonicalization(body, subject, c):
    keys = [key("example.com", "r"), key("example.com", "e", "ed25519")]
    message = to_canonical(
        b"From: News <n@news.example.com>\r\nTo: x@y.test\r\nSubject: "
        + subject.encode()
        + b"\r\n X-Folded: on\r\n\ta second line\r\n\r\n"
        + body
    )
    signed = Signer(keys).sign(message, 1_700_000_000, DKIM_HEADERS, c)
    assert signed.is_signed
    assert verify_all(signed.header + message, lookup_for(*keys))


# Byte-identity with dkimpy: the signer parses the header, selects and canonicalises
# the signed fields and empties b= itself (dkimpy's regular expressions cost more than
# the Ed25519 signature); dkimpy's own ``gen_header`` must give the very same fields.

field_values = st.lists(
    st.sampled_from([b"a", b"b c", b" ", b"\t", b"  ", b"\xc3\xa9", b"\xff", b"x" * 90, b";"]),
    max_size=8,
).map(b"".join)
folded_values = st.lists(field_values, min_size=1, max_size=3).map(
    lambda parts: b"\r\n\t".join(parts) if len(parts) % 2 else b"\r\n ".join(parts)
)
extra_fields = st.lists(
    st.tuples(
        st.sampled_from([b"To", b"TO", b"cc", b"Subject", b"Received", b"X-Other", b"Date"]),
        folded_values,
    ),
    max_size=6,
)
canonical_bodies = st.lists(
    st.sampled_from(
        [
            *(b"", b" ", b"\t", b"  ", b".", b"..", b".x", b"a", b"b c ", b"\xc3\xa9", b"\xff"),
            *(b"y" * 1000, b"\r\n", b"\n", b"\r", b"\r\r\n", b"\r\n\r\n"),
        ]
    ),
    max_size=30,
).map(lambda parts: to_canonical(b"".join(parts)))


def dkimpy_fields(message, keys, now, c):
    """What dkimpy's ``DomainSigner.gen_header`` makes for our tags: its own parse,
    body canonicalisation, field selection, hashing, folding, and signature."""
    import nacl.signing
    from cryptography.hazmat.primitives import serialization
    from dkim.crypto import parse_pem_private_key

    from mailengine.signing.keys import pem
    from mailengine.signing.signer import signature_tags

    out = []
    for k in keys:
        d = dkim.DKIM(message, signature_algorithm=k.signature_algorithm)
        policy = CanonicalizationPolicy.from_c_value(c.encode())
        d.hasher = dkim.HASH_ALGORITHMS[k.signature_algorithm]
        body_hash = base64.b64encode(hashlib.sha256(policy.canonicalize_body(d.body)).digest())
        counts = [x.lower() for x, _ in d.headers]
        names = [
            n.encode()
            for n in DKIM_HEADERS
            for _ in range(counts.count(n.encode()) + (n == "from"))
        ]
        if k.algorithm == "rsa":
            private = parse_pem_private_key(pem(k.private))
        else:
            raw = k.private.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            private = nacl.signing.SigningKey(raw)
        tags = signature_tags(k, policy, names, body_hash, now)
        out.append(
            b"DKIM-Signature: " + d.gen_header(tags, names, policy, b"DKIM-Signature", private)
        )
    return b"".join(out)


@settings(max_examples=120, deadline=None)
@given(
    fields=extra_fields,
    from_value=st.sampled_from(
        [b" a@news.example.com", b'  "A  B"\t<a@Example.com> ', b" a@example.com\r\n (c)"]
    ),
    from_position=st.integers(min_value=0, max_value=6),
    body=canonical_bodies,
    c=st.sampled_from(CANONICALIZATIONS),
    kind=st.sampled_from(["rsa", "ed25519"]),
)
def test_signatures_are_byte_identical_to_dkimpys(fields, from_value, from_position, body, c, kind):
    fields = list(fields)
    fields.insert(min(from_position, len(fields)), (b"From", from_value))
    head = b"".join(name + b":" + value + b"\r\n" for name, value in fields)
    message = to_canonical(head + b"\r\n" + body)
    k = key("example.com", "s", kind)
    signed = Signer([k]).sign(message, 1_700_000_000, DKIM_HEADERS, c)
    assert signed.is_signed
    assert signed.header == dkimpy_fields(message, [k], 1_700_000_000, c)


labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=63)


@settings(max_examples=60, deadline=None)
@given(
    domain=st.lists(labels, min_size=2, max_size=4).map(".".join),
    selector=st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=70),
    now=st.integers(min_value=0, max_value=10**12),
    subject=field_values,
    c=st.sampled_from(CANONICALIZATIONS),
    kind=st.sampled_from(["rsa", "ed25519"]),
)
def test_laid_out_signatures_are_dkimpys_for_any_domain_selector_and_time(
    domain, selector, now, subject, c, kind
):
    """The signer lays a key's field out once (``Layout``) and fills in t=, bh= and b=
    afterwards: long d= and s= values move where the field folds, a wider t= too."""
    k = DkimKey(domain, selector, "-", private(kind))
    signer = Signer([k])
    for body in (b"one\r\n", b"two  words \r\n\r\n"):  # the second from the layout
        message = b"From: a@" + domain.encode() + b"\r\nSubject:" + subject + b"\r\n\r\n" + body
        signed = signer.sign(message, now, DKIM_HEADERS, c)
        assert signed.header == dkimpy_fields(message, [k], now, c)


def test_libsodium_makes_openssls_ed25519_signature():
    """Ed25519 is deterministic: the engine's signer (libsodium) must give the bytes
    OpenSSL gives for the same key and digest."""
    k = key("example.com", "e", "ed25519")
    for digest in (bytes(32), hashlib.sha256(b"x").digest(), b"\xff" * 32):
        assert k.sign_digest(digest) == k.private.sign(digest)


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_an_ordinary_key_signs_from_its_layout(kind):
    """Not only the same bytes, but the fast way: a usual d=, s= and t= fold outside the
    values, so the layout is made and kept."""
    k = key("example.com", "s2026", kind)
    signer = Signer([k])
    message = b"From: a@example.com\r\nTo: b@example.net\r\n\r\nx\r\n"
    signer.sign(message, 1_765_000_000, DKIM_HEADERS, "relaxed/relaxed")
    layouts = list(signer._layouts.values())
    assert len(layouts) == 1 and layouts[0] is not None
    ((_, parts),) = layouts[0].fields.values()
    assert [index for index, _, _ in parts].count(2) > 1  # b= folded over several lines
    signer.sign(message, 1_765_000_001, DKIM_HEADERS, "relaxed/relaxed")
    assert list(signer._layouts.values()) == layouts


def test_a_stand_in_byte_in_the_fixed_tags_means_no_layout():
    """The layout marks where t=, bh= and b= go with bytes \\x01-\\x03; should d=, s= or h=
    hold one (the settings forbid it), the field is laid out afresh each time."""
    k = key("example.com", "s\x03")
    signer = Signer([k])
    message = b"From: a@example.com\r\n\r\nx\r\n"
    signed = signer.sign(message, 1_765_000_000, DKIM_HEADERS, "relaxed/relaxed")
    assert list(signer._layouts.values()) == [None]
    assert signed.header == dkimpy_fields(message, [k], 1_765_000_000, "relaxed/relaxed")


def test_a_t_value_longer_than_a_line_is_laid_out_afresh_and_still_dkimpys():
    k = key("example.com", "s")
    signer = Signer([k])
    message = b"From: a@example.com\r\n\r\nx\r\n"
    now = 10**90  # t= broken over two lines where the digest hashes it
    signed = signer.sign(message, now, DKIM_HEADERS, "relaxed/relaxed")
    assert list(signer._layouts.values()) == [None]
    assert signed.header == dkimpy_fields(message, [k], now, "relaxed/relaxed")


heads = st.lists(
    st.sampled_from(
        [
            *(b"From: a@b", b"To:x", b" folded", b"\tfolded", b"X y: z", b":", b"From x"),
            *(b"\xff: x", b"A:\xff", b"Subject:  s  ", b""),
        ]
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(lines=heads, end=st.sampled_from([b"\r\n", b"\n", b"\r\r\n"]))
def test_the_header_parser_is_dkimpys(lines, end):
    head = b"".join(line + end for line in lines) + b"\r\n"
    try:
        expected = [tuple(f) for f in dkim.rfc822_parse(head)[0]]
    except (dkim.MessageFormatError, IndexError):
        expected = None
    try:
        got = parse_header(head)
    except dkim.MessageFormatError:
        got = None
    assert got == expected
