"""py-spy around a measured run: raw collapsed stacks of one process, written on exit."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def py_spy(pid: int, out: str | None) -> Iterator[None]:
    """Record ``pid`` (all threads, and the processes it starts) into ``out`` while the
    block runs; nothing when None."""
    if not out:
        yield
        return
    tool = os.path.join(os.path.dirname(sys.executable), "py-spy")
    profiler = subprocess.Popen(
        [
            tool,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "-o",
            out,
            "--threads",
            "--subprocesses",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        profiler.wait(30)
