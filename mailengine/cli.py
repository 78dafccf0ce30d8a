"""The ``mailengine`` command: the manual's commands (§7) and queue tools."""

from __future__ import annotations

import argparse
import fcntl
import getpass
import os
import re
import socket
import struct
import sys
from collections.abc import Callable, Sequence

from mailengine import __version__
from mailengine.scheduler.retry import MAX_PRIORITY

COMMANDS_HELP = """\
commands:
  start              run the engine in the foreground (Ctrl-C stops it)
  test               run in test mode: queue in mailq-test/, RSET+QUIT instead of DATA
  shutdown           ask a running engine to stop (creates mailq/retry/shutdown.txt)
  send RCPT...       queue the message on standard input for RCPT... (into mailq/retry/;
                     --wait: until its first attempt is over)
  queue ACTION       list, show, delete, retry-now, hold, release or summary of
                     queued mail (safe while the engine runs; see queue --help)
  suppress ACTION    add, remove, list, import or export addresses never relayed
                     to (mailq/suppression.sqlite; see suppress --help)
  passwd USER        set a web admin password in config/password.txt
                     (--smtp: an SMTP AUTH user in config/smtp-users.txt)
  check-config       validate the configuration and print every problem
  dkim keygen DOMAIN SELECTOR [--algorithm rsa|ed25519] [--bits 2048]
                     write a DKIM key file (0600), print the DNS TXT record
  dkim check DOMAIN  say whether DNS publishes the domain's DKIM keys
  version            print the name and version
  gettcpip           print this machine's first non-loopback IPv4 address
  help               this text
The daemon: twistd --pidfile=/run/mailengine.pid mailengine --root DIR; stop it
with kill -15 and wait for it to finish (no lost or duplicated mail).
"""


def _root(args: argparse.Namespace) -> str:
    return os.path.abspath(args.root)


def _config_path(args: argparse.Namespace) -> str:
    return args.config or os.path.join(_root(args), "config", "mailengine.toml")


def cmd_version(args: argparse.Namespace) -> int:
    print(f"MailEngine {__version__}")
    return 0


def first_ipv4() -> str | None:
    """The first non-loopback IPv4 address of the machine's interfaces."""
    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(
                    s.fileno(), siocgifaddr, struct.pack("256s", name.encode()[:15])
                )
            except OSError:
                continue
            address = socket.inet_ntoa(packed[20:24])
            if not address.startswith("127."):
                return address
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            address = str(info[4][0])
            if not address.startswith("127."):
                return address
    except OSError:
        pass
    return None


def cmd_gettcpip(args: argparse.Namespace) -> int:
    address = first_ipv4()
    if address is None:
        print("mailengine: no non-loopback IPv4 address found", file=sys.stderr)
        return 1
    print(address)
    return 0


def cmd_shutdown(args: argparse.Namespace) -> int:
    retry = os.path.join(_root(args), "mailq-test" if args.test else "mailq", "retry")
    if not os.path.isdir(retry):
        print(f"mailengine: {retry} does not exist; is --root right?", file=sys.stderr)
        return 1
    with open(os.path.join(retry, "shutdown.txt"), "w") as fh:
        fh.write("shutdown requested by `mailengine shutdown`\n")
    print(
        f"created {retry}/shutdown.txt; a running engine stops within a second "
        "(where it cannot watch retry/: at its next queue check)"
    )
    return 0


_HEADER_LINE = re.compile(rb"^[!-9;-~]+:")


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """Standard input as (headers, body): split at the first blank line.

    Without a blank line it is all headers when every line is a header field
    (or its continuation), as in RFC 5322, and otherwise all body.
    """
    text = raw.replace(b"\r\n", b"\n")
    headers, sep, body = text.partition(b"\n\n")
    if sep:
        return headers, body
    lines = text.rstrip(b"\n").split(b"\n")
    if lines[0] and all(_HEADER_LINE.match(ln) or ln[:1] in (b" ", b"\t") for ln in lines):
        return text, b""
    return b"", text


def _priority(text: str) -> int:
    if not text.isdigit() or int(text) > MAX_PRIORITY:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 0 to 99")
    return int(text)


