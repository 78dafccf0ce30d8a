"""Sign relay mail with the DKIM keys of its From: domain (pure: ``now`` comes in).

The layout follows dkimpy (its tag order, folding, canonicalisation policies, and the
verifier in the tests); the per-message steps it does with a regular expression per
line (parsing the header, selecting and relaxing the signed fields, emptying b=) are
done here with the same results for a fraction of the CPU, proven byte-identical to
dkimpy's ``gen_header`` by tests/unit/test_dkim_signer.py. The DKIM-Signature field is
folded once per key and set of signed fields (``Layout``), not once per message. The
signature itself is made by ``DkimKey.sign_digest`` (RSA in OpenSSL, Ed25519 in
libsodium), because dkimpy's own RSA is pure Python and costs milliseconds per message;
``sign_many`` signs several messages together, an RSA key's in groups of eight with
Intel's multi-buffer RSA where it is installed (signing/multibuffer.py).
The engine runs this in its signing process (signing/process.py, signing/worker.py)
or, without one, itself.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence

import attrs
import dkim
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.canonicalization import CanonicalizationPolicy, Relaxed, strip_trailing_lines

from mailengine.queue.content import split_headers
from mailengine.signing import multibuffer
from mailengine.signing.keys import DkimKey

SIGNATURE_FIELD = b"DKIM-Signature"
FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")  # dkim.rfc822_parse's
LINE_BREAK = re.compile(rb"\r?\n")  # dkimpy's unfold_header_value
WSP_RUN = re.compile(rb"[\t ]+")  # dkimpy's compress_whitespace
MAYBE_B_TAG = re.compile(rb"b\s*=")  # where RE_BTAG could match
FIELD = re.compile(rb"([\x21-\x7e]+?):([^\n]*\n(?:[\t ][^\n]*\n)*)")  # a field, folds and all
DOMAIN_CACHE_SIZE = 1000  # From: fields whose domain is remembered
LAYOUT_CACHE_SIZE = 1000  # signature layouts remembered (a key, c=, h= and t='s width each)
# Stand-ins for the t=, bh= and b= values while a layout is made: bytes that neither
# folding nor canonicalisation treats specially (no whitespace, no ';', 'b' or '=').
T_MARK, BH_MARK, B_MARK = b"\x01", b"\x02", b"\x03"
BH_LENGTH = 44  # base64 of a SHA-256 digest


@attrs.frozen
class Signed:
    """The outcome for one message: the fields to put on top (empty: unsigned) and why."""

    header: bytes = b""  # one DKIM-Signature field per key, each ending in CRLF
    domain: str = ""  # the d= of the signatures
    problem: str = ""  # set when the message cannot be signed (sent unsigned, warned)

    @property
    def is_signed(self) -> bool:
        return bool(self.header)


@attrs.define
class Layout:
    """One key's DKIM-Signature field for one c=, h= and width of t=, with its t=, bh=
    and b= values left out: ``digest % (t, bh)`` is what the key's digest hashes after
    the signed fields (``digest_input``), and ``field_for(t, bh, b)`` the field itself
    (``field_with_b``).

    Made by running those two functions on stand-ins of the values' widths. Folding
    breaks lines by the positions of spaces and the length alone, and the values hold no
    whitespace (digits, base64), so the real values fold exactly as the stand-ins did
    (b= over several lines, at the same places); the tests prove the fields
    byte-identical to dkimpy's."""

    digest: bytes
    tags: list[tuple[bytes, bytes]]  # with the stand-ins for t= and bh=
    stand_ins: tuple[bytes, bytes]  # t=, bh=
    # by the length of b=: the field as a %-template and, for each %s, which value
    # (0 t=, 1 bh=, 2 b=) and which part of it goes there
    fields: dict[int, tuple[bytes, tuple[tuple[int, int, int], ...]]] = attrs.Factory(dict)

    @classmethod
    def make(
        cls,
        key: DkimKey,
        policy: CanonicalizationPolicy,
        signed_names: list[bytes],
        stamp_length: int,
    ) -> Layout | None:
        """None when t= or bh= would be broken across lines in what the digest hashes (a
        t= longer than a line): such a signature is laid out afresh each time. (Emptying
        b= there looks at what comes before it, so a broken value could change it.)"""
        stamp, body_hash = T_MARK * stamp_length, BH_MARK * BH_LENGTH
        tags = signature_tags(key, policy, signed_names, body_hash, stamp)
        fixed = b"".join(name + value for name, value in tags if value not in (stamp, body_hash))
        if any(mark in fixed for mark in (T_MARK, BH_MARK, B_MARK)):
            return None  # a stand-in's byte in d=, s= or h= (the settings forbid it)
        digest, parts = _template(digest_input(policy, tags), (stamp, body_hash))
        if parts != ((0, 0, stamp_length), (1, 0, BH_LENGTH)):
            return None
        return cls(digest=digest, tags=tags, stand_ins=(stamp, body_hash))

    def finisher(self, stamp: bytes, body_hash: bytes) -> Callable[[bytes], bytes]:
        """What makes the field from the signature."""
        return lambda signature: self.field_for(stamp, body_hash, base64.b64encode(signature))

    def field_for(self, stamp: bytes, body_hash: bytes, b_value: bytes) -> bytes:
        found = self.fields.get(len(b_value))
        if found is None:
            b_stand_in = B_MARK * len(b_value)
            field = field_with_b(self.tags, b_stand_in)
            found = self.fields[len(b_value)] = _template(field, (*self.stand_ins, b_stand_in))
        template, parts = found
        values = (stamp, body_hash, b_value)
        return template % tuple([values[i][a:z] for i, a, z in parts])


