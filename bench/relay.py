"""End-to-end relay benchmark: smtp-source -> relay -> smtp-sink, MailEngine against Postfix.

    python bench/relay.py [--messages 20000] [--sessions 50]
        [--dkim [--dkim-signer default|process|engine|both]
                [--dkim-rsa default|openssl|multi-buffer|both]]
        [--events on|off|both]
    python bench/relay.py --workers 2 --rounds 3   # [server] workers = 2 against 1 and Postfix

Parallel SMTP clients (Postfix's smtp-source, one per domain) inject 4 KB
messages for 50 domains spread over 5 sink hosts (Postfix's smtp-sink on
127.0.1.1-5). The relay is MailEngine (use_disk_for_relay off, then on) and a
private Postfix instance (own config and queue directories under a temp dir,
smtpd on a free loopback port, transport maps to the same sinks), started and
stopped here. Reports accepted and delivered messages/hour, CPU seconds per
1,000 messages (relay process and its DKIM signing process for MailEngine; every
process on the machine for both, injectors and sinks included) and MailEngine's
peak RSS, then the ratio.
``--dkim`` adds two durable runs that DKIM-sign every message (an RSA-2048 key, then
an Ed25519 key for the From: domain) and prints their cost against the unsigned
durable run of the same round; ``--dkim-signer`` chooses where the signatures are made
(``[dkim] separate_process``: the engine's default, a signing process, the engine itself,
or both of the last in each round); ``--dkim-rsa`` how the RSA signatures are made
(``[dkim] rsa_multi_buffer``: the engine's default, OpenSSL alone, Intel's multi-buffer
RSA, or both in each round; multi-buffer needs ``pip install '.[intel-rsa]'``).
``--rounds N`` repeats the MailEngine runs N times,
every other round in reverse order, and prints the median and range of each cost
(the event log's with ``--events both``, DKIM's with ``--dkim``).
``--workers N`` instead runs durable relay with ``[server] workers = 1`` and ``= N`` and
Postfix, in turn, ``--rounds`` times, with reused and with one-shot injector connections,
then prints the median and range of each figure and of the ratios (CPU counts the
supervisor and its workers).
Loopback only; every run is bounded in count and time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.profiling import py_spy  # noqa: E402
from tests.harness import EngineProcess, free_port, wait_for  # noqa: E402

SINK_HOSTS = [f"127.0.1.{i}" for i in range(1, 6)]
DOMAINS = [f"d{i}.bench.test" for i in range(50)]
RUN_LIMIT_SECONDS = 600
TICKS = os.sysconf("SC_CLK_TCK")


def ensure_postfix() -> None:
    if shutil.which("smtp-source") and os.path.exists("/usr/sbin/postfix"):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(
        ["debconf-set-selections"],
        input=b"postfix postfix/main_mailer_type select No configuration\n",
        check=False,
    )
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "postfix"], check=True, env=env)


def machine_busy_seconds() -> float:
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICKS


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process under it (a supervisor's workers, DKIM signing processes)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            children = [int(c) for c in fh.read().split()]
    except OSError:
        return [pid]
    return [pid, *(each for child in children for each in process_tree(child))]


def process_cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and its running children (a worker that ended counts in ``pid``'s
    children's time, fields 13 and 14)."""
    return sum(process_cpu_split(pid))


