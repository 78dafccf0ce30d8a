"""A real redis-server for tests, on a free loopback port, nothing saved to disk.

``RedisServer(tmp_dir).start()``; ``kill()`` (SIGKILL, as a crash) and ``start()`` again
on the same port; ``stop()`` at the end. The ``redis_server`` fixture does the start and
the stop, and skips the test when redis-server is not installed (.ci/run installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.harness import free_port, wait_for


class RedisServer:
    def __init__(self, directory: str, host: str = "127.0.0.1") -> None:
        self.directory = str(directory)
        self.host = host
        self.port = free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        os.makedirs(self.directory, exist_ok=True)
        argv = ["redis-server", "--port", str(self.port), "--bind", self.host]
        argv += ["--save", "", "--appendonly", "no", "--dir", self.directory]
        log = open(os.path.join(self.directory, "redis.log"), "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(self.is_answering, timeout=10, what=f"redis-server on port {self.port}")
        return self

    def command(self, *args: str) -> str:
        """One command through redis-cli (the reply as text)."""
        out = subprocess.run(
            ["redis-cli", "-h", self.host, "-p", str(self.port), *args],
            capture_output=True,
            timeout=10,
            check=False,
        )
        return out.stdout.decode().strip()

    def is_answering(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited {self.proc.returncode}")
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(100).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: Redis dies as in a crash, keeping nothing (nothing was saved)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()
