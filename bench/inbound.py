"""The manual's inbound speed test, reproduced: ``python bench/inbound.py``.

Manual §8 ("MailEngine receiving speed"): local domain "@", save_incoming off,
4 KB messages from parallel clients; the manual's figure is 456,000 msgs/h.
Postfix's ``smtp-source`` is the load client (installed with the postfix
package; its daemon is never started). In one invocation this measures

1. the engine, inbound (local domain "@", mail dropped after 250);
2. the engine, relay with ``use_disk_for_relay`` (every message appended to the
   receipt journal and fdatasynced before its 250, by group commit, then held in
   memory for the delivery engine; DNS never answers here, so nothing is sent);
3. the reference: a bare twisted.mail ESMTP server that discards;

and prints messages/hour in the manual's stats format and the server
process's CPU seconds per 1,000 messages, with the ratio to the bare server.

``--workers N --rounds 3`` instead measures the inbound test with ``[server] workers``
= 1 and = N in turn, each round, and prints the median and range of each and of
their ratio (CPU counts the supervisor and its workers).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.profiling import py_spy  # noqa: E402
from bench.relay import process_cpu_seconds, spread  # noqa: E402
from mailengine.observe.statslines import recv_line  # noqa: E402
from mailengine.observe.timestamps import format_stamp  # noqa: E402
from tests.harness import EngineProcess, free_port, port_open, subprocess_env, wait_for  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


# -- the load client ---------------------------------------------------------------


def smtp_source_path() -> str:
    """smtp-source, installing Debian's postfix (without starting it) when missing."""
    found = shutil.which("smtp-source") or (
        "/usr/sbin/smtp-source" if os.path.exists("/usr/sbin/smtp-source") else None
    )
    if found:
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # No configuration: the package installs its tools and leaves the daemon unconfigured.
    subprocess.run(
        ["debconf-set-selections"],
        input=b"postfix postfix/main_mailer_type select No configuration\n",
        check=False,
        env=env,
    )
    policy = "/usr/sbin/policy-rc.d"
    made_policy = not os.path.exists(policy)
    if made_policy:  # forbid service starts while the package installs
        with open(policy, "w") as fh:
            fh.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postfix"], check=True, env=env)
    finally:
        if made_policy:
            os.unlink(policy)
    return shutil.which("smtp-source") or "/usr/sbin/smtp-source"


def run_load(
    port: int, messages: int, sessions: int, size: int, recipient: str, reuse: bool = True
) -> float:
    """Send ``messages`` of ``size`` bytes over ``sessions`` parallel sessions; seconds taken."""
    argv = [
        smtp_source_path(),
        "-s", str(sessions),
        "-m", str(messages),
        "-l", str(size),
        *(["-d"] if reuse else []),  # -d: keep each session for its next message
        "-M", "bench.test",
        "-f", "sender@bench.test",
        "-t", recipient,
        f"127.0.0.1:{port}",
    ]  # fmt: skip
    start = time.monotonic()
    result = subprocess.run(argv, capture_output=True, check=False)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(f"smtp-source failed: {result.stderr.decode(errors='replace')}")
    return elapsed


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its children (a supervisor's workers)."""
    return process_cpu_seconds(pid)


# -- one measured run --------------------------------------------------------------


class Result:
    def __init__(self, name: str, messages: int, seconds: float, cpu: float) -> None:
        self.name = name
        self.messages = messages
        self.seconds = seconds
        self.cpu = cpu

    @property
    def per_hour(self) -> int:
        return int(self.messages * 3600 / self.seconds)

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu * 1000 / self.messages


def measure(name: str, pid: int, port: int, args: argparse.Namespace, recipient: str) -> Result:
    reuse = not args.connection_per_message
    run_load(port, min(500, args.messages), args.sessions, args.size, recipient, reuse)  # warm-up
    before = cpu_seconds(pid)
    seconds = run_load(port, args.messages, args.sessions, args.size, recipient, reuse)
    return Result(name, args.messages, seconds, cpu_seconds(pid) - before)


def engine_run(name: str, settings: dict, recipient: str, args: argparse.Namespace) -> Result:
    with tempfile.TemporaryDirectory(prefix="mailengine-bench-") as root:
        base = {
            "logs": {"stats_interval_seconds": 5, "retention_days": 0},
            "queue": {"check_interval_seconds": 3600},
            "smtp_in": {"max_connections": 1000},
        }
        for section, values in settings.items():
            base.setdefault(section, {}).update(values)
        engine = EngineProcess(root, base, web=False).start()
        try:
            assert engine.proc is not None
            workers = base.get("server", {}).get("workers", 1)
            if workers > 1:
                engine.wait_log(f"started with {workers} workers")
            out = None
            if args.profile:
                out = os.path.join(args.profile, f"{name.split()[1].rstrip(',')}.txt")
            with py_spy(engine.proc.pid, out):
                result = measure(name, engine.proc.pid, engine.smtp_port, args, recipient)
            # The engine's own stats lines must add up to every message sent (a worker's
            # lines count its own share).
            total = f"{min(500, args.messages) + args.messages} total)"
            if workers == 1:
                engine.wait_log(total, timeout=30)
            lines = [ln for ln in engine.console().splitlines() if " recv [" in ln]
            if args.verbose:
                print("\n".join(f"    engine: {ln}" for ln in lines[-4:]))
        finally:
            engine.stop()
    return result


def bare_run(args: argparse.Namespace) -> Result:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--bare-server", str(port)],
        env=subprocess_env(),
    )
    try:
        wait_for(lambda: port_open(port), what="the bare twisted.mail server")
        return measure("bare twisted.mail", proc.pid, port, args, "rcpt@bench.test")
    finally:
        proc.terminate()
        proc.wait(30)