def _template(
    text: bytes, stand_ins: tuple[bytes, ...]
) -> tuple[bytes, tuple[tuple[int, int, int], ...]]:
    """``text`` as a %-template with a ``%s`` for each run of a stand-in's byte, and what
    goes there: (which stand-in, start, end)."""
    marks = {stand_in[:1]: index for index, stand_in in enumerate(stand_ins)}
    runs = re.compile(b"|".join(re.escape(mark) + b"+" for mark in marks))
    parts, done = [], [0] * len(stand_ins)
    for run in runs.finditer(text):
        index = marks[run.group()[:1]]
        start = done[index]
        done[index] += len(run.group())
        parts.append((index, start, done[index]))
    pieces = runs.split(text)
    template = b"%s".join(piece.replace(b"%", b"%%") for piece in pieces)
    return template, tuple(parts)


class Signer:
    """Chooses keys by the From: domain, falling back to the closest parent with keys."""

    def __init__(self, keys: Iterable[DkimKey], multi_buffer: bool = False) -> None:
        # [dkim] rsa_multi_buffer: RSA signatures in groups of eight where they can be.
        self.multi_buffer = multi_buffer
        self._lanes: dict[int, multibuffer.RsaLanes | None] = {}  # by id() of a key kept here
        self.by_domain: dict[str, list[DkimKey]] = {}
        for key in keys:
            self.by_domain.setdefault(key.domain, []).append(key)
        # RFC 8463 §4: a verifier that knows only RSA still finds its signature first.
        for found in self.by_domain.values():
            found.sort(key=lambda k: k.algorithm != "rsa")
        self._domains: dict[bytes, tuple[str, str]] = {}
        self._policies: dict[str, CanonicalizationPolicy] = {}
        self._wanted: dict[tuple[str, ...], list[bytes]] = {}
        self._layouts: dict[tuple[int, int, bytes, int], Layout | None] = {}

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
        found = self.prepare(content, now, headers, canonicalization)
        if isinstance(found, Signed):
            return found
        domain, parts = found
        fields = [finish(key.sign_digest(digest)) for key, digest, finish in parts]
        return Signed(header=b"".join(fields), domain=domain)

    def sign_many(
        self,
        messages: Iterable[tuple[bytes, float]],
        headers: Sequence[str],
        canonicalization: str,
    ) -> list[Signed]:
        """``sign`` for each (content, now), the signatures of each key made together:
        with ``multi_buffer``, an RSA key's in groups of eight (signing/multibuffer.py)."""
        messages = list(messages)
        if not self.multi_buffer or len(messages) < multibuffer.MIN_LANES:
            return [self.sign(content, now, headers, canonicalization) for content, now in messages]
        prepared = [
            self.prepare(content, now, headers, canonicalization) for content, now in messages
        ]
        digests: dict[int, tuple[DkimKey, list[bytes]]] = {}
        for found in prepared:
            if isinstance(found, Signed):
                continue
            for key, digest, _ in found[1]:
                entry = digests.get(id(key))
                if entry is None:
                    entry = digests[id(key)] = (key, [])
                entry[1].append(digest)
        made = {ident: iter(self.sign_digests(*entry)) for ident, entry in digests.items()}
        results = []
        for found in prepared:
            if isinstance(found, Signed):
                results.append(found)
                continue
            domain, parts = found
            fields = [finish(next(made[id(key)])) for key, _, finish in parts]
            results.append(Signed(header=b"".join(fields), domain=domain))
        return results

    def prepare(
        self, content: bytes, now: float, headers: Sequence[str], canonicalization: str
    ) -> Signed | tuple[str, list[tuple[DkimKey, bytes, Callable[[bytes], bytes]]]]:
        """Everything of ``sign`` but the signatures: the outcome when there is nothing to
        sign, else the d= domain and for each key the digest to sign and what makes the
        field of its signature."""
        if not self.by_domain:
            return Signed()
        # The body of canonical content needs no parsing (and splitting a large body into
        # lines would cost more than the signature).
        head, body = split_headers(content)
        try:
            fields = parse_header(head)
        except dkim.MessageFormatError as exc:
            return Signed(problem=f"the header cannot be parsed ({exc})")
        instances: dict[bytes, list[tuple[bytes, bytes]]] = {}
        for field in fields:
            instances.setdefault(field[0].lower(), []).append(field)
        domain, problem = self.from_domain(instances.get(b"from", []))
        if problem:
            return Signed(problem=problem)
        keys = self.keys_for(domain)
        if not keys:
            return Signed()
        policy = self.policy(canonicalization)
        body_hash = base64.b64encode(hashlib.sha256(canonical_body(policy, body)).digest())
        signed_names = names_to_sign(instances, self.wanted(headers))
        # The signed fields hash the same for every key: hash them once, copy per key.
        hasher = hashlib.sha256(signed_block(policy, instances, signed_names))
        stamp = b"%d" % int(now)
        parts: list[tuple[DkimKey, bytes, Callable[[bytes], bytes]]] = []
        for key in keys:
            layout = self.layout(key, policy, signed_names, len(stamp))
            if layout is None:
                tags = signature_tags(key, policy, signed_names, body_hash, stamp)
                digest = signed_digest(hasher.copy(), policy, tags)
                parts.append((key, digest, functools.partial(signature_field, tags)))
                continue
            digester = hasher.copy()
            digester.update(layout.digest % (stamp, body_hash))
            parts.append((key, digester.digest(), layout.finisher(stamp, body_hash)))
        return keys[0].domain, parts

    def sign_digests(self, key: DkimKey, digests: list[bytes]) -> list[bytes]:
        """The key's signatures of these digests, in order."""
        lanes = self.lanes(key) if len(digests) >= multibuffer.MIN_LANES else None
        if lanes is None:
            return [key.sign_digest(digest) for digest in digests]
        signatures: list[bytes] = []
        for start in range(0, len(digests), multibuffer.LANES):
            group = digests[start : start + multibuffer.LANES]
            if len(group) >= multibuffer.MIN_LANES:
                signatures += lanes.sign(group)
            else:
                signatures += [key.sign_digest(digest) for digest in group]
        return signatures

    def rsa_signatures(self) -> str:
        """How this signer makes RSA signatures, for the log ("" without an RSA key).
        Readies the multi-buffer signers (loading the library) on the way."""
        keys = [k for found in self.by_domain.values() for k in found if k.algorithm == "rsa"]
        if not keys:
            return ""
        if not self.multi_buffer:
            return "OpenSSL (multi-buffer RSA off)"
        library, what = multibuffer.load()
        if library is None:
            return f"OpenSSL; multi-buffer RSA {what}"
        # crypto_mb takes 1024, 2048, 3072 and 4096 bits with e=65537 and two equal primes.
        left = [k.dns_name for k in keys if self.lanes(k) is None]
        if len(left) == len(keys):
            return f"OpenSSL; {what} takes none of the keys"
        return f"{what}, up to eight at a time" + (
            f"; OpenSSL for {', '.join(left)}" if left else ""
        )

    def lanes(self, key: DkimKey) -> multibuffer.RsaLanes | None:
        """The key's multi-buffer signer, when ``multi_buffer`` and one can be had."""
        if not self.multi_buffer or not isinstance(key.private, rsa.RSAPrivateKey):
            return None
        try:
            return self._lanes[id(key)]
        except KeyError:
            found = self._lanes[id(key)] = multibuffer.lanes_for(key.private, key.sign_digest)
            return found

    def wanted(self, headers: Sequence[str]) -> list[bytes]:
        """``[dkim] headers`` as bytes, remembered (the setting changes rarely)."""
        names = tuple(headers)
        found = self._wanted.get(names)
        if found is None:
            if len(self._wanted) >= DOMAIN_CACHE_SIZE:
                self._wanted.clear()
            found = self._wanted[names] = [name.encode("ascii") for name in names]
        return found

    def layout(
        self,
        key: DkimKey,
        policy: CanonicalizationPolicy,
        signed_names: list[bytes],
        stamp_length: int,
    ) -> Layout | None:
        """The key's signature layout for these signed fields, remembered: bulk mail signs
        the same fields with the same key over and over, and folding the field (twice:
        once to hash it, once to send it) costs more than the Ed25519 signature."""
        names = b" : ".join(signed_names)
        cache_key = (id(key), id(policy), names, stamp_length)  # both kept by the signer
        try:
            return self._layouts[cache_key]
        except KeyError:
            pass
        if len(self._layouts) >= LAYOUT_CACHE_SIZE:
            self._layouts.clear()
        found = self._layouts[cache_key] = Layout.make(key, policy, signed_names, stamp_length)
        return found

    def from_domain(self, froms: Sequence[tuple[bytes, bytes]]) -> tuple[str, str]:
        """``from_domain`` of the From: fields, remembered by the field's bytes: bulk mail
        repeats one From: over and over, and parsing its address costs more than the rest
        of the header."""
        if len(froms) != 1:
            return from_domain(froms)
        value = froms[0][1]
        found = self._domains.get(value)
        if found is None:
            if len(self._domains) >= DOMAIN_CACHE_SIZE:
                self._domains.clear()
            found = self._domains[value] = from_domain(froms)
        return found

    def policy(self, canonicalization: str) -> CanonicalizationPolicy:
        found = self._policies.get(canonicalization)
        if found is None:
            c = canonicalization.encode("ascii")
            found = self._policies[canonicalization] = CanonicalizationPolicy.from_c_value(c)
        return found


