"""The signing process's wire (pure): frames over its stdin and stdout.

A frame is kind (1 byte), request id (4 bytes), payload length (4 bytes), payload.
The engine sends the keys once, the signing settings when they change, then one
``SIGN`` frame per message; the signing process answers each ``SIGN`` with one frame
of the same id, in any order.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence

from mailengine.signing.signer import Signed

HEAD = struct.Struct(">cII")
NOW = struct.Struct(">d")

# engine -> signing process
KEYS = b"K"  # JSON [[[domain, selector, PEM], ...], multi-buffer RSA (true/false)]
SETTINGS = b"C"  # JSON [[header names], canonicalization]
SIGN = b"S"  # now (8 bytes, a double) then the canonical content
# signing process -> engine
SIGNED = b"Y"  # the d= domain, NUL, the DKIM-Signature fields
UNSIGNED = b"N"  # no key for the From: domain (empty payload)
PROBLEM = b"P"  # why the message cannot be signed (UTF-8)
ERROR = b"E"  # the signer raised (UTF-8 text): the engine signs the message itself
NOTE = b"I"  # id 0: how the process makes RSA signatures (UTF-8), for the engine's log


class RemoteError(Exception):
    """The signing process's signer raised for one message."""


def frame(kind: bytes, ident: int, payload: bytes) -> bytes:
    return HEAD.pack(kind, ident, len(payload)) + payload


def sign_head(ident: int, now: float, content_length: int) -> bytes:
    """A SIGN frame up to its content (written separately: no copy of the message)."""
    return HEAD.pack(SIGN, ident, NOW.size + content_length) + NOW.pack(now)


def settings_frame(headers: Sequence[str], canonicalization: str) -> bytes:
    return frame(SETTINGS, 0, json.dumps([list(headers), canonicalization]).encode())


def keys_frame(keys: Sequence[tuple[str, str, bytes]], multi_buffer: bool) -> bytes:
    rows = [[domain, selector, pem.decode("ascii")] for domain, selector, pem in keys]
    return frame(KEYS, 0, json.dumps([rows, multi_buffer]).encode())


def result_frame(ident: int, result: Signed) -> bytes:
    if result.problem:
        return frame(PROBLEM, ident, result.problem.encode("utf-8"))
    if result.is_signed:
        return frame(SIGNED, ident, result.domain.encode("ascii") + b"\0" + result.header)
    return frame(UNSIGNED, ident, b"")


def read_result(kind: bytes, payload: bytes) -> Signed:
    """The ``Signed`` a result frame carries; RemoteError for an ERROR frame."""
    if kind == SIGNED:
        domain, _, header = payload.partition(b"\0")
        return Signed(header=header, domain=domain.decode("ascii"))
    if kind == UNSIGNED:
        return Signed()
    if kind == PROBLEM:
        return Signed(problem=payload.decode("utf-8", "replace"))
    raise RemoteError(payload.decode("utf-8", "replace"))


class Frames:
    """Cuts a byte stream into (kind, id, payload) frames as bytes arrive."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, int, bytes]]:
        buffer = self.buffer
        buffer += data
        frames = []
        at, end = 0, len(buffer)
        while end - at >= HEAD.size:
            kind, ident, length = HEAD.unpack_from(buffer, at)
            start = at + HEAD.size
            if end - start < length:
                break
            frames.append((kind, ident, bytes(buffer[start : start + length])))
            at = start + length
        if at:
            del buffer[:at]
        return frames