# -- the reference server ------------------------------------------------------------


def serve_bare(port: int) -> None:
    """Stock twisted.mail ESMTP, line by line, every message discarded (the ceiling)."""
    from twisted.internet import defer, reactor
    from twisted.mail import smtp
    from zope.interface import implementer

    @implementer(smtp.IMessage)
    class Discard:
        def lineReceived(self, line: bytes) -> None:
            pass

        def eomReceived(self) -> defer.Deferred:
            return defer.succeed(None)

        def connectionLost(self) -> None:
            pass

    @implementer(smtp.IMessageDelivery)
    class Delivery:
        def receivedHeader(self, helo, origin, recipients):  # type: ignore[no-untyped-def]
            return None

        def validateFrom(self, helo, origin):  # type: ignore[no-untyped-def]
            return origin

        def validateTo(self, user):  # type: ignore[no-untyped-def]
            return Discard

    class Bare(smtp.ESMTP):
        noisy = False

    class Factory(smtp.SMTPFactory):
        protocol = Bare
        noisy = False

        def buildProtocol(self, addr):  # type: ignore[no-untyped-def]
            p = super().buildProtocol(addr)
            p.delivery = Delivery()
            return p

    reactor.listenTCP(port, Factory(), backlog=1024, interface="127.0.0.1")
    reactor.run()


# -- main ------------------------------------------------------------------------------


def report(result: Result, bare: Result | None) -> None:
    stamp = format_stamp(time.time())
    inbound = result.messages if "relay" not in result.name else 0
    line = recv_line(inbound, result.messages - inbound, result.seconds, result.messages)
    ratio = f", {result.per_hour / bare.per_hour:.2f}x the bare server" if bare else ""
    print(f"{result.name}:")
    print(f"  {stamp} {line}")
    print(
        f"  {result.per_hour:,} msgs/h; {result.cpu_per_1000:.2f} CPU s per 1,000 messages{ratio}"
    )


def compare_workers(args: argparse.Namespace) -> None:
    """The inbound test with [server] workers = 1 and = N, in turn, ``args.rounds`` times."""
    rows: dict[int, list[Result]] = {1: [], args.workers: []}
    for _ in range(args.rounds):
        for workers in rows:
            settings = {"server": {"local_domains": ["@"], "workers": workers}}
            name = f"engine inbound, workers={workers}"
            result = engine_run(name, settings, "rcpt@bench.test", args)
            report(result, None)
            rows[workers].append(result)
    for workers, results in rows.items():
        print(f"workers={workers}: msgs/h {spread([r.per_hour for r in results])}")
        print(f"{'':<10} CPU s/1000 {spread([r.cpu_per_1000 for r in results])}")
    ratios = [n.per_hour / one.per_hour for one, n in zip(rows[1], rows[args.workers], strict=True)]
    print(f"workers={args.workers} / workers=1: {spread(ratios)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions")
    parser.add_argument("--size", type=int, default=4096, help="payload bytes per message")
    parser.add_argument(
        "--connection-per-message",
        action="store_true",
        help="a new SMTP session for every message (default: sessions are reused)",
    )
    parser.add_argument("--profile", metavar="DIR", help="py-spy speedscope profiles here")
    parser.add_argument("--only", choices=["inbound", "relay", "bare"], action="append")
    parser.add_argument("--verbose", action="store_true", help="show the engine's stats lines")
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help="compare workers = 1 and = N")
    parser.add_argument("--rounds", type=int, default=3, help="with --workers: rounds")
    args = parser.parse_args()
    if args.bare_server:
        serve_bare(args.bare_server)
        return
    if args.workers:
        smtp_source_path()
        compare_workers(args)
        return
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    smtp_source_path()
    wanted = args.only or ["inbound", "relay", "bare"]
    mode = "a new session per message" if args.connection_per_message else "sessions reused"
    print(
        f"{args.messages} messages of {args.size} bytes, {args.sessions} parallel sessions, "
        f"{mode} (smtp-source); the manual's figure: 456,000 msgs/h"
    )
    bare = bare_run(args) if "bare" in wanted else None
    results = []
    if "inbound" in wanted:
        results.append(
            engine_run(
                "engine inbound (local domain @, save_incoming off)",
                {"server": {"local_domains": ["@"]}},
                "rcpt@bench.test",
                args,
            )
        )
    if "relay" in wanted:
        results.append(
            engine_run(
                "engine relay, use_disk_for_relay (fsync before 250, group commit)",
                {"queue": {"use_disk_for_relay": True}},
                "rcpt@remote.example",
                args,
            )
        )
    for result in results:
        report(result, bare)
    if bare:
        report(bare, None)


if __name__ == "__main__":
    main()