def parse_header(head: bytes) -> list[tuple[bytes, bytes]]:
    """(name, value) of each header field, value with its folding and CRLF: what
    ``dkim.rfc822_parse`` returns, without its regular expression per line when every
    line ends in CRLF (always so for canonical content)."""
    if head.count(b"\n") != head.count(b"\r\n"):
        try:
            parsed, _ = dkim.rfc822_parse(head)
        except IndexError:  # dkimpy's word for a continuation line before any field
            raise dkim.MessageFormatError("a continuation line comes first") from None
        return [(name, value) for name, value in parsed]
    # Field by field (each with its continuation lines) up to the blank line; anything
    # else (an mbox "From " line, a bad line, no blank line) line by line below.
    fields: list[tuple[bytes, bytes]] = []
    at, match = 0, FIELD.match
    while (found := match(head, at)) is not None:
        fields.append(found.groups())  # type: ignore[arg-type]
        at = found.end()
    if head.startswith(b"\r\n", at):
        return fields
    return parse_lines(head)


def parse_lines(head: bytes) -> list[tuple[bytes, bytes]]:
    """``parse_header`` line by line, for a header with every line ending in CRLF."""
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if not line:
            break
        if line[0] in (0x09, 0x20):
            if not fields:
                raise dkim.MessageFormatError(f"a continuation line comes first: {line[:80]!r}")
            name, value = fields[-1]
            fields[-1] = (name, value + line + b"\r\n")
            continue
        match = FIELD_NAME.match(line)
        if match is not None:
            fields.append((match.group(1), line[match.end() :] + b"\r\n"))
        elif not line.startswith(b"From "):
            raise dkim.MessageFormatError(f"Unexpected characters in RFC822 header: {line!r}")
    return fields


