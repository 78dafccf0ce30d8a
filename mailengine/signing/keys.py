"""DKIM keys: read a PEM key file, make a new one, spell its public half as a DNS TXT record."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

import attrs
import nacl.bindings
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

MIN_RSA_BITS = 2048  # RFC 8301 §3.2: 1024 bits at least; the big providers want 2048
ALGORITHMS = ("rsa", "ed25519")

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class KeyFileError(ValueError):
    """A key file that cannot be used; the text names the file and why."""


@attrs.frozen
class DkimKey:
    """One signing key of ``[[dkim.key]]``: where it signs and how."""

    domain: str
    selector: str
    path: str
    private: PrivateKey = attrs.field(repr=False)
    # ``rsa`` or ``ed25519``: the DNS record's k= (RFC 6376, RFC 8463).
    algorithm: str = attrs.field(init=False, repr=False, eq=False)
    # Signs a SHA-256 digest (``sign_digest``), chosen once per key.
    _sign: Callable[[bytes], bytes] = attrs.field(init=False, repr=False, eq=False)

    @algorithm.default
    def _algorithm(self) -> str:
        return "rsa" if isinstance(self.private, rsa.RSAPrivateKey) else "ed25519"

    @_sign.default
    def _signer(self) -> Callable[[bytes], bytes]:
        return digest_signer(self.private)

    @property
    def signature_algorithm(self) -> bytes:
        """The signature's a= tag."""
        return b"rsa-sha256" if self.algorithm == "rsa" else b"ed25519-sha256"

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def public_value(self) -> str:
        return public_value(self.private)

    def txt_record(self) -> str:
        return txt_record(self.private)

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign a SHA-256 digest: RSASSA-PKCS1-v1_5, or PureEdDSA over the digest as
        RFC 8463 §3 says."""
        return self._sign(digest)


def digest_signer(private: PrivateKey) -> Callable[[bytes], bytes]:
    """A function that signs a SHA-256 digest with ``private``. RSA: OpenSSL (through
    ``cryptography``). Ed25519: libsodium (through PyNaCl), which makes the same
    signature (Ed25519 is deterministic) in about 55 % of OpenSSL's time
    (``python bench/dkim_sign.py``)."""
    if isinstance(private, rsa.RSAPrivateKey):
        pad, algorithm = padding.PKCS1v15(), Prehashed(hashes.SHA256())
        return lambda digest: private.sign(digest, pad, algorithm)
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    secret = nacl.bindings.crypto_sign_seed_keypair(seed)[1]
    crypto_sign = nacl.bindings.crypto_sign
    # crypto_sign gives the signature followed by the message.
    return lambda digest: crypto_sign(digest, secret)[: nacl.bindings.crypto_sign_BYTES]


def public_value(private: PrivateKey) -> str:
    """The p= of the DNS record: SubjectPublicKeyInfo for RSA, the raw 32 bytes for Ed25519."""
    public = private.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return base64.b64encode(raw).decode("ascii")


def txt_record(private: PrivateKey) -> str:
    """The TXT record to publish at SELECTOR._domainkey.DOMAIN (RFC 6376 §3.6.1)."""
    kind = "rsa" if isinstance(private, rsa.RSAPrivateKey) else "ed25519"
    return f"v=DKIM1; k={kind}; p={public_value(private)}"


def parse_key(data: bytes, path: str) -> PrivateKey:
    """A PEM private key that can sign DKIM; KeyFileError says why not."""
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < MIN_RSA_BITS:
            raise KeyFileError(
                f"{path}: an RSA key of {private.key_size} bits; DKIM needs {MIN_RSA_BITS} or more"
            )
        return private
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return private
    raise KeyFileError(f"{path}: a {type(private).__name__}; DKIM needs RSA or Ed25519")


def load_key(domain: str, selector: str, path: str) -> DkimKey:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None
    return DkimKey(domain, selector, path, parse_key(data, path))


def load_keys(rows: object, config_dir: str) -> tuple[tuple[DkimKey, ...], list[str]]:
    """Every ``[[dkim.key]]`` row's key; returns (keys, problems), one problem per bad file."""
    keys: list[DkimKey] = []
    problems: list[str] = []
    for row in rows:  # type: ignore[attr-defined]
        path = os.path.join(config_dir, row.key_file)  # an absolute key_file stays as it is
        try:
            keys.append(load_key(row.domain, row.selector, path))
        except KeyFileError as exc:
            problems.append(f"[[dkim.key]] {row.domain} {row.selector}: key_file {exc}")
    return tuple(keys), problems


def generate_key(algorithm: str, bits: int = MIN_RSA_BITS) -> PrivateKey:
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if bits < MIN_RSA_BITS:
        raise ValueError(f"{bits} bits is too few; DKIM needs {MIN_RSA_BITS} or more")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def pem(private: PrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_key_file(path: str, private: PrivateKey) -> None:
    """Write the key readable by its owner only (0600) from the first byte; never overwrite."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem(private))
        fh.flush()
        os.fsync(fh.fileno())
