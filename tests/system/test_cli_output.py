"""The ``mailengine`` command as a shell user meets it: help flags, output into a pipe."""

import os
import subprocess
import sys

import pytest

from mailengine.queue.envelope import Envelope
from mailengine.queue.store import QueueStore
from tests.harness import run_cli, subprocess_env

pytestmark = pytest.mark.system


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_flags_print_the_commands(flag):
    result = run_cli(flag)
    assert result.returncode == 0, result.stderr
    assert b"unrecognized arguments" not in result.stderr
    assert b"usage: mailengine COMMAND" in result.stdout and b"shutdown" in result.stdout


def test_queue_list_into_a_pipe_closed_early_ends_quietly(tmp_path):
    store = QueueStore(str(tmp_path / "mailq"))
    store.ensure_dirs()
    for i in range(1500):  # ~150 KB of listing: more than a pipe holds
        envelope = Envelope(f"P{i}T1C1@h", "s@y.test", [f"r{i}@x.test"], 1_000_000_000)
        store.write_message("retry", envelope, b"x\r\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailengine.cli", "queue", "list", "--limit", "0"],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"ID")  # what `| head -1` reads
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141  # as if killed by SIGPIPE, like other tools
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()
    assert os.path.isdir(tmp_path / "mailq" / "retry")
