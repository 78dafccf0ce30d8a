"""Sign relay mail with the DKIM keys of its From: domain (pure: ``now`` comes in).

dkimpy parses the header, canonicalises (RFC 6376 §3.4) and hashes the signed
fields; the signature itself is made by ``DkimKey.sign_digest`` (OpenSSL via
``cryptography``), because dkimpy's own RSA is pure Python and costs
milliseconds per message. The body is canonicalised and hashed once for all keys.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
from collections.abc import Iterable, Sequence

import attrs
import dkim
from dkim.canonicalization import CanonicalizationPolicy, Relaxed, strip_trailing_lines

from mailengine.queue.content import split_headers
from mailengine.signing.keys import DkimKey

SIGNATURE_FIELD = b"DKIM-Signature"


@attrs.frozen
class Signed:
    """The outcome for one message: the fields to put on top (empty: unsigned) and why."""

    header: bytes = b""  # one DKIM-Signature field per key, each ending in CRLF
    domain: str = ""  # the d= of the signatures
    problem: str = ""  # set when the message cannot be signed (sent unsigned, warned)

    @property
    def is_signed(self) -> bool:
        return bool(self.header)


class Signer:
    """Chooses keys by the From: domain, falling back to the closest parent with keys."""

    def __init__(self, keys: Iterable[DkimKey]) -> None:
        self.by_domain: dict[str, list[DkimKey]] = {}
        for key in keys:
            self.by_domain.setdefault(key.domain, []).append(key)
        # RFC 8463 §4: a verifier that knows only RSA still finds its signature first.
        for found in self.by_domain.values():
            found.sort(key=lambda k: k.algorithm != "rsa")

    def __bool__(self) -> bool:
        return bool(self.by_domain)

    def keys_for(self, domain: str) -> list[DkimKey]:
        """The keys of ``domain`` or of its closest parent that has some (DMARC relaxed
        alignment: the organisational domain's key aligns with its subdomains)."""
        labels = domain.lower().rstrip(".").split(".")
        for start in range(len(labels) - 1):
            found = self.by_domain.get(".".join(labels[start:]))
            if found:
                return found
        return []

    def sign(
        self, content: bytes, now: float, headers: Sequence[str], canonicalization: str
    ) -> Signed:
        """Sign canonical content (CRLF lines); never raises for a bad message."""
        if not self.by_domain:
            return Signed()
        # dkimpy parses the header; the body of canonical content needs no parsing (and
        # splitting a large body into lines would cost more than the signature).
        head, body = split_headers(content)
        try:
            fields, _ = dkim.rfc822_parse(head)
        except dkim.MessageFormatError as exc:
            return Signed(problem=f"the header cannot be parsed ({exc})")
        domain, problem = from_domain(fields)
        if problem:
            return Signed(problem=problem)
        keys = self.keys_for(domain)
        if not keys:
            return Signed()
        policy = CanonicalizationPolicy.from_c_value(canonicalization.encode("ascii"))
        body_hash = base64.b64encode(hashlib.sha256(canonical_body(policy, body)).digest())
        signed_names = names_to_sign(fields, headers)
        # Only the fields named in h= are hashed: canonicalise just those.
        wanted = set(signed_names)
        canonical_fields = policy.canonicalize_headers(
            [field for field in fields if field[0].lower() in wanted]
        )
        signatures = [
            signature_field(key, policy, canonical_fields, signed_names, body_hash, int(now))
            for key in keys
        ]
        return Signed(header=b"".join(signatures), domain=keys[0].domain)


def canonical_body(policy: CanonicalizationPolicy, body: bytes) -> bytes:
    """dkimpy's body canonicalisation, skipping its whitespace substitutions when they
    could change nothing (they cost most of the signing time of a typical message)."""
    if (
        policy.body_algorithm is Relaxed
        and b"\t" not in body
        and b"  " not in body
        and b" \r\n" not in body
    ):
        # relaxed = strip trailing WSP, compress WSP runs, strip trailing empty lines,
        # an empty body stays empty (RFC 6376 §3.4.4): only the last two can apply.
        canonical = strip_trailing_lines(body)
        return b"" if canonical == b"\r\n" else canonical
    return policy.canonicalize_body(body)


def from_domain(fields: Sequence[tuple[bytes, bytes]]) -> tuple[str, str]:
    """(domain, "") of the one From: field, or ("", why the message cannot be signed)."""
    values = [value for name, value in fields if name.lower() == b"from"]
    if not values:
        return "", "it has no From: field"
    if len(values) > 1:
        return "", f"it has {len(values)} From: fields"
    text = values[0].decode("utf-8", "replace")
    addresses = [a for _, a in email.utils.getaddresses([text])]
    domains = {a.rpartition("@")[2].lower().rstrip(".") for a in addresses if "@" in a}
    domains.discard("")
    if len(domains) != 1:
        return "", f"its From: field names no single domain ({text.strip()[:100]!r})"
    domain = domains.pop()
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "", f"its From: domain {domain!r} is not a valid domain name"
    return domain, ""


def names_to_sign(fields: Sequence[tuple[bytes, bytes]], wanted: Sequence[str]) -> list[bytes]:
    """h= : each wanted field as often as it appears, and From once more (RFC 6376 §8.15:
    a From added later then breaks the signature)."""
    counts: dict[bytes, int] = {}
    for name, _ in fields:
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    names: list[bytes] = []
    for text in wanted:
        name = text.encode("ascii")
        names.extend([name] * (counts.get(name, 0) + (1 if name == b"from" else 0)))
    return names


def signature_field(
    key: DkimKey,
    policy: CanonicalizationPolicy,
    canonical_fields: list[tuple[bytes, bytes]],
    signed_names: list[bytes],
    body_hash: bytes,
    now: int,
) -> bytes:
    """One DKIM-Signature field, as dkimpy's ``DomainSigner.gen_header`` lays it out."""
    tags = [
        (b"v", b"1"),
        (b"a", key.signature_algorithm),
        (b"c", policy.to_c_value()),
        (b"d", key.domain.encode("ascii")),
        (b"s", key.selector.encode("ascii")),
        (b"t", str(now).encode("ascii")),
        (b"h", b" : ".join(signed_names)),  # spaces: where a long h= may be folded
        (b"bh", body_hash),
        # A long placeholder puts b= on a line of its own, so folding the real value
        # later leaves the whitespace of the tags before it (which are hashed) alone.
        (b"b", b"0" * 60),
    ]
    namelen = len(SIGNATURE_FIELD)
    value = dkim.fold(b"; ".join(b"=".join(t) for t in tags), namelen=namelen)
    value = dkim.RE_BTAG.sub(b"\\1", value)
    hasher = hashlib.sha256()
    dkim.hash_headers(
        hasher, policy, canonical_fields, signed_names, (SIGNATURE_FIELD, b" " + value), None
    )
    tags[-1] = (b"b", base64.b64encode(key.sign_digest(hasher.digest())))
    value = dkim.fold(b"; ".join(b"=".join(t) for t in tags) + b"\r\n", namelen=namelen)
    return SIGNATURE_FIELD + b": " + value
