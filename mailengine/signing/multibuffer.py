"""RSA signatures eight at a time: Intel's multi-buffer RSA (``crypto_mb``, of the
Intel Cryptography Primitives Library), optional (``pip install 'mailengine[intel-rsa]'``).

OpenSSL makes one RSA-2048 signature in about 0.4 ms on the development machine (with
AVX-512 IFMA already). ``crypto_mb`` makes eight at once in the eight lanes of AVX-512
registers: about 1 ms for the eight, 0.13 ms each (``python bench/dkim_sign.py``). The
signing process has several messages waiting whenever the engine is busy (about a dozen
per read in ``bench/relay.py``), so it signs those in groups of eight
(``Signer.sign_many``); a group of fewer than ``MIN_LANES`` goes to OpenSSL, which is
cheaper for one or two.

RSASSA-PKCS1-v1_5 is deterministic: the signatures are the very bytes OpenSSL makes
(tests/unit/test_dkim_multibuffer.py). Each one is checked with the public key (the
public operation, eight at a time, about 5 µs each) before it is used, as OpenSSL checks
its own: a signature computed wrongly by the CRT method would give away the key
(Boneh, DeMillo, Lipton 1997). A signature that fails the check is made again by OpenSSL.

Here only if the library is installed and the CPU can run it (AVX-512 IFMA or AVX-IFMA),
for 1024-, 2048-, 3072- and 4096-bit keys with two primes; otherwise OpenSSL signs
everything, as without it. ``intel-cmplr-lib-rt``, which ``crypto_mb`` needs, is under
Intel's own licence (not an open-source one); that is why this is an extra.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import signal
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.asymmetric import rsa

LANES = 8
MIN_LANES = 3  # fewer digests than this: OpenSSL signs them one by one (cheaper)
KEY_BITS = (1024, 2048, 3072, 4096)  # what crypto_mb's RSA methods take
# RFC 8017 §9.2 note 1: the DER of DigestInfo for SHA-256, before the digest.
SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")
DIGEST_SIZE = 32
# crypto_mb needs these of Intel's compiler runtime, loaded first (libimf needs libintlc).
RUNTIME = ("libintlc.so.5", "libimf.so", "libirng.so", "libsvml.so")

Pointers = ctypes.c_void_p * LANES


class Library:
    """``libcrypto_mb``, loaded, with the calls typed."""

    def __init__(self, dll: ctypes.CDLL, version: str) -> None:
        self.dll = dll
        self.version = version  # "Intel crypto_mb 2026.2.0"
        for name in ("mbx_RSA_private_crt_Method", "mbx_RSA_pub65537_Method"):
            getattr(dll, name).restype = ctypes.c_void_p
            getattr(dll, name).argtypes = [ctypes.c_int]
        dll.mbx_RSA_Method_BufSize.restype = ctypes.c_int
        dll.mbx_RSA_Method_BufSize.argtypes = [ctypes.c_void_p]
        dll.mbx_rsa_private_crt_mb8.restype = ctypes.c_uint64
        dll.mbx_rsa_private_crt_mb8.argtypes = [Pointers] * 7 + [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        dll.mbx_rsa_public_mb8.restype = ctypes.c_uint64
        dll.mbx_rsa_public_mb8.argtypes = [Pointers] * 3 + [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]


_loaded: tuple[Library | None, str] | None = None


def load() -> tuple[Library | None, str]:
    """The library and what it is, or None and why not (remembered: loaded once)."""
    global _loaded
    if _loaded is None:
        _loaded = _load()
    return _loaded


def _load() -> tuple[Library | None, str]:
    try:
        crypto_mb = _library_file("ipp-crypto", "libcrypto_mb.so")
        runtime = [_library_file("intel-cmplr-lib-rt", name) for name in RUNTIME]
    except LookupError as exc:
        return None, f"not installed ({exc}; pip install 'mailengine[intel-rsa]')"
    try:
        for path in runtime:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        dll = ctypes.CDLL(crypto_mb)
    except OSError as exc:
        return None, f"cannot be loaded ({exc})"
    if not dll.mbx_is_crypto_mb_applicable(ctypes.c_uint64(0)):
        return None, "cannot run on this CPU (it needs AVX-512 IFMA or AVX-IFMA)"
    library = Library(dll, "Intel crypto_mb " + importlib.metadata.version("ipp-crypto"))
    return library, library.version


def _library_file(distribution: str, name: str) -> str:
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        raise LookupError(f"no {distribution}") from None
    for found in files:
        if found.name == name:
            return str(found.locate())
    raise LookupError(f"{distribution} has no {name}")


# A death by one of these is a crash in native code: with multi-buffer RSA on, the only
# native code the signing process runs besides OpenSSL and libsodium is crypto_mb.
CRASH_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGILL, signal.SIGBUS, signal.SIGFPE, signal.SIGABRT}
)


def keep_after_death(signal_number: int | None) -> bool:
    """Whether a signing process that died by ``signal_number`` (None: it exited) may be
    followed by one that uses multi-buffer RSA again: not after a crash in native code,
    which would come back with the next batch. A kill (a stuck process) may."""
    return signal_number not in CRASH_SIGNALS


def lanes_for(private: rsa.RSAPrivateKey, fallback: Callable[[bytes], bytes]) -> RsaLanes | None:
    """A multi-buffer signer for this key, or None where OpenSSL must sign everything.
    ``fallback`` signs one digest (OpenSSL): for a signature that fails its check."""
    library, _ = load()
    if library is None or private.key_size not in KEY_BITS:
        return None
    numbers = private.private_numbers()
    if numbers.public_numbers.e != 65537:  # crypto_mb checks with 65537 only
        return None
    if max(numbers.p, numbers.q).bit_length() > private.key_size // 2:
        return None  # primes of unequal sizes: crypto_mb takes two halves
    return RsaLanes(library, private, fallback)


class RsaLanes:
    """One RSA key's multi-buffer signatures of SHA-256 digests (RSASSA-PKCS1-v1_5)."""

    def __init__(
        self, library: Library, private: rsa.RSAPrivateKey, fallback: Callable[[bytes], bytes]
    ) -> None:
        self.dll = library.dll
        self.fallback = fallback
        self.refused = 0  # signatures that failed their check (made again by ``fallback``)
        numbers = private.private_numbers()
        self.bits = private.key_size
        self.size = size = self.bits // 8
        # The key in little-endian 64-bit words, the same in every lane.
        self._key = [
            ctypes.create_string_buffer(value.to_bytes(size // 2, "little"), size // 2)
            for value in (numbers.p, numbers.q, numbers.dmp1, numbers.dmq1, numbers.iqmp)
        ]
        self._n = ctypes.create_string_buffer(numbers.public_numbers.n.to_bytes(size, "little"))
        self._key_args = [_every_lane(buffer) for buffer in self._key]
        self._n_arg = _every_lane(self._n)
        self._private = self.dll.mbx_RSA_private_crt_Method(self.bits)
        self._public = self.dll.mbx_RSA_pub65537_Method(self.bits)
        work = max(self.dll.mbx_RSA_Method_BufSize(m) for m in (self._private, self._public))
        self._work = ctypes.create_string_buffer(work + 64)  # it aligns to 64 bytes itself
        # Big-endian blocks: the encoded digests, their signatures, and those made public.
        self._in, self._in_arg = _lanes(size)
        self._out, self._out_arg = _lanes(size)
        self._back, self._back_arg = _lanes(size)
        self._padding = (
            b"\x00\x01" + b"\xff" * (size - len(SHA256_PREFIX) - DIGEST_SIZE - 3) + b"\x00"
        )

    def sign(self, digests: Sequence[bytes]) -> list[bytes]:
        """The signatures of one to eight SHA-256 digests. Every lane costs the same;
        lanes without a digest repeat the first."""
        if not 0 < len(digests) <= LANES:
            raise ValueError(f"{len(digests)} digests; 1 to {LANES} at a time")
        if any(len(digest) != DIGEST_SIZE for digest in digests):
            raise ValueError(f"SHA-256 digests ({DIGEST_SIZE} bytes) only")
        blocks = [self._padding + SHA256_PREFIX + digest for digest in digests]
        for index in range(LANES):
            self._in[index].raw = blocks[index] if index < len(blocks) else blocks[0]
        made = self.dll.mbx_rsa_private_crt_mb8(
            self._in_arg, self._out_arg, *self._key_args, self.bits, self._private, self._work
        )
        checked = self.dll.mbx_rsa_public_mb8(
            self._out_arg, self._back_arg, self._n_arg, self.bits, self._public, self._work
        )
        signatures = []
        for index, block in enumerate(blocks):
            shift = 4 * index  # a status of 4 bits per lane, 0 when it went well
            lane_ok = not (made >> shift) & 0xF and not (checked >> shift) & 0xF
            if lane_ok and self._back[index].raw == block:
                signatures.append(self._out[index].raw)
                continue
            self.refused += 1
            signatures.append(self.fallback(digests[index]))
        return signatures


def _every_lane(buffer: ctypes.Array[ctypes.c_char]) -> ctypes.Array[ctypes.c_void_p]:
    return Pointers(*[ctypes.addressof(buffer)] * LANES)


def _lanes(size: int) -> tuple[list[ctypes.Array[ctypes.c_char]], ctypes.Array[ctypes.c_void_p]]:
    buffers = [ctypes.create_string_buffer(size) for _ in range(LANES)]
    return buffers, Pointers(*[ctypes.addressof(b) for b in buffers])
