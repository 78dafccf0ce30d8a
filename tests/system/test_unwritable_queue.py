"""An unwritable queue at start is one clear line, never a traceback (README: start-up
problems are one line), both for the user that starts twistd and for the user twistd's
``--uid`` switches to (issue 9)."""

import os
import subprocess

import pytest

from mailengine.cli import TWISTD
from tests.harness import free_port, subprocess_env, write_config

pytestmark = pytest.mark.system
NOBODY = 65534


def root_with_config(tmp_path):
    root = tmp_path / "root"
    write_config(
        str(root / "config" / "mailengine.toml"),
        {
            "smtp_in": {"port": free_port(), "listen_ips": ["127.0.0.1"]},
            "web": {"port": 0},
            "dns": {"servers": ["127.0.0.1:1"]},
        },
    )
    return root


def twistd(root, *before):
    return subprocess.run(
        [*TWISTD, "-n", "--pidfile=", *before, "mailengine", "--root", str(root)],
        capture_output=True,
        env=subprocess_env(),
        timeout=60,
        check=False,
    )


def test_a_queue_the_engines_user_cannot_write_stops_the_start_with_one_line(tmp_path):
    root = root_with_config(tmp_path)
    if os.geteuid() == 0:
        # The queue belongs to root; twistd runs the engine as nobody (--uid).
        os.chmod(tmp_path, 0o755)
        os.chmod(root, 0o755)
        proc = twistd(root, f"--uid={NOBODY}", f"--gid={NOBODY}")
    else:
        os.makedirs(root / "mailq" / "retry")
        os.chmod(root / "mailq" / "retry", 0o555)
        try:
            proc = twistd(root)
        finally:
            os.chmod(root / "mailq" / "retry", 0o755)
    out = (proc.stdout + proc.stderr).decode()
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    assert "the queue is not writable: cannot create files in" in out
    assert "(Permission denied)" in out
    assert " started" not in out
