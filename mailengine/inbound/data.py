"""The DATA phase read in chunks, not lines, and turned into canonical content (pure).

Rules (RFC 5321 §4.1.1.4, §4.5.2), tested in tests/unit/test_inbound_data.py:

- DATA ends only at CRLF "." CRLF (or "." CRLF as the very first line). A "."
  after a bare LF or a bare CR never ends it (no SMTP smuggling), and no line
  length ends it either: an overlong line is content like any other.
- Dot-unstuffing applies to lines that start after a CRLF: "..x" becomes ".x".
- Bare LF and bare CR inside the content are kept as line ends and become
  CRLF in the stored form (``queue.content.to_canonical``), like Postfix's
  ``smtpd_forbid_bare_newline = normalize``; stored content is never
  dot-stuffed, so outbound stuffing makes such lines harmless.
- Past ``max_size`` bytes nothing more is kept, but the stream is still read
  to its end so the reply (552) comes at the right place in the dialogue.
"""

from __future__ import annotations

from mailengine.queue.content import dot_unstuff, to_canonical

CRLF = b"\r\n"
END = b"\r\n.\r\n"


class DataReader:
    """Feed raw bytes after the 354 reply; ``feed`` says where DATA ended."""

    def __init__(self, max_size: int = 0) -> None:
        self.max_size = max_size  # 0: no limit
        self.started = 0.0  # when the 354 was sent (the session's clock)
        self.size = 0  # raw bytes of DATA seen so far (without the final ".")
        self._dropped = False
        self._chunks: list[bytes] = []
        # The stream as if it started with the CRLF that ended the DATA command,
        # so "." CRLF as the first line is found by the same search.
        self._tail = CRLF

    def feed(self, data: bytes) -> int:
        """Consume ``data``; return how many bytes belonged to DATA, or -1 when it goes on.

        The returned count includes the terminating "." CRLF; bytes after it are
        the next commands.
        """
        tail = self._tail
        # A terminator may straddle the previous read and this one.
        joined = tail + data[:4]
        at = joined.find(END)
        if at >= 0:
            used = at + 5 - len(tail)
            self._keep(data[: max(0, at + 2 - len(tail))])
            self._trim_stored(len(tail) - (at + 2))
            return used
        at = data.find(END)
        if at >= 0:
            self._keep(data[: at + 2])
            return at + 5
        self._keep(data)
        self._tail = joined[-4:] if len(data) < 4 else data[-4:]
        return -1

    @property
    def is_oversized(self) -> bool:
        return self._dropped or bool(self.max_size and self.size > self.max_size)

    def _keep(self, piece: bytes) -> None:
        if not piece:
            return
        self.size += len(piece)
        if self._dropped:
            return
        # _trim_stored may take back up to 2 bytes: drop only when surely too big.
        if self.max_size and self.size > self.max_size + 2:
            self._dropped = True
            self._chunks = []
            return
        self._chunks.append(piece)

    def _trim_stored(self, extra: int) -> None:
        """Drop ``extra`` bytes already kept that turned out to be part of the terminator."""
        if extra <= 0:
            return
        self.size -= extra
        if self._dropped or not self._chunks:
            return
        joined = b"".join(self._chunks)
        self._chunks = [joined[: len(joined) - extra]] if len(joined) > extra else []

    def raw(self) -> bytes:
        """The DATA as sent, still dot-stuffed, each line ending in CRLF (b"" when empty)."""
        return b"".join(self._chunks)

    def content(self) -> bytes:
        """Canonical content: dot-unstuffed, every line ending in CRLF, never stuffed."""
        return to_canonical(dot_unstuff(self.raw()))