def signed_fields(
    policy: CanonicalizationPolicy,
    instances: dict[bytes, list[tuple[bytes, bytes]]],
    signed_names: Sequence[bytes],
) -> list[tuple[bytes, bytes]]:
    """The fields h= names, canonicalised, in the order they are hashed: for each name,
    its instances from the last up (``dkim.select_headers``). ``instances``: each
    lower-case name's fields in header order (emptied here). Only the signed fields are
    canonicalised, not the whole header (Received: fields are long and never signed)."""
    selected = []
    for name in signed_names:
        found = instances.get(name)
        if found:
            selected.append(found.pop())
    return policy.canonicalize_headers(selected)


def signed_block(
    policy: CanonicalizationPolicy,
    instances: dict[bytes, list[tuple[bytes, bytes]]],
    signed_names: Sequence[bytes],
) -> bytes:
    """What the digest hashes first: the fields h= names (``signed_fields``), each
    ``name:value`` with its CRLF, joined."""
    if policy.header_algorithm is not Relaxed:
        return b"".join(b"%s:%s" % f for f in signed_fields(policy, instances, signed_names))
    lines = []
    for name in signed_names:
        found = instances.get(name)
        if found:
            lines.append(relaxed_line(*found.pop()))
    return b"".join(lines)


def relaxed_line(name: bytes, value: bytes) -> bytes:
    """dkimpy's relaxed header canonicalisation of one field (RFC 6376 §3.4.2), as one
    ``name:value`` line with its CRLF: unfold, compress whitespace runs, strip; its
    substitutions skipped when they change nothing."""
    if value.find(b"\n") == len(value) - 1 and value.endswith(b"\r\n"):
        value = value[:-2]  # unfolded already
    else:
        value = LINE_BREAK.sub(b"", value)
    if b"\t" in value or b"  " in value:
        value = WSP_RUN.sub(b" ", value)
    return b"%s:%s\r\n" % (name.lower().rstrip(), value.strip())


