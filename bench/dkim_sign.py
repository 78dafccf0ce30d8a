"""DKIM signing cost per message: dkimpy's pure-Python RSA against OpenSSL, and Ed25519.

    python bench/dkim_sign.py [--seconds 3] [--size 4096]

Signs one 4 KB relay message over and over for a few seconds with each method
and prints microseconds of CPU per signature (process time, so other work on a
busy machine counts less). "dkimpy rsa" is ``dkim.sign`` as shipped; the engine's
signer (``mailengine.signing.signer``) lays fields out as dkimpy does, with its own
header handling and field layouts, OpenSSL's RSA and libsodium's Ed25519 signature.
"8 at once" is its signing process's way with waiting messages: Intel's multi-buffer
RSA (``pip install 'mailengine[intel-rsa]'``), the time per message.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import dkim  # noqa: E402

from mailengine.config.schema import DKIM_HEADERS  # noqa: E402
from mailengine.signing import multibuffer  # noqa: E402
from mailengine.signing.keys import DkimKey, generate_key, pem  # noqa: E402
from mailengine.signing.signer import Signer  # noqa: E402


def message(size: int) -> bytes:
    head = (
        b"From: News <news@example.com>\r\nTo: someone@example.net\r\n"
        b"Subject: Weekly news\r\nDate: Fri, 4 Dec 2026 12:00:00 +0000\r\n"
        b"Message-ID: <1@example.com>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    line = b"The quick brown fox jumps over the lazy dog, 0123456789 times.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def per_call_us(fn: Callable[[], object], seconds: float) -> float:
    fn()
    calls = 0
    start = time.process_time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fn()
        calls += 1
    return (time.process_time() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args()
    msg = message(args.size)
    rsa_key, ed_key = generate_key("rsa", 2048), generate_key("ed25519")
    rsa = Signer([DkimKey("example.com", "s", "-", rsa_key)])
    ed = Signer([DkimKey("example.com", "e", "-", ed_key)])
    both = Signer(
        [DkimKey("example.com", "s", "-", rsa_key), DkimKey("example.com", "e", "-", ed_key)]
    )
    rsa_pem = pem(rsa_key)
    ed_signer, digest = DkimKey("example.com", "e", "-", ed_key), bytes(32)
    assert ed_signer.sign_digest(digest) == ed_key.sign(digest)
    canon = "relaxed/relaxed"
    rsa_mb = Signer([DkimKey("example.com", "s", "-", rsa_key)], multi_buffer=True)
    library, multi_buffer_name = multibuffer.load()
    eight = [(msg, float(i)) for i in range(8)]
    Case = tuple[str, Callable[[], object] | None] | tuple[str, Callable[[], object] | None, int]
    cases: list[Case] = [
        (
            "dkimpy rsa-2048 (pure Python RSA)",
            lambda: dkim.sign(
                msg,
                b"s",
                b"example.com",
                rsa_pem,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=[h.encode() for h in DKIM_HEADERS],
            ),
        ),
        ("engine rsa-2048 (OpenSSL)", lambda: rsa.sign(msg, 0, DKIM_HEADERS, canon)),
        # The signing process's way when messages wait (signing/multibuffer.py): eight
        # signed together, the time per message.
        (
            f"engine rsa-2048, 8 at once ({multi_buffer_name})",
            (lambda: rsa_mb.sign_many(eight, DKIM_HEADERS, canon)) if library else None,
            8,
        ),
        ("engine ed25519 (libsodium)", lambda: ed.sign(msg, 0, DKIM_HEADERS, canon)),
        ("engine rsa-2048 + ed25519", lambda: both.sign(msg, 0, DKIM_HEADERS, canon)),
        # The Ed25519 signature alone, of a SHA-256 digest (RFC 8463): both libraries
        # make the same bytes; the engine uses the faster.
        ("ed25519 signature alone, OpenSSL", lambda: ed_key.sign(digest)),
        ("ed25519 signature alone, libsodium", lambda: ed_signer.sign_digest(digest)),
    ]
    print(f"{len(msg)}-byte message, {canon}; CPU microseconds per signed message")
    for name, fn, *per in cases:
        if fn is None:  # the library is not there
            print(f"  {name:<54} (not run)")
            continue
        us = per_call_us(fn, args.seconds) / (per[0] if per else 1)
        print(f"  {name:<54} {us:10.0f} µs")


if __name__ == "__main__":
    main()
