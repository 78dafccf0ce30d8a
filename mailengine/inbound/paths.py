"""The common ``<local@domain>`` path of MAIL FROM and RCPT TO, without Twisted's
tokenizer (pure).

``smtp.Address`` splits every path into tokens with a regular expression and walks
them; nearly every path a bulk sender gives is a plain ``<atoms.and.dots@host.name>``,
for which the answer is the text between ``<`` and ``@`` and between ``@`` and ``>``.
Anything else (quoted local parts, source routes, no brackets) is left to Twisted.
"""

from __future__ import annotations

import re

# RFC 5321 atom characters and dots; the host: letters, digits, hyphens and dots.
# Every character of either is printable ASCII other than a space or a comma, so an
# address made of them can be stored in the .inf address lists as it is.
_SIMPLE = re.compile(rb"<([-A-Za-z0-9!#$%&'*+/=?^_`{|}~.]+)@([-A-Za-z0-9.]+)>")


def simple_path(path: bytes) -> tuple[str, str] | None:
    """``b"<a@b.example>"`` -> ``("a", "b.example")``, as ``smtp.Address`` would give;
    ``None`` for any other form."""
    m = _SIMPLE.fullmatch(path)
    if m is None:
        return None
    return m.group(1).decode("ascii"), m.group(2).decode("ascii")
