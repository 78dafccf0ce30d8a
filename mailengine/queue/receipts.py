"""Records of the receipt journal: one per accepted message, one per settled message (pure).

A message record holds the ``.inf`` and ``.dat`` bytes exactly as they would be
written to the queue; a settle record says the message no longer needs the
journal (delivered, or its files are safely in the queue directories). A torn
or damaged stretch is skipped: it can only hold records that were never
acknowledged (acknowledgement waits for the fsync that covers them), and the
appender cuts a failed write back off the file before the next one.
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
    ident = message_id.encode()
    return b"%s %s %08x\n" % (SETTLED_TAG, ident, zlib.crc32(ident))


def _record_at(blob: bytes, pos: int) -> tuple[Received | Settled, int] | None:
    """The record starting at ``pos`` and where the next one starts; None if damaged."""
    newline = blob.find(b"\n", pos, pos + MAX_HEADER)
    if newline < 0:
        return None
    fields = blob[pos:newline].split(b" ")
    try:
        if fields[0] == SETTLED_TAG and len(fields) == 3:
            if zlib.crc32(fields[1]) != int(fields[2], 16):
                return None
            return Settled(fields[1].decode()), newline + 1
        if fields[0] != MESSAGE_TAG or len(fields) != 5:
            return None
        inf_len, data_len, crc = int(fields[2]), int(fields[3]), int(fields[4], 16)
        message_id = fields[1].decode()
    except (ValueError, UnicodeDecodeError):
        return None
    start = newline + 1
    inf = blob[start : start + inf_len]
    data = blob[start + inf_len : start + inf_len + data_len]
    if len(inf) != inf_len or len(data) != data_len:
        return None
    if zlib.crc32(data, zlib.crc32(inf)) != crc:
        return None
    return Received(message_id, inf, data), start + inf_len + data_len


def iter_records(blob: bytes) -> Iterator[Received | Settled]:
    """Records in order. A damaged stretch (a torn write) is skipped: reading goes on at
    the next record tag after it, so records written after a failed append survive;
    every record carries a checksum, so text inside a message never passes for one."""
    pos, end = 0, len(blob)
    while pos < end:
        found = _record_at(blob, pos)
        if found is not None:
            yield found[0]
            pos = found[1]
            continue
        tags = (MESSAGE_TAG + b" ", SETTLED_TAG + b" ")
        candidates = [i for i in (blob.find(tag, pos + 1) for tag in tags) if i >= 0]
        if not candidates:
            return
        pos = min(candidates)


def unsettled(blob: bytes) -> list[Received]:
    """Messages of one journal segment that were never settled, in arrival order."""
    pending: dict[str, Received] = {}
    for record in iter_records(blob):
        if isinstance(record, Received):
            pending[record.message_id] = record
        else:
            pending.pop(record.message_id, None)
    return list(pending.values())
