"""``ID.inf``: key=value lines, keys case-insensitive and written lowercase (pure; manual §5)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# Message ids become file names: allow the manual's shape and nothing that
# could climb out of a directory (no '/', no leading '.').
_ID = re.compile(r"^[A-Za-z0-9_=+@-][A-Za-z0-9_.=+@-]{0,199}$")


class InfError(ValueError):
    """An ``.inf`` that cannot be used; the text says why."""


def is_valid_message_id(message_id: str) -> bool:
    return bool(_ID.match(message_id)) and ".." not in message_id


def decode_inf(raw: bytes) -> str:
    """``.inf`` bytes as text: UTF-8, or Latin-1 from older writers (never an error)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# C0 controls, DEL and C1 controls; a tab is ordinary white space in a value.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def parse_inf(text: str) -> dict[str, str]:
    """``key=value`` lines -> dict with lowercase keys, in file order.

    Lines end in LF (a CR before it is dropped: files from Windows writers).
    Nothing else ends a line: ``str.splitlines`` would also split at a CR,
    VT, FF or U+2028 inside a value and let the rest pose as a second key
    (``mailfrom=`` smuggled into a recipient). A control character anywhere
    (NUL, a lone CR, ...) makes the file invalid: it would reach the wire.
    """
    fields: dict[str, str] = {}
    lines = text.split("\n")
    for number, raw_line in enumerate(lines, 1):
        line = raw_line[:-1] if raw_line.endswith("\r") else raw_line
        bad = _CONTROL.search(line)
        if bad:
            raise InfError(
                f"line {number} holds the control character {bad.group()!r}: {line[:60]!r}"
            )
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise InfError(f"line {number} is not key=value: {line[:60]!r}")
        fields[key.strip().lower()] = value.strip()
    return fields


def clean_value(value: str) -> str:
    """A value can hold no control character (a newline would start a new key)."""
    if value.isprintable():  # no control character (the usual case, without a regex)
        return value
    return _CONTROL.sub(" ", value)


def format_inf(fields: Mapping[str, str]) -> str:
    """Lines sorted by key, as the manual's sample shows."""
    return "".join(f"{key}={clean_value(fields[key])}\n" for key in sorted(fields))


def parse_address_list(value: str) -> list[str]:
    """``a@x,b@y,`` -> ``["a@x", "b@y"]`` (spaces and a trailing comma tolerated)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def format_address_list(addresses: Iterable[str]) -> str:
    return ",".join(addresses)
