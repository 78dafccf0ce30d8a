"""CRAM-MD5 secrets without the password: the two HMAC-MD5 midstates (pure; RFC 2195).

CRAM-MD5 needs HMAC-MD5(password, challenge) on the server. Like Dovecot's
``CRAM-MD5`` scheme, we store only the MD5 states after hashing the
``key ^ ipad`` and ``key ^ opad`` blocks: enough to answer CRAM-MD5 (so it is
password-equivalent for CRAM-MD5 and the file must stay private), but the
password itself cannot be read back for PLAIN, LOGIN or the web admin.
Python's hashlib cannot resume from a state, hence this small MD5.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct

SCHEME = "cram-md5"
_INIT = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
_SHIFTS = [7, 12, 17, 22] * 4 + [5, 9, 14, 20] * 4 + [4, 11, 16, 23] * 4 + [6, 10, 15, 21] * 4
_K = [int(abs(math.sin(i + 1)) * 2**32) & 0xFFFFFFFF for i in range(64)]
_MASK = 0xFFFFFFFF


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & _MASK


def _compress(state: tuple[int, int, int, int], block: bytes) -> tuple[int, int, int, int]:
    words = struct.unpack("<16I", block)
    a, b, c, d = state
    for i in range(64):
        if i < 16:
            f, g = (b & c) | (~b & d), i
        elif i < 32:
            f, g = (d & b) | (~d & c), (5 * i + 1) % 16
        elif i < 48:
            f, g = b ^ c ^ d, (3 * i + 5) % 16
        else:
            f, g = c ^ (b | (~d & _MASK)), (7 * i) % 16
        f = (f + a + _K[i] + words[g]) & _MASK
        a, d, c = d, c, b
        b = (b + _rotl(f, _SHIFTS[i])) & _MASK
    return (
        (state[0] + a) & _MASK,
        (state[1] + b) & _MASK,
        (state[2] + c) & _MASK,
        (state[3] + d) & _MASK,
    )


def _finish(state: tuple[int, int, int, int], tail: bytes, length_before: int) -> bytes:
    """MD5 digest of (``length_before`` bytes already in ``state``) + ``tail``."""
    bits = ((length_before + len(tail)) * 8) & 0xFFFFFFFFFFFFFFFF
    padded = tail + b"\x80" + b"\0" * ((55 - len(tail)) % 64) + struct.pack("<Q", bits)
    for i in range(0, len(padded), 64):
        state = _compress(state, padded[i : i + 64])
    return struct.pack("<4I", *state)


def _pads(password: bytes) -> tuple[bytes, bytes]:
    # RFC 2104: keys longer than a block are hashed first (the protocol fixes MD5).
    key = hashlib.md5(password, usedforsecurity=False).digest() if len(password) > 64 else password
    key = key.ljust(64, b"\0")
    return bytes(k ^ 0x36 for k in key), bytes(k ^ 0x5C for k in key)


def cram_md5_secret(password: str) -> str:
    """``cram-md5$<32 hex inner><32 hex outer>``: what smtp-users.txt keeps for CRAM-MD5."""
    ipad, opad = _pads(password.encode("utf-8"))
    inner = struct.pack("<4I", *_compress(_INIT, ipad))
    outer = struct.pack("<4I", *_compress(_INIT, opad))
    return f"{SCHEME}${inner.hex()}{outer.hex()}"


def is_cram_md5_secret(stored: str) -> bool:
    scheme, sep, rest = stored.partition("$")
    if scheme != SCHEME or not sep or len(rest) != 64:
        return False
    try:
        bytes.fromhex(rest)
    except ValueError:
        return False
    return True


def cram_md5_digest(stored: str, challenge: bytes) -> str:
    """Hex HMAC-MD5(password, challenge), computed from the stored midstates."""
    if not is_cram_md5_secret(stored):
        raise ValueError("not a cram-md5$ secret")
    raw = bytes.fromhex(stored.partition("$")[2])
    inner = _state(raw[:16])
    outer = _state(raw[16:])
    return _finish(outer, _finish(inner, challenge, 64), 64).hex()


def _state(raw: bytes) -> tuple[int, int, int, int]:
    a, b, c, d = struct.unpack("<4I", raw)
    return a, b, c, d


def verify_cram_md5(stored: str, challenge: bytes, response_hex: bytes) -> bool:
    """True when the client's hex digest answers ``challenge`` (constant-time compare)."""
    try:
        want = cram_md5_digest(stored, challenge)
    except ValueError:
        return False
    return hmac.compare_digest(want.encode(), response_hex.strip().lower())