def cmd_send(args: argparse.Namespace) -> int:
    from mailengine.queue.enqueue import enqueue
    from mailengine.queue.follow import undeliverable_sizes
    from mailengine.signing.command import SigningError, signing_with_config

    try:
        sign = signing_with_config(_config_path(args))
    except SigningError as exc:
        print(f"mailengine: not queued: {exc}", file=sys.stderr)
        return 1
    headers, body = split_message(sys.stdin.buffer.read())
    mailq = os.path.join(_root(args), "mailq-test" if args.test else "mailq")
    sizes = undeliverable_sizes(_root(args))
    try:
        message_id = enqueue(
            mailq, args.sender, args.recipients, headers, body, priority=args.priority, sign=sign
        )
    except (ValueError, OSError) as exc:
        print(f"mailengine: not queued: {exc}", file=sys.stderr)
        return 1
    print(message_id)
    print(
        f"queued in {mailq}/retry/; a running engine takes it within a second",
        file=sys.stderr,
    )
    if not args.wait:
        return 0
    return wait_for_outcome(args, mailq, message_id, sizes)


def wait_for_outcome(
    args: argparse.Namespace, mailq: str, message_id: str, sizes: dict[str, int]
) -> int:
    """Follow the message through the queue files until its first attempt is over."""
    import time

    from mailengine.queue.follow import outcome
    from mailengine.queue.store import QueueStore

    store = QueueStore(mailq)
    deadline = time.monotonic() + args.timeout
    said, gone_once = "", False
    while True:
        now = outcome(store, _root(args), message_id, args.recipients, sizes)
        if now.text != said and now.code is None:
            print(f"{message_id}: {now.text}", file=sys.stderr)
            said = now.text
        # "Gone" twice in a row: never a message caught between two renames.
        if now.code is not None and (now.state not in ("delivered", "failed") or gone_once):
            print(f"{message_id}: {now.text}")
            return now.code
        gone_once = now.state in ("delivered", "failed")
        if time.monotonic() > deadline:
            print(f"{message_id}: still {now.text} after {args.timeout:g} s", file=sys.stderr)
            return 75  # EX_TEMPFAIL: it is queued, the outcome is not known yet
        time.sleep(0.05)


def cmd_passwd(args: argparse.Namespace) -> int:
    from mailengine.config.crammd5 import cram_md5_secret
    from mailengine.config.passwords import set_password

    name = "smtp-users.txt" if args.smtp else "password.txt"
    path = os.path.join(os.path.dirname(_config_path(args)), name)
    if args.stdin or not sys.stdin.isatty():
        secret = sys.stdin.readline().rstrip("\r\n")
    else:
        secret = getpass.getpass(f"New password for {args.user}: ")
        if secret != getpass.getpass("Again: "):
            print("mailengine: the passwords differ; nothing changed", file=sys.stderr)
            return 1
    if not secret:
        print("mailengine: empty password; nothing changed", file=sys.stderr)
        return 1
    # SMTP AUTH users also get CRAM-MD5 midstates (config/crammd5.py), not the password.
    extra = [cram_md5_secret(secret)] if args.smtp else None
    try:
        set_password(path, args.user, secret, extra)
    except (ValueError, OSError) as exc:
        print(f"mailengine: {exc}", file=sys.stderr)
        return 1
    print(f"password for {args.user} set in {path}")
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    from mailengine.queue.command import run

    return run(args, os.path.join(_root(args), "mailq-test" if args.test else "mailq"))


def cmd_suppress(args: argparse.Namespace) -> int:
    from mailengine.queue.suppress_command import run

    return run(args, os.path.join(_root(args), "mailq-test" if args.test else "mailq"))


def cmd_check_config(args: argparse.Namespace) -> int:
    from mailengine.config.loader import ConfigError, load_config
    from mailengine.signing.keys import load_keys

    path = _config_path(args)
    try:
        config = load_config(path)
    except ConfigError as exc:
        problems = exc.problems
    else:
        # The key files too: a bad one would stop the start.
        problems = load_keys(config.dkim.key, os.path.dirname(os.path.abspath(path)))[1]
    if problems:
        for line in problems:
            print(line)
        print(f"{len(problems)} problem(s)")
        return 1
    print(f"{path}: OK")
    return 0


