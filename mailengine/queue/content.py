"""Message content as stored in ``ID.dat``: headers + body, CRLF line ends, not dot-stuffed (pure).

One canonical form everywhere: inbound unstuffs and normalises once, files
written by other programs are normalised when loaded, outbound stuffs once.
"""

from __future__ import annotations

CRLF = b"\r\n"


def has_bare_line_ends(data: bytes) -> bool:
    """True when ``data`` holds a CR or LF that is not part of a CRLF pair."""
    pairs = data.count(CRLF)
    return data.count(b"\n") != pairs or data.count(b"\r") != pairs


def to_canonical(data: bytes) -> bytes:
    """Every line ends in CRLF (bare LF and bare CR become CRLF); ends with CRLF."""
    if has_bare_line_ends(data):
        data = data.replace(CRLF, b"\n").replace(b"\r", b"\n").replace(b"\n", CRLF)
    if data and not data.endswith(CRLF):
        data += CRLF
    return data


def dot_stuff(data: bytes) -> bytes:
    """RFC 5321 §4.5.2: double a leading '.' on every line of canonical content."""
    if data.startswith(b"."):
        data = b"." + data
    if b"\r\n." in data:
        data = data.replace(b"\r\n.", b"\r\n..")
    return data


def dot_unstuff(data: bytes) -> bytes:
    """Inverse of dot_stuff for CRLF content received in DATA."""
    if data.startswith(b"."):
        data = data[1:]
    if b"\r\n." in data:
        data = data.replace(b"\r\n.", b"\r\n")
    return data


def split_headers(data: bytes) -> tuple[bytes, bytes]:
    """(header block incl. its blank line, body); no blank line means all headers."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if data.startswith(CRLF):
            return CRLF, data[2:]
        return data, b""
    return data[: end + 4], data[end + 4 :]


def build_message(headers: str | bytes, body: str | bytes) -> bytes:
    """The manual's sendMessage {Headers, Body}: headers, a blank line, body; canonical."""
    h = headers.encode() if isinstance(headers, str) else headers
    b = body.encode() if isinstance(body, str) else body
    h = to_canonical(h).rstrip(b"\r\n") + CRLF if h.strip() else b""
    return to_canonical(h + CRLF + b)