def process_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` and its children, as ``process_cpu_seconds``."""
    user = system = 0.0
    for each in process_tree(pid):
        try:
            with open(f"/proc/{each}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        user += int(fields[11]) / TICKS
        system += int(fields[12]) / TICKS
        if each == pid:
            user += int(fields[13]) / TICKS
            system += int(fields[14]) / TICKS
    return user, system


def own_cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` alone (user + system), without its children (a signing process)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mb(pid: int) -> float:
    """The peak resident size of ``pid`` and its children, summed."""
    total = 0.0
    for each in process_tree(pid):
        try:
            with open(f"/proc/{each}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


class Sinks:
    """smtp-sink on each sink host; counts messages from their -c output."""

    def __init__(self, workdir: str) -> None:
        self.procs = []
        self.outputs = []
        self.ports = []
        for host in SINK_HOSTS:
            port = free_port(host)
            out = os.path.join(workdir, f"sink-{host}.out")
            fh = open(out, "wb")  # noqa: SIM115
            proc = subprocess.Popen(
                ["smtp-sink", "-u", "nobody", "-c", f"{host}:{port}", "1024"],
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
            self.procs.append((proc, fh))
            self.outputs.append(out)
            self.ports.append(port)
        for host, port in zip(SINK_HOSTS, self.ports, strict=True):
            wait_for(lambda h=host, p=port: _port_open(h, p), what=f"smtp-sink {host}:{port}")

    def route(self, domain_index: int) -> tuple[str, int]:
        i = domain_index % len(SINK_HOSTS)
        return SINK_HOSTS[i], self.ports[i]

    def delivered(self) -> int:
        total = 0
        for out in self.outputs:
            with open(out, "rb") as fh:
                fh.seek(max(0, os.path.getsize(out) - 200))
                found = re.findall(rb"mesg=(\d+)", fh.read())
            total += int(found[-1]) if found else 0
        return total

    def close(self) -> None:
        for proc, fh in self.procs:
            proc.terminate()
            proc.wait(10)
            fh.close()


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def inject(port: int, messages: int, sessions: int, reuse: bool = True) -> list[subprocess.Popen]:
    """One smtp-source per domain, ``sessions`` in parallel overall, 4 KB each; with
    ``reuse`` each session sends message after message (``-d``), else one per connection."""
    per_domain = messages // len(DOMAINS)
    per_proc_sessions = max(1, sessions // len(DOMAINS))
    return [
        subprocess.Popen(
            [
                "smtp-source",
                *(["-d"] if reuse else []),
                "-s",
                str(per_proc_sessions),
                "-m",
                str(per_domain),
                "-l",
                "4096",
                "-f",
                "bench@src.bench.test",
                "-t",
                f"user@{domain}",
                f"127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for domain in DOMAINS
    ]


def measure(
    name: str,
    port: int,
    sinks: Sinks,
    messages: int,
    sessions: int,
    pid: int | None,
    reuse: bool = True,
):
    base_delivered = sinks.delivered()
    busy0, t0 = machine_busy_seconds(), time.monotonic()
    split0 = process_cpu_split(pid) if pid else (0.0, 0.0)
    own0 = own_cpu_seconds(pid) if pid else 0.0
    procs = inject(port, messages, sessions, reuse)
    for p in procs:
        p.wait(RUN_LIMIT_SECONDS)
    accepted_at = time.monotonic() - t0
    expected = (messages // len(DOMAINS)) * len(DOMAINS)
    wait_for(
        lambda: sinks.delivered() - base_delivered >= expected,
        timeout=RUN_LIMIT_SECONDS,
        interval=0.05,
        what=f"{name}: {expected} messages at the sinks",
    )
    delivered_at = time.monotonic() - t0
    busy = machine_busy_seconds() - busy0
    split1 = process_cpu_split(pid) if pid else (0.0, 0.0)
    own = own_cpu_seconds(pid) - own0 if pid else 0.0
    system = split1[1] - split0[1]
    cpu = (split1[0] - split0[0] + system) if pid else None
    result = {
        "name": name,
        "messages": expected,
        "accepted_per_hour": expected / accepted_at * 3600,
        "delivered_per_hour": expected / delivered_at * 3600,
        "delivered_per_second": expected / delivered_at,
        "machine_cpu_per_1000": busy / expected * 1000,
        "relay_cpu_per_1000": cpu / expected * 1000 if cpu is not None else None,
        "relay_system_cpu_per_1000": system / expected * 1000 if cpu is not None else None,
        "relay_own_cpu_per_1000": own / expected * 1000 if cpu is not None else None,
        "peak_rss_mb": peak_rss_mb(pid) if pid else None,
    }
    print(
        f"{name:<34} accepted {result['accepted_per_hour']:>12,.0f}/h   "
        f"delivered {result['delivered_per_hour']:>12,.0f}/h "
        f"({result['delivered_per_second']:,.0f}/s)   "
        f"CPU s/1000: relay "
        + (
            f"{result['relay_cpu_per_1000']:.2f} "
            f"(kernel {result['relay_system_cpu_per_1000']:.2f}, "
            f"first process {result['relay_own_cpu_per_1000']:.2f})"
            if cpu is not None
            else "  - "
        )
        + f", machine {result['machine_cpu_per_1000']:.2f}"
        + (f"   peak RSS {result['peak_rss_mb']:.0f} MB" if pid else ""),
        flush=True,
    )
    return result


def dkim_key(root: str, algorithm: str) -> dict[str, dict[str, Any]]:
    """A key for the From: domain of smtp-source's messages (bench@src.bench.test)."""
    from mailengine.signing.keys import generate_key, write_key_file

    write_key_file(os.path.join(root, "config", "dkim", "bench.key"), generate_key(algorithm))
    # bench.test's key signs src.bench.test's mail (the parent-domain fallback).
    key = {"domain": "bench.test", "selector": algorithm, "key_file": "dkim/bench.key"}
    return {"dkim": {"key": [key]}}


def signed_count(engine: EngineProcess) -> int:
    url = f"http://127.0.0.1:{engine.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    found = re.search(r'^mailengine_dkim_messages_total\{outcome="signed"\} (\d+)$', text, re.M)
    return int(found.group(1)) if found else 0


def run_mailengine(
    workdir: str,
    sinks: Sinks,
    messages: int,
    sessions: int,
    durable: bool,
    profile: str | None,
    dkim: str = "",
    events: bool = False,
    workers: int = 0,
    reuse: bool = True,
    dkim_signer: str = "default",
    rsa_multi_buffer: bool | None = None,
):
    root = tempfile.mkdtemp(prefix="me-", dir=workdir)
    bypass = []
    for i, domain in enumerate(DOMAINS):
        host, port = sinks.route(i)
        bypass.append(f"{domain},mx{i % 5}.bench.test,MX,{host}:{port}")
    settings: dict[str, dict[str, Any]] = {
        "dns": {"bypass": bypass},
        "queue": {"use_disk_for_relay": durable},
        "smtp_in": {"max_connections": 1000},
        # Log files on in every run (the event log follows their retention), so runs
        # with and without the event log differ in that alone.
        "logs": {"stats_interval_seconds": 0, "retention_days": 1},
        "events": {"enabled": events},
    }
    if dkim:
        settings.update(dkim_key(root, dkim))
        if dkim_signer != "default":
            settings["dkim"]["separate_process"] = dkim_signer == "process"
        if rsa_multi_buffer is not None:
            settings["dkim"]["rsa_multi_buffer"] = rsa_multi_buffer
    if workers:
        settings["server"] = {"workers": workers}
    engine = EngineProcess(root, settings, web=bool(dkim))  # /metrics counts signatures
    engine.start()
    if workers > 1:
        engine.wait_log(f"started with {workers} workers")
    try:
        assert engine.proc is not None
        # warm-up: connections, code paths
        warm_up = len(DOMAINS) * 20
        measure("(warm-up)", engine.smtp_port, sinks, warm_up, sessions, None, reuse)
        label = f"MailEngine, use_disk_for_relay={'on' if durable else 'off'}"
        if workers:
            label = f"MailEngine durable, workers={workers}, {_reuse_words(reuse)}"
        if dkim:
            label += f", DKIM {'rsa-2048' if dkim == 'rsa' else dkim}"
            label += {"default": "", "process": " in a process", "engine": " in the engine"}[
                dkim_signer
            ]
            if rsa_multi_buffer is not None:
                label += " multi-buffer" if rsa_multi_buffer else " OpenSSL"
        label += f", event log {'on' if events else 'off'}"
        name = f"relay-durable-{durable}" + (f"-dkim-{dkim}-{dkim_signer}" if dkim else "")
        name += {None: "", True: "-mb", False: "-openssl"}[rsa_multi_buffer]
        name += f"-events-{'on' if events else 'off'}"
        name += f"-workers-{workers}-{_reuse_words(reuse).split()[0]}" if workers else ""
        out = os.path.join(profile, f"{name}.txt") if profile else None
        with py_spy(engine.proc.pid, out):
            result = measure(
                label, engine.smtp_port, sinks, messages, sessions, engine.proc.pid, reuse
            )
        if dkim:
            signed = signed_count(engine)
            expected = warm_up + result["messages"]
            if signed != expected:
                raise SystemExit(f"{label}: {signed} of {expected} messages were signed")
        return result
    finally:
        engine.stop()


MASTER_CF = """\
{port}      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _reuse_words(reuse: bool) -> str:
    return "reused connections" if reuse else "one-shot connections"


def run_postfix(workdir: str, sinks: Sinks, messages: int, sessions: int, reuse: bool = True):
    conf = os.path.join(workdir, "postfix-etc")
    queue = os.path.join(workdir, "postfix-queue")
    data = os.path.join(workdir, "postfix-data")
    for d in (conf, queue, data):
        os.makedirs(d, exist_ok=True)
    shutil.chown(data, "postfix")
    port = free_port()
    with open(os.path.join(conf, "transport"), "w") as fh:
        for i, domain in enumerate(DOMAINS):
            host, sport = sinks.route(i)
            fh.write(f"{domain} smtp:[{host}]:{sport}\n")
    with open(os.path.join(conf, "main.cf"), "w") as fh:
        fh.write(
            f"""compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = relay.bench.test
mydestination =
mynetworks = 127.0.0.0/8
relay_domains = {" ".join(DOMAINS)}
transport_maps = texthash:{conf}/transport
smtpd_recipient_restrictions = permit_mynetworks, reject
smtp_dns_support_level = disabled
smtp_host_lookup = native
default_destination_concurrency_limit = 10
default_process_limit = 200
"""
        )
    with open(os.path.join(conf, "master.cf"), "w") as fh:
        fh.write(MASTER_CF.format(port=f"127.0.0.1:{port}"))
    env = dict(os.environ, MAIL_CONFIG=conf)
    started = subprocess.run(["postfix", "-c", conf, "start"], env=env, capture_output=True)
    if started.returncode:
        raise SystemExit(
            f"postfix did not start: {started.stdout.decode()} {started.stderr.decode()}"
        )
    try:
        wait_for(lambda: _port_open("127.0.0.1", port), what="postfix smtpd")
        measure("(warm-up)", port, sinks, len(DOMAINS) * 20, sessions, None, reuse)
        name = "Postfix 3 (reference)" + ("" if reuse else ", one-shot connections")
        return measure(name, port, sinks, messages, sessions, None, reuse)
    finally:
        subprocess.run(["postfix", "-c", conf, "stop"], check=False, env=env, capture_output=True)
        for _ in range(100):
            if subprocess.run(["pgrep", "-f", f"master -c {conf}"], capture_output=True).returncode:
                break
            time.sleep(0.1)


def report_signing_cost(signed: dict[str, Any], unsigned: dict[str, Any]) -> None:
    rate = signed["delivered_per_hour"] / unsigned["delivered_per_hour"]
    extra_cpu = signed["relay_cpu_per_1000"] - unsigned["relay_cpu_per_1000"]
    print(
        f"{signed['name']}: {1 - rate:+.0%} throughput cost against unsigned durable relay "
        f"({rate:.2f}x); {extra_cpu:+.2f} CPU s per 1,000 messages in the relay",
        flush=True,
    )


def report_event_log_cost(
    durable: bool, measured: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    """The event log's cost in each round (same round, same durable mode), median and range."""
    mode = "on" if durable else "off"
    report_cost_summary(f"event log, use_disk_for_relay={mode}", "against the log off", measured)


def report_cost_summary(
    name: str, against: str, measured: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    """Throughput cost and extra relay CPU of (reference, case) pairs: median and range."""
    costs = sorted(1 - b["delivered_per_hour"] / a["delivered_per_hour"] for a, b in measured)
    cpu = sorted(b["relay_cpu_per_1000"] - a["relay_cpu_per_1000"] for a, b in measured)
    print(
        f"{name} {against}: throughput cost median {statistics.median(costs):+.1%} "
        f"(range {costs[0]:+.1%} .. {costs[-1]:+.1%}, {len(costs)} rounds); "
        f"relay CPU s per 1,000 median {statistics.median(cpu):+.3f} "
        f"(range {cpu[0]:+.3f} .. {cpu[-1]:+.3f})",
        flush=True,
    )


def spread(values: list[float]) -> str:
    """Median and range of a figure over the runs."""
    ordered = sorted(values)
    return f"median {statistics.median(ordered):,.2f} (range {ordered[0]:,.2f}-{ordered[-1]:,.2f})"


def compare_workers(workdir: str, sinks: Sinks, args: argparse.Namespace) -> None:
    """workers=1, workers=N and Postfix in turn, ``args.rounds`` times per connection mode."""
    for reuse in (True, False):
        rows: dict[str, list[dict[str, Any]]] = {"1": [], "N": [], "postfix": []}
        for _ in range(args.rounds):
            common = (workdir, sinks, args.messages, args.sessions, True, args.profile)
            rows["1"].append(run_mailengine(*common, workers=1, reuse=reuse))
            rows["N"].append(run_mailengine(*common, workers=args.workers, reuse=reuse))
            rows["postfix"].append(run_postfix(workdir, sinks, args.messages, args.sessions, reuse))
        print(f"-- durable relay, {_reuse_words(reuse)}, {args.rounds} rounds --", flush=True)
        for key, label in (
            ("1", "workers=1"),
            ("N", f"workers={args.workers}"),
            ("postfix", "Postfix"),
        ):
            runs = rows[key]
            print(f"{label:<12} msgs/h {spread([r['delivered_per_hour'] for r in runs])}")
            if key != "postfix":
                print(
                    f"{'':<12} relay CPU s/1000 {spread([r['relay_cpu_per_1000'] for r in runs])}"
                )
            print(
                f"{'':<12} machine CPU s/1000 {spread([r['machine_cpu_per_1000'] for r in runs])}"
            )
        # Ratios within one round (same machine load), then their median and range.
        pairs = list(zip(rows["1"], rows["N"], rows["postfix"], strict=True))
        per_one = [n["delivered_per_hour"] / one["delivered_per_hour"] for one, n, _ in pairs]
        per_pf = [n["delivered_per_hour"] / pf["delivered_per_hour"] for _, n, pf in pairs]
        print(f"workers={args.workers} / workers=1: {spread(per_one)}")
        print(f"workers={args.workers} / Postfix:   {spread(per_pf)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--skip-postfix", action="store_true")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="compare durable relay with [server] workers = 1 and = N and Postfix",
    )
    parser.add_argument("--only-postfix", action="store_true")
    parser.add_argument("--profile", metavar="DIR", help="py-spy raw stacks of the engine here")
    parser.add_argument(
        "--dkim", action="store_true", help="also durable runs signing with RSA-2048 and Ed25519"
    )
    parser.add_argument(
        "--dkim-signer",
        choices=("default", "process", "engine", "both"),
        default="default",
        help="with --dkim: [dkim] separate_process as the engine's default, on, off, "
        "or on and off in each round",
    )
    parser.add_argument(
        "--dkim-rsa",
        choices=("default", "openssl", "multi-buffer", "both"),
        default="default",
        help="with --dkim: [dkim] rsa_multi_buffer as the engine's default, off, on, "
        "or off and on in each round",
    )
    parser.add_argument(
        "--events",
        choices=("on", "off", "both"),
        default="off",
        help="the event log ([events] enabled) in the MailEngine runs; both: each run twice",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="MailEngine runs this many times (event log modes in alternating order)",
    )
    args = parser.parse_args()
    event_modes = {"on": (True,), "off": (False,), "both": (False, True)}[args.events]
    rsa_modes = {"default": (None,), "openssl": (False,), "multi-buffer": (True,)}.get(
        args.dkim_rsa, (False, True)
    )
    if args.dkim and True in rsa_modes:
        from mailengine.signing import multibuffer

        library, why = multibuffer.load()
        if library is None:
            raise SystemExit(f"--dkim-rsa {args.dkim_rsa}: multi-buffer RSA is {why}")
        print(f"multi-buffer RSA: {why}", flush=True)
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    ensure_postfix()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as workdir:
        os.chmod(workdir, 0o755)  # Postfix's daemons run as the postfix user
        sinks = Sinks(workdir)
        try:
            print(
                f"{args.messages} messages of 4 KB, {len(DOMAINS)} domains over "
                f"{len(SINK_HOSTS)} sink hosts, {args.sessions} injecting sessions, "
                f"{os.cpu_count()} CPUs",
                flush=True,
            )
            if args.workers:
                compare_workers(workdir, sinks, args)
                return
            runs = []
            pairs: dict[bool, list[tuple[dict[str, Any], dict[str, Any]]]] = {False: [], True: []}
            signing: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
            for round_number in range(args.rounds if not args.only_postfix else 0):
                # Rounds alternate the order of the runs they compare (ABBA): on a shared
                # machine a load that comes or goes then favours neither.
                modes = event_modes if round_number % 2 == 0 else event_modes[::-1]
                for durable in (False, True):
                    done: dict[Any, dict[str, Any]] = {}
                    cases: list[tuple[bool, str, str, bool | None]] = [
                        (events, "", "", None) for events in modes
                    ]
                    if durable and args.dkim:
                        # Against this round's unsigned durable run with the first log mode.
                        signers = (
                            ("process", "engine")
                            if args.dkim_signer == "both"
                            else (args.dkim_signer,)
                        )
                        signed_cases = [
                            (event_modes[0], a, where, mb)
                            for a, mb in [*(("rsa", m) for m in rsa_modes), ("ed25519", None)]
                            for where in signers
                        ]
                        cases += signed_cases if round_number % 2 == 0 else signed_cases[::-1]
                        if round_number % 2:
                            cases.reverse()
                    for events, algorithm, where, mb in cases:
                        done[(events, algorithm, where, mb)] = run_mailengine(
                            workdir,
                            sinks,
                            args.messages,
                            args.sessions,
                            durable,
                            args.profile,
                            algorithm,
                            events=events,
                            dkim_signer=where or "default",
                            rsa_multi_buffer=mb,
                        )
                    runs.extend(done[(events, "", "", None)] for events in event_modes)
                    if len(event_modes) == 2:
                        pairs[durable].append(
                            (done[(False, "", "", None)], done[(True, "", "", None)])
                        )
                    for (_, algorithm, _, _), signed in done.items():
                        if algorithm:
                            runs.append(signed)
                            unsigned = done[(event_modes[0], "", "", None)]
                            report_signing_cost(signed, unsigned)
                            signing.setdefault(signed["name"], []).append((unsigned, signed))
            for durable, measured in pairs.items():
                if measured:
                    report_event_log_cost(durable, measured)
            for name, measured in signing.items():
                report_cost_summary(name, "against unsigned durable relay", measured)
            if args.skip_postfix:
                return
            ref = run_postfix(workdir, sinks, args.messages, args.sessions)
            for r in runs:
                print(
                    f"{r['name']}: {r['delivered_per_hour'] / ref['delivered_per_hour']:.2f}x "
                    "Postfix's end-to-end rate"
                )
        finally:
            sinks.close()


if __name__ == "__main__":
    main()
