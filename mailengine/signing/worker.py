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
    """Answer SIGN frames until ``read`` returns b"" (end of input). The messages of one
    read are signed together (``Signer.sign_many``): when the engine is busy a read holds
    several, and an RSA key signs those in groups of eight where it can."""
    frames = wire.Frames()
    signer = Signer(())
    headers: list[str] = []
    canonicalization = "relaxed/relaxed"
    while True:
        data = read()
        if not data:
            return
        out: list[bytes] = []
        waiting: list[tuple[int, float, bytes]] = []
        for kind, ident, payload in frames.feed(data):
            if kind == wire.SIGN:
                (now,) = wire.NOW.unpack_from(payload)
                waiting.append((ident, now, payload[wire.NOW.size :]))
                continue
            answer(signer, waiting, headers, canonicalization, out)
            waiting = []
            if kind == wire.SETTINGS:
                headers, canonicalization = json.loads(payload)
            elif kind == wire.KEYS:
                rows, multi_buffer = json.loads(payload)
                signer = Signer(
                    (
                        DkimKey(domain, selector, "-", parse_key(pem.encode("ascii"), "-"))
                        for domain, selector, pem in rows
                    ),
                    multi_buffer=multi_buffer,
                )
                note = signer.rsa_signatures()
                if note:
                    out.append(wire.frame(wire.NOTE, 0, note.encode("utf-8")))
        answer(signer, waiting, headers, canonicalization, out)
        if out:
            write(b"".join(out))


def answer(
    signer: Signer,
    waiting: list[tuple[int, float, bytes]],
    headers: list[str],
    canonicalization: str,
    out: list[bytes],
) -> None:
    """Sign the waiting messages; should that raise, each on its own (an ERROR frame for
    the one that raises: the engine signs that one itself)."""
    if not waiting:
        return
    try:
        results = signer.sign_many(
            [(content, now) for _, now, content in waiting], headers, canonicalization
        )
    except Exception:
        for ident, now, content in waiting:
            try:
                result = signer.sign(content, now, headers, canonicalization)
            except Exception:
                out.append(wire.frame(wire.ERROR, ident, traceback.format_exc().encode()))
            else:
                out.append(wire.result_frame(ident, result))
        return
    out.extend(
        wire.result_frame(ident, result)
        for (ident, _, _), result in zip(waiting, results, strict=True)
    )


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
