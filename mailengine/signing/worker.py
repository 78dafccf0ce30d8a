"""The DKIM signing process: ``python -m mailengine.signing.worker``, started by the
engine (signing/process.py) so that a second core makes the signatures while the
engine's reactor receives and delivers. Reads frames (signing/wire.py) on stdin,
answers on stdout; ends when stdin closes (the engine stopped or died)."""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable

from mailengine.signing import wire
from mailengine.signing.keys import DkimKey, parse_key
from mailengine.signing.signer import Signer

READ_SIZE = 1 << 20


def serve(read: Callable[[], bytes], write: Callable[[bytes], None]) -> None:
    """Answer SIGN frames until ``read`` returns b"" (end of input)."""
    frames = wire.Frames()
    signer = Signer(())
    headers: list[str] = []
    canonicalization = "relaxed/relaxed"
    while True:
        data = read()
        if not data:
            return
        out = []
        for kind, ident, payload in frames.feed(data):
            if kind == wire.SIGN:
                (now,) = wire.NOW.unpack_from(payload)
                content = payload[wire.NOW.size :]
                try:
                    result = signer.sign(content, now, headers, canonicalization)
                except Exception:
                    out.append(wire.frame(wire.ERROR, ident, traceback.format_exc().encode()))
                else:
                    out.append(wire.result_frame(ident, result))
            elif kind == wire.SETTINGS:
                headers, canonicalization = json.loads(payload)
            elif kind == wire.KEYS:
                signer = Signer(
                    DkimKey(domain, selector, "-", parse_key(pem.encode("ascii"), "-"))
                    for domain, selector, pem in json.loads(payload)
                )
        if out:
            write(b"".join(out))


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    # Ctrl-C reaches the whole process group: the engine decides when this ends (by
    # closing stdin), so signing goes on for the mail it still receives while stopping.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    serve(lambda: os.read(stdin, READ_SIZE), lambda data: write_all(stdout, data))


if __name__ == "__main__":
    main()
