"""Records of the receipt journal: one per accepted message, one per settled message (pure).

A message record holds the ``.inf`` and ``.dat`` bytes exactly as they would be
written to the queue; a settle record says the message no longer needs the
journal (delivered, or its files are safely in the queue directories). A torn
or damaged tail ends the reading: it can only hold records that were never
acknowledged, because acknowledgement waits for the fsync that covers them.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import attrs

MESSAGE_TAG = b"MEJ1"
SETTLED_TAG = b"MEJD"
MAX_HEADER = 512


@attrs.frozen
class Received:
    message_id: str
    inf: bytes
    data: bytes


@attrs.frozen
class Settled:
    message_id: str


def encode_message(message_id: str, inf: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(inf))
    head = b"%s %s %d %d %08x\n" % (MESSAGE_TAG, message_id.encode(), len(inf), len(data), crc)
    return head + inf + data


def encode_settled(message_id: str) -> bytes:
    return b"%s %s\n" % (SETTLED_TAG, message_id.encode())


def iter_records(blob: bytes) -> Iterator[Received | Settled]:
    """Records in order; stops quietly at the first torn or damaged record."""
    pos, end = 0, len(blob)
    while pos < end:
        newline = blob.find(b"\n", pos, pos + MAX_HEADER)
        if newline < 0:
            return
        fields = blob[pos:newline].split(b" ")
        try:
            if fields[0] == SETTLED_TAG and len(fields) == 2:
                yield Settled(fields[1].decode())
                pos = newline + 1
                continue
            if fields[0] != MESSAGE_TAG or len(fields) != 5:
                return
            inf_len, data_len, crc = int(fields[2]), int(fields[3]), int(fields[4], 16)
        except (ValueError, UnicodeDecodeError):
            return
        start = newline + 1
        inf = blob[start : start + inf_len]
        data = blob[start + inf_len : start + inf_len + data_len]
        if len(inf) != inf_len or len(data) != data_len:
            return
        if zlib.crc32(data, zlib.crc32(inf)) != crc:
            return
        yield Received(fields[1].decode(), inf, data)
        pos = start + inf_len + data_len


def unsettled(blob: bytes) -> list[Received]:
    """Messages of one journal segment that were never settled, in arrival order."""
    pending: dict[str, Received] = {}
    for record in iter_records(blob):
        if isinstance(record, Received):
            pending[record.message_id] = record
        else:
            pending.pop(record.message_id, None)
    return list(pending.values())
