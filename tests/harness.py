"""Run the real service (``twistd -n mailengine``) in a subprocess for system tests."""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from mailengine.cli import TWISTD
from mailengine.config.kinds import toml_literal

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 15.0,
    interval: float = 0.02,
    what: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


def undeliverable_addresses(path: str) -> list[str]:
    """The addresses of a hard-/soft-undeliverable.txt (``address<TAB>reply`` lines)."""
    return [line.partition("\t")[0] for line in read_text(path).splitlines() if line]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def write_config(path: str, settings: dict[str, dict[str, Any]]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for section, values in settings.items():
            fh.write(f"[{section}]\n")
            for key, value in values.items():
                fh.write(f"{key} = {toml_literal(value)}\n")
            fh.write("\n")


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class EngineProcess:
    """One ``twistd -n mailengine --root ROOT`` with loopback ports chosen for the test."""

    def __init__(
        self,
        root: str,
        settings: dict[str, dict[str, Any]] | None = None,
        *,
        test_mode: bool = False,
        web: bool = True,
    ) -> None:
        self.root = str(root)
        self.test_mode = test_mode
        self.smtp_port = free_port()
        self.web_port = free_port() if web else 0
        base: dict[str, dict[str, Any]] = {
            "smtp_in": {"port": self.smtp_port, "listen_ips": ["127.0.0.1"]},
            "web": {"port": self.web_port, "listen_ips": ["127.0.0.1"]},
            "logs": {"stats_interval_seconds": 1},
            # Never the machine's resolv.conf (an unreachable private IP here): a test that
            # needs DNS points this at tests.dnsserver; nothing answers on UDP port 1.
            "dns": {"servers": ["127.0.0.1:1"]},
        }
        given = settings or {}
        # Ports picked here may be taken by someone else before the engine binds them
        # (tests run in parallel on this machine); start() then picks new ones.
        self._own_ports = "port" not in given.get("smtp_in", {}) and "port" not in given.get(
            "web", {}
        )
        for section, values in given.items():
            base.setdefault(section, {}).update(values)
        self.settings = base
        self.config_path = os.path.join(self.root, "config", "mailengine.toml")
        write_config(self.config_path, base)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(self.root, "console.log")

    @property
    def mailq(self) -> str:
        return os.path.join(self.root, "mailq-test" if self.test_mode else "mailq")

    def start(self, wait: bool = True) -> EngineProcess:
        argv = [*TWISTD, "-n", "--pidfile=", "mailengine", "--root", self.root]
        if self.test_mode:
            argv.append("--test")
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self._log_start = self._log.tell()  # a restart in the same root appends
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=subprocess_env(), cwd=self.root
        )
        if wait:
            try:
                wait_for(self._ready, what=f"engine to start (log: {self.log_path})")
            except AssertionError:
                if not (self._own_ports and "cannot listen" in self.console()):
                    raise
                if getattr(self, "_port_retries", 0) >= 3:
                    raise
                self._port_retries = getattr(self, "_port_retries", 0) + 1
                self._log.close()
                self._repick_ports()
                return self.start(wait)
        return self

    def _repick_ports(self) -> None:
        self.smtp_port = free_port()
        self.settings["smtp_in"]["port"] = self.smtp_port
        if self.web_port:
            self.web_port = free_port()
            self.settings["web"]["port"] = self.web_port
        write_config(self.config_path, self.settings)

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"engine exited {self.proc.returncode}:\n{self.console()}")
        return "MailEngine" in self.console() and " started" in self.console()

    def console(self) -> str:
        """What this run of the engine printed (earlier runs in the same root excluded)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(getattr(self, "_log_start", 0))
                return fh.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, text: str, timeout: float = 15.0) -> None:
        wait_for(lambda: text in self.console(), timeout, what=f"log line {text!r}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def __enter__(self) -> EngineProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_twistd(root: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """``twistd -n mailengine --root ROOT`` to completion (for start-up failures)."""
    return subprocess.run(
        [*TWISTD, "-n", "--pidfile=", "mailengine", "--root", root, *args],
        capture_output=True,
        env=subprocess_env(),
        timeout=timeout,
        check=False,
    )


def run_cli(
    *args: str, input: bytes | None = None, cwd: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """``mailengine ARGS`` through ``python -m mailengine.cli`` (same code as the script)."""
    return subprocess.run(
        [sys.executable, "-m", "mailengine.cli", *args],
        input=input,
        capture_output=True,
        env=subprocess_env(),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def events_of(root: str) -> list[dict[str, Any]]:
    """Every event of the engine at ``root``, from its event log files, oldest day first."""
    from mailengine.observe.events import parse_lines

    found: list[dict[str, Any]] = []
    for path in sorted(glob.glob(os.path.join(root, "log", "events-*.jsonl"))):
        found.extend(parse_lines(read_text(path)))
    return found