def cmd_dkim(args: argparse.Namespace) -> int:
    from mailengine.signing.command import run

    return run(args, _config_path(args))


# twistd as a command line: the same interpreter, whatever PATH holds.
TWISTD = [
    sys.executable,
    "-c",
    "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
]


def _run_twistd(args: argparse.Namespace, test: bool) -> int:
    argv = [*TWISTD, "-n", "--pidfile=", "mailengine", "--root", _root(args)]
    if args.config:
        argv += ["--config", args.config]
    if test:
        argv.append("--test")
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process with twistd
    return 1  # not reached


def cmd_start(args: argparse.Namespace) -> int:
    return _run_twistd(args, test=False)


def cmd_test(args: argparse.Namespace) -> int:
    return _run_twistd(args, test=True)


def cmd_help(args: argparse.Namespace) -> int:
    print(f"mailengine {__version__}\n\nusage: mailengine COMMAND [options]\n\n{COMMANDS_HELP}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailengine",
        add_help=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=COMMANDS_HELP,
    )
    # add_help=False keeps argparse's own usage text out; -h/--help give ours.
    parser.add_argument("-h", "--help", action="store_true", dest="show_help")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], helptext: str, root: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=helptext, description=helptext)
        if root:
            p.add_argument("--root", default=".", help="directory holding config/, mailq/, log/")
            p.add_argument(
                "--config", default=None, help="config file (default ROOT/config/mailengine.toml)"
            )
        p.set_defaults(func=fn)
        return p

    add("version", cmd_version, "print the name and version", root=False)
    add(
        "gettcpip", cmd_gettcpip, "print this machine's first non-loopback IPv4 address", root=False
    )
    add("help", cmd_help, "list the commands", root=False)
    p = add("shutdown", cmd_shutdown, "ask a running engine to stop (mailq/retry/shutdown.txt)")
    p.add_argument("--test", action="store_true", help="the test-mode engine (mailq-test/)")
    p = add(
        "send",
        cmd_send,
        "queue the message on standard input (headers, blank line, body) into mailq/retry/",
    )
    p.add_argument("--from", dest="sender", default="", help="MAIL FROM (default: <>)")
    p.add_argument("--priority", type=_priority, default=0, help="0 (highest) .. 99")
    p.add_argument("--test", action="store_true", help="into the test-mode queue (mailq-test/)")
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for the first attempt's outcome (exit 0 sent, 1 failed, 75 deferred)",
    )
    p.add_argument(
        "--timeout", type=float, default=600.0, help="with --wait: give up after this many s"
    )
    p.add_argument("recipients", nargs="+", metavar="RCPT")
    p = add("passwd", cmd_passwd, "set a password (web admin, or --smtp for SMTP AUTH)")
    p.add_argument("user")
    p.add_argument("--smtp", action="store_true", help="an SMTP AUTH user (smtp-users.txt)")
    p.add_argument("--stdin", action="store_true", help="read the password from stdin")
    from mailengine.queue.command import add_queue_arguments

    add_queue_arguments(add("queue", cmd_queue, "list, show and change queued mail"))
    from mailengine.queue.suppress_command import add_suppress_arguments

    add_suppress_arguments(
        add("suppress", cmd_suppress, "add, remove, list, import or export suppressed addresses")
    )
    add("check-config", cmd_check_config, "validate the configuration, print every problem")
    from mailengine.signing.command import add_dkim_arguments

    add_dkim_arguments(add("dkim", cmd_dkim, "DKIM keys: keygen DOMAIN SELECTOR, check DOMAIN"))
    add("start", cmd_start, "run the engine in the foreground")
    add("test", cmd_test, "run the engine in test mode in the foreground")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.show_help or not getattr(args, "func", None):
            code = cmd_help(args)
        else:
            code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:
        # `mailengine queue list | head`: the reader has what it wanted. Point stdout
        # at /dev/null so the exit's flush cannot fail again, and exit as a program
        # killed by SIGPIPE would (128 + 13), without a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return code


if __name__ == "__main__":
    raise SystemExit(main())
