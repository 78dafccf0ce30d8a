"""The manual's local-time stamps: ``YYYY/MM/DD HH:MM:SS`` and ``YYYYMMDDHHMMSS`` (pure).

The manual writes wall-clock local time; epoch seconds are the internal form.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_STAMP = re.compile(r"^[0-9]{4}/[0-9]{2}/[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$")
_RETRY = re.compile(r"^[0-9]{8,14}$")


def _local(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC).astimezone()


_last_stamp: tuple[int, str] = (-1, "")  # a second's stamp, asked for once a message


def format_stamp(epoch: float) -> str:
    """``2000/12/22 16:29:00`` (timecreated, timefinished, log entries, stats lines)."""
    global _last_stamp
    second, last = int(epoch), _last_stamp  # one read: other threads format stamps too
    if second == last[0] and epoch >= 0:
        return last[1]
    stamp = _local(epoch).strftime("%Y/%m/%d %H:%M:%S")
    if epoch >= 0:
        _last_stamp = (second, stamp)
    return stamp


def format_retry(epoch: float) -> str:
    """``20001222165900`` (retrytime)."""
    return _local(epoch).strftime("%Y%m%d%H%M%S")


def _from_local_fields(y: int, mo: int, d: int, h: int, mi: int, s: int) -> float:
    # A naive datetime's astimezone() reads it as the machine's local time.
    naive = datetime(y, mo, d, h, mi, s)  # noqa: DTZ001 - the manual's stamps are local time
    return naive.astimezone().timestamp()


def parse_stamp(text: str) -> float:
    """Parse ``YYYY/MM/DD HH:MM:SS``; ValueError when malformed."""
    text = text.strip()
    if not _STAMP.match(text):
        raise ValueError(f"not YYYY/MM/DD HH:MM:SS: {text!r}")
    return _from_local_fields(
        int(text[0:4]),
        int(text[5:7]),
        int(text[8:10]),
        int(text[11:13]),
        int(text[14:16]),
        int(text[17:19]),
    )


def parse_retry(text: str) -> float:
    """Parse ``YYYYMMDDHHMMSS`` (short values are padded with zeros, as the manual says)."""
    text = text.strip()
    if not _RETRY.match(text):  # ASCII digits (str.isdigit takes any script's)
        raise ValueError(f"not YYYYMMDDHHMMSS: {text!r}")
    text = text.ljust(14, "0")
    return _from_local_fields(
        int(text[0:4]),
        int(text[4:6]),
        int(text[6:8]),
        int(text[8:10]),
        int(text[10:12]),
        int(text[12:14]),
    )
