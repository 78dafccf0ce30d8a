"""The DKIM signer (pure): which key signs, what cannot be signed, and that dkimpy's
verifier accepts what it makes, for any body (issue 11)."""

from __future__ import annotations

import functools

import dkim
import pytest
from dkim.canonicalization import CanonicalizationPolicy
from hypothesis import given, settings
from hypothesis import strategies as st

from mailengine.config.schema import DKIM_HEADERS
from mailengine.queue.content import to_canonical
from mailengine.signing.keys import DkimKey, generate_key, txt_record
from mailengine.signing.signer import Signer, canonical_body, from_domain, names_to_sign

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
    fields = [(b"From", b"x"), (b"Received", b"y"), (b"To", b"a"), (b"TO", b"b")]
    assert names_to_sign(fields, ["from", "to", "subject"]) == [b"from", b"from", b"to", b"to"]


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
