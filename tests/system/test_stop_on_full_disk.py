"""A graceful stop on a full disk through twistd: the engine stays up, says why, and stops
only once the mail it holds in memory is written to retry/ (issue 9).

The queue lives on a small tmpfs mounted for the test (root only; skipped otherwise) and
always unmounted afterwards.
"""

import contextlib
import errno
import os
import signal
import smtplib
import subprocess

import pytest

from tests.harness import EngineProcess, wait_for
from tests.sinks import route

pytestmark = pytest.mark.system


@contextlib.contextmanager
def small_filesystem(path, size="4m"):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    os.makedirs(path)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory):
    """Take every free byte of the file system ``directory`` is on; returns the file."""
    path = os.path.join(directory, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):
            while True:
                try:
                    if os.write(fd, b"\0" * size) < size:
                        break
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return path


def retry_ids(engine):
    names = os.listdir(os.path.join(engine.mailq, "retry"))
    return sorted(n[:-4] for n in names if n.endswith(".inf"))


def test_a_stop_that_cannot_write_held_mail_stays_up_until_it_can(tmp_path, sinks):
    sink = sinks("127.0.3.9")
    sink.stall_on = "DATA-END"  # the first message stays in flight; the rest wait in memory
    root = tmp_path / "root"
    with small_filesystem(root / "mailq"):
        engine = EngineProcess(
            str(root),
            {
                "server": {"stop_timeout_seconds": 1},
                "queue": {"use_disk_for_relay": False},
                "smtp_out": {"max_connections_per_host": 1},
                "dns": {"bypass": [route("slow.test", sink)]},
            },
        ).start()
        try:
            with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=30) as client:
                for i in range(10):
                    client.sendmail("s@src.test", [f"r{i}@slow.test"], b"Subject: x\r\n\r\nhi\r\n")
            wait_for(lambda: sink.commands("DATA"), what="the first message in flight")
            filler = fill(engine.mailq)
            engine.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: engine.console().count("NOT stopped") >= 2, timeout=60, what="retries")
            assert engine.proc.poll() is None  # still up: the mail has no other copy
            console = engine.console()
            assert "10 acknowledged messages held in memory" in console
            assert "No space left on device" in console
            assert "stopped;" not in console
            engine.proc.send_signal(signal.SIGTERM)  # a second signal is told the same
            wait_for(lambda: engine.console().count("NOT stopped") >= 3, what="the answer")
            os.unlink(filler)  # the operator frees space
            assert engine.wait_exit(timeout=60) in (0, -15, 143)
            console = engine.console()
            assert "written to retry/ now" in console and "stopped; 10 messages" in console
            assert retry_ids(engine) and len(retry_ids(engine)) == 10
            assert "balanced" in console
        finally:
            engine.stop(signal.SIGKILL)
