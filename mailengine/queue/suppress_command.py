"""``mailengine suppress``: add, remove, list, import and export the suppression list.

Works on ``mailq/suppression.sqlite`` directly, safely while the engine runs
(SQLite's locking; the engine reads every RCPT afresh, so a change applies to
the next one).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time

from mailengine.observe.timestamps import format_stamp
from mailengine.queue.suppression import (
    FILE_NAME,
    Entry,
    SuppressionList,
    entries_from_csv,
    entries_to_csv,
)


def add_suppress_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--test", action="store_true", help="the test-mode list (mailq-test/)")
    sub = parser.add_subparsers(dest="suppress_command", metavar="ACTION")

    def action(name: str, helptext: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=helptext, description=helptext)
        # Also accepted after the action: `mailengine suppress list --root DIR`.
        p.add_argument("--root", default=argparse.SUPPRESS, help="the MailEngine directory")
        p.add_argument("--test", action="store_true", default=argparse.SUPPRESS, help="mailq-test/")
        return p

    p = action("add", "suppress addresses")
    p.add_argument("addresses", nargs="+", metavar="ADDRESS")
    p.add_argument("--reason", default="added by the operator", help="why (shown at RCPT)")
    p = action("remove", "take addresses off the list")
    p.add_argument("addresses", nargs="+", metavar="ADDRESS")
    p = action("list", "list entries, newest first")
    p.add_argument("--search", default="", help="a part of the address or reason")
    p.add_argument("--limit", type=int, default=100, help="at most this many (0: all)")
    p = action("import", "add the addresses of a CSV file (- : standard input)")
    p.add_argument("file")
    p.add_argument("--reason", default="imported", help="for rows without a reason")
    p = action("export", "write the list as CSV (default: standard output)")
    p.add_argument("file", nargs="?", default="-")


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def run(args: argparse.Namespace, mailq: str) -> int:
    """Run one ``mailengine suppress ACTION`` on the list under ``mailq``."""
    if not os.path.isdir(mailq):
        print(f"mailengine: {mailq} does not exist; is --root right?", file=sys.stderr)
        return 2
    listing = SuppressionList(os.path.join(mailq, FILE_NAME))
    now = time.time()
    command = args.suppress_command
    if command == "add":
        entries = [Entry(a, args.reason, "cli", now, _who()) for a in args.addresses]
        bad = [e.address for e in entries if "@" not in e.address]
        if bad:
            print(f"mailengine: not an address: {', '.join(bad)}", file=sys.stderr)
            return 2
        added = listing.add_many(entries)
        print(f"{added} added, {len(entries) - added} already listed")
        return 0
    if command == "remove":
        missing = [a for a in args.addresses if not listing.remove(a)]
        for a in missing:
            print(f"{a}: not listed")
        print(f"{len(args.addresses) - len(missing)} removed")
        return 1 if missing else 0
    if command == "list":
        entries, total = listing.search(args.search, 0, args.limit or 10**12)
        for e in entries:
            print(f"{e.address}\t{format_stamp(e.created)}\t{e.source}\t{e.by}\t{e.reason}")
        shown = f" ({len(entries)} shown)" if len(entries) < total else ""
        print(f"{total} suppressed{shown}")
        return 0
    if command == "import":
        try:
            if args.file == "-":
                text = sys.stdin.read()
            else:
                with open(args.file, encoding="utf-8") as fh:
                    text = fh.read()
            rows = list(
                entries_from_csv(text, now=now, source="import", by=_who(), reason=args.reason)
            )
        except (OSError, ValueError) as exc:
            print(f"mailengine: {exc}", file=sys.stderr)
            return 2
        added = listing.add_many(rows)
        print(f"{added} added, {len(rows) - added} already listed")
        return 0
    if command == "export":
        if args.file == "-":
            n = entries_to_csv(listing.entries(), sys.stdout)
        else:
            with open(args.file, "w", encoding="utf-8", newline="") as fh:
                n = entries_to_csv(listing.entries(), fh)
            print(f"{n} exported to {args.file}")
        return 0
    print(
        "mailengine: suppress needs an action: add, remove, list, import, export", file=sys.stderr
    )
    return 2