def canonical_body(policy: CanonicalizationPolicy, body: bytes) -> bytes:
    """dkimpy's body canonicalisation, skipping its whitespace substitutions when they
    could change nothing (they cost most of the signing time of a typical message)."""
    if policy.body_algorithm is Relaxed and (
        # one byte is found faster than two: encoded bodies (base64) have no space at all
        b"\t" not in body and (b" " not in body or (b"  " not in body and b" \r\n" not in body))
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


def names_to_sign(
    instances: dict[bytes, list[tuple[bytes, bytes]]], wanted: Sequence[bytes]
) -> list[bytes]:
    """h= : each wanted field as often as it appears, and From once more (RFC 6376 §8.15:
    a From added later then breaks the signature). ``instances``: the fields by
    lower-case name; ``wanted``: ``[dkim] headers``, lower case, as bytes."""
    names: list[bytes] = []
    for name in wanted:
        found = instances.get(name)
        if found:
            names += [name] * (len(found) + (name == b"from"))
        elif name == b"from":
            names.append(name)
    return names


def signature_tags(
    key: DkimKey,
    policy: CanonicalizationPolicy,
    signed_names: list[bytes],
    body_hash: bytes,
    now: int | bytes,
) -> list[tuple[bytes, bytes]]:
    """The tags of one DKIM-Signature field, as dkimpy's ``DomainSigner.sign`` orders them,
    b= a placeholder. ``now``: t=, as a number or already spelt out."""
    return [
        (b"v", b"1"),
        (b"a", key.signature_algorithm),
        (b"c", policy.to_c_value()),
        (b"d", key.domain.encode("ascii")),
        (b"s", key.selector.encode("ascii")),
        (b"t", now if isinstance(now, bytes) else b"%d" % now),
        (b"h", b" : ".join(signed_names)),  # spaces: where a long h= may be folded
        (b"bh", body_hash),
        # A long placeholder puts b= on a line of its own, so folding the real value
        # later leaves the whitespace of the tags before it (which are hashed) alone.
        (b"b", b"0" * 60),
    ]


def signed_digest(
    hasher: hashlib._Hash, policy: CanonicalizationPolicy, tags: list[tuple[bytes, bytes]]
) -> bytes:
    """The digest the key signs: ``hasher`` holds the signed fields; the field itself
    follows (``digest_input``)."""
    hasher.update(digest_input(policy, tags))
    return hasher.digest()


def digest_input(policy: CanonicalizationPolicy, tags: list[tuple[bytes, bytes]]) -> bytes:
    """The DKIM-Signature field as its digest hashes it after the signed fields: b=
    empty, canonicalised, without its CRLF (``dkim.hash_headers``, ``gen_header``)."""
    value = without_b_value(
        dkim.fold(b"; ".join(b"=".join(t) for t in tags), namelen=len(SIGNATURE_FIELD))
    )
    if policy.header_algorithm is Relaxed:
        return relaxed_line(SIGNATURE_FIELD, b" " + value).rstrip()
    return SIGNATURE_FIELD + b":" + (b" " + value).rstrip()


def without_b_value(folded: bytes) -> bytes:
    """``dkim.RE_BTAG.sub``, which empties b=: the placeholder is the last tag and
    folding adds only CRLF-space to it, so the field up to its ``b=`` is what that gives
    when nothing before it looks like a b= tag (the costly part of the expression is
    matching the placeholder's characters)."""
    cut = folded.rfind(b"b=")
    if cut > 0 and folded[cut - 1] in b"; " and MAYBE_B_TAG.search(folded, 0, cut) is None:
        return folded[: cut + 2]
    return dkim.RE_BTAG.sub(b"\\1", folded)


def signature_field(tags: list[tuple[bytes, bytes]], signature: bytes) -> bytes:
    """One DKIM-Signature field, as dkimpy's ``DomainSigner.gen_header`` lays it out."""
    return field_with_b(tags, base64.b64encode(signature))


def field_with_b(tags: list[tuple[bytes, bytes]], b_value: bytes) -> bytes:
    """``signature_field`` with b= given in base64."""
    tags = [*tags[:-1], (b"b", b_value)]
    value = dkim.fold(
        b"; ".join(b"=".join(t) for t in tags) + b"\r\n", namelen=len(SIGNATURE_FIELD)
    )
    return SIGNATURE_FIELD + b": " + value
