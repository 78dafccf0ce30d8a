"""``mailengine queue``: list, show, delete, retry-now, hold, release, summary, audit (files).

The same ``QueueActions`` as the web admin, safe while the engine runs: each
change claims the message by renaming its ``.inf``, and the engine sees the
result within a second (it watches retry/; elsewhere at its next queue check). Relay mail the engine
holds in memory has no file here; the web admin reaches it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

from mailengine.observe.eventlog import append_records
from mailengine.observe.events import action_records
from mailengine.queue.actions import (
    ACTION_SOURCES,
    ACTIONS,
    BEING_SENT_FILES,
    NOT_FOUND,
    ActionResult,
    QueueActions,
    QueueEntry,
    QueueFilter,
    parse_age,
    plural,
)
from mailengine.queue.audit import audit_lines, read_books, survey
from mailengine.queue.destination_states import FILE_NAME as STATES_FILE
from mailengine.queue.destination_states import STALE_SECONDS, DestinationLine, state_words
from mailengine.queue.destination_states import decode as decode_states
from mailengine.queue.lastreply import last_replies, last_reply_of
from mailengine.queue.shape import DomainShape, bucket_labels, format_age
from mailengine.queue.store import DIRS, BadMessageId, QueueStore

SUMMARY_DIRS = ("retry", "working")


def add_queue_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``queue`` command's own arguments (``--root``/``--config`` come from cli.py)."""
    parser.add_argument("--test", action="store_true", help="the test-mode queue (mailq-test/)")
    sub = parser.add_subparsers(dest="queue_command", metavar="ACTION")

    def action_parser(name: str, helptext: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=helptext, description=helptext)
        # Also accepted after the action: `mailengine queue list --root DIR`.
        p.add_argument("--root", default=argparse.SUPPRESS, help="the MailEngine directory")
        p.add_argument(
            "--test",
            action="store_true",
            default=argparse.SUPPRESS,
            help="the test-mode queue (mailq-test/)",
        )
        return p

    def filters(p: argparse.ArgumentParser, dirs_help: str) -> None:
        p.add_argument("--dir", action="append", choices=DIRS, help=dirs_help)
        p.add_argument("--domain", default="", help="messages with a recipient at this domain")
        p.add_argument("--address", default="", help="messages from or to this address")
        p.add_argument("--search", default="", help="a part of the id, sender or a recipient")
        p.add_argument("--older-than", default="", help="created longer ago than: 90s, 30m, 2h, 1d")

    p = action_parser("list", "list queued messages (default: retry/)")
    filters(p, "directory to list (repeatable; default retry)")
    p.add_argument("--limit", type=int, default=100, help="at most this many lines (0: all)")
    p = action_parser("show", "print a message's .inf and headers")
    p.add_argument("id")
    for action, helptext in (
        ("delete", "delete messages (with --domain: only that domain's recipients)"),
        ("retry-now", "make messages in retry/ due now"),
        ("hold", "move messages from retry/ to hold/: never sent until released"),
        ("release", "move held messages back to retry/, due now"),
    ):
        p = action_parser(action, helptext)
        p.add_argument("ids", nargs="*", metavar="ID")
        filters(p, f"with --domain: directory to act in (default {ACTION_SOURCES[action][0]})")
        p.add_argument("--yes", action="store_true", help="do not ask before acting on many")
    action_parser("audit", "check the recipient books against the queue files")
    p = action_parser("summary", "recipients and oldest age per destination domain (qshape)")
    p.add_argument(
        "--dir",
        action="append",
        choices=DIRS,
        help="directory to count (repeatable; default retry and working)",
    )


def _filter(args: argparse.Namespace, default_dirs: tuple[str, ...]) -> QueueFilter:
    return QueueFilter(
        dirs=tuple(args.dir or default_dirs),
        domain=args.domain.strip().lstrip("@").lower(),
        address=args.address,
        text=args.search,
        older_than_seconds=parse_age(args.older_than) if args.older_than else 0.0,
    )


def print_entries(entries: list[QueueEntry], total: int, now: float) -> None:
    print(f"{'ID':<44} {'DIR':<8} {'AGE':>11} {'TRIES':>5}  {'FROM':<28} RECIPIENTS")
    for e in entries:
        env = e.envelope
        if env is None:
            print(f"{e.message_id:<44} {e.dirname:<8} {'':>11} {'':>5}  unreadable: {e.error}")
            continue
        rcpts = e.recipients
        shown = ", ".join(rcpts[:3]) + (f" (+{len(rcpts) - 3})" if len(rcpts) > 3 else "")
        print(
            f"{e.message_id:<44} {e.dirname:<8} {format_age(now - env.time_created):>11} "
            f"{env.send_tries:>5}  {(env.mail_from or '<>'):<28} {len(rcpts)}: {shown}"
        )
        reply = last_reply_of(env)
        if reply:
            print(f"{'':<44} last reply: {reply}")
    print(plural(total, "message") + (f" ({len(entries)} shown)" if len(entries) < total else ""))


def read_states(mailq: str, now: float) -> dict[str, DestinationLine] | None:
    """The running engine's destination states (None: no engine wrote them lately)."""
    try:
        with open(os.path.join(mailq, STATES_FILE), "rb") as fh:
            return decode_states(fh.read(), now)
    except OSError:
        return None


def clock_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def state_column(states: dict[str, DestinationLine], domain: str) -> str:
    """The destination's state, and the reply or DNS failure behind it."""
    line = states.get(domain)
    if line is None:
        return "sending"
    words = state_words(line.state, line.state_text, line.until, clock_time)
    return f"{words}: {line.reason}" if line.reason else words


def print_summary(
    shapes: list[DomainShape], states: dict[str, DestinationLine] | None = None
) -> None:
    labels = bucket_labels()
    print(
        f"{'DOMAIN':<32} {'RCPTS':>7} {'MSGS':>6} {'OLDEST':>11} "
        + " ".join(f"{label:>6}" for label in labels)
        + ("  STATE" if states is not None else "")
    )
    for s in shapes:
        print(
            f"{s.domain:<32} {s.recipients:>7} {s.messages:>6} {format_age(s.oldest_seconds):>11} "
            + " ".join(f"{b:>6}" for b in s.buckets)
            + (f"  {state_column(states, s.domain)}" if states is not None else "")
        )
    total = [sum(s.buckets[i] for s in shapes) for i in range(len(labels))]
    print(
        f"{'TOTAL':<32} {sum(s.recipients for s in shapes):>7} "
        f"{sum(s.messages for s in shapes):>6} {'':>11} " + " ".join(f"{b:>6}" for b in total)
    )


# What a running engine makes of a change (it reads retry/ at its queue checks).
ENGINE_NOTE = (
    "a running engine picks up messages made due or released within a second (where it "
    "cannot watch retry/: at its next queue check, [queue] check_interval_seconds)"
)
MEMORY_NOTE = (
    "relay mail a running engine holds in memory has no file here until it is retried; "
    "the web admin's Queue page (in memory) reaches it"
)


def events_wanted(config_path: str) -> bool:
    """``[events] enabled`` and a log retention (as the engine decides); on when the
    configuration cannot be read (the command still did what it did)."""
    from mailengine.config.loader import ConfigError, load_config

    try:
        config = load_config(config_path)
    except (ConfigError, OSError):
        return True
    return bool(config.events.enabled) and config.logs.retention_days > 0


def record_events(results: list[ActionResult], root: str, config_path: str, now: float) -> None:
    """The event log's lines for what the command did (written at once: no engine timer)."""
    if not any(r.ok for r in results) or not events_wanted(config_path):
        return
    log_dir = os.path.join(root, "log")
    records = [
        event
        for r in results
        if r.ok
        for event in action_records(
            r.action, r.message_id, r.sender, r.recipients, now=now, by="cli"
        )
    ]
    try:
        append_records(log_dir, records, now)
    except OSError as exc:
        print(f"mailengine: cannot write the event log in {log_dir}: {exc}", file=sys.stderr)


def print_results(results: list[ActionResult]) -> int:
    for r in results:
        print(f"{r.message_id}: {r.text}" if r.ok else f"{r.message_id}: NOT done: {r.text}")
    done = sum(r.ok for r in results)
    print(f"{done} of {len(results)} done")
    if any(r.ok and r.dest == "retry" for r in results):
        print(f"note: {ENGINE_NOTE}")
    if any(r.text in (NOT_FOUND, BEING_SENT_FILES) for r in results):
        print(f"note: {MEMORY_NOTE}")
    return 0 if done == len(results) else 1


def _confirm(question: str, yes: bool, ask: Callable[[str], str]) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        print(f"{question}\nmailengine: add --yes to act on many messages", file=sys.stderr)
        return False
    return ask(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def run_action(actions: QueueActions, args: argparse.Namespace, now: float, root: str) -> int:
    config_path = getattr(args, "config", None) or os.path.join(root, "config", "mailengine.toml")
    action = args.queue_command
    actions.restore_stale_claims(now)
    if args.ids:
        results = []
        for message_id in args.ids:
            try:
                results.append(actions.act(action, message_id, now))
            except BadMessageId:
                results.append(ActionResult(message_id, action, False, "not a message id"))
        record_events(results, root, config_path, now)
        return print_results(results)
    if not args.domain:
        print(f"mailengine: {action} needs message ids or --domain", file=sys.stderr)
        return 2
    which = _filter(args, (ACTION_SOURCES[action][0],))
    matched = [e for e in actions.entries(which, now)]
    recipients = sum(len(e.recipients) for e in matched)
    question = (
        f"{action} {len(matched)} messages ({recipients} recipients) to {which.domain} "
        f"in {', '.join(d + '/' for d in which.dirs)}?"
    )
    if not matched:
        print(f"no message to {which.domain} in {', '.join(d + '/' for d in which.dirs)}")
        return 0
    if not _confirm(question, args.yes, input):
        return 1
    results = actions.act_on_matching(action, which, now)
    record_events(results, root, config_path, now)
    return print_results(results)


def run(args: argparse.Namespace, mailq: str) -> int:
    """Run one ``mailengine queue ACTION`` against the queue at ``mailq``."""
    if not os.path.isdir(os.path.join(mailq, "retry")):
        print(f"mailengine: {mailq}/retry does not exist; is --root right?", file=sys.stderr)
        return 2
    store = QueueStore(mailq)
    store.ensure_dirs()  # hold/ is new; an older queue may not have it
    actions = QueueActions(store)
    now = time.time()
    command = args.queue_command
    try:
        if command == "list":
            which = _filter(args, ("retry",))
            entries, total = actions.page(which, now, 0, args.limit or 10**9)
            print_entries(entries, total, now)
            return 0
        if command == "show":
            detail = actions.show(args.id, now)
            if detail is None:
                print(f"mailengine: {args.id} is not in the queue files", file=sys.stderr)
                print(f"note: {MEMORY_NOTE}", file=sys.stderr)
                return 1
            print(f"# {detail.entry.dirname}/{args.id}.inf")
            print(detail.inf_text.rstrip("\n"))
            envelope = detail.entry.envelope
            replies = last_replies(envelope) if envelope is not None else {}
            if replies:
                print("# last reply per recipient")
                for address, reply in replies.items():
                    print(f"{address}\t{reply}")
            print(f"# headers of {detail.entry.dirname}/{args.id}.dat")
            print(detail.headers)
            return 0
        if command == "audit":
            lines, ok = audit_lines(read_books(store), survey(store, now))
            print("\n".join(lines))
            return 0 if ok else 1
        if command == "summary":
            states = read_states(mailq, now)
            print_summary(actions.summary(tuple(args.dir or SUMMARY_DIRS), now), states)
            if states is None:
                print(
                    f"(no STATE column: no running engine wrote {mailq}/{STATES_FILE} "
                    f"in the last {STALE_SECONDS:g} s)",
                    file=sys.stderr,
                )
            return 0
        if command in ACTIONS:
            root = os.path.dirname(os.path.abspath(mailq))
            return run_action(actions, args, now, root)
    except BadMessageId as exc:
        print(f"mailengine: {exc} is not a message id", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"mailengine: {exc}", file=sys.stderr)
        return 2
    print(
        "mailengine: queue needs an action: list, show, delete, retry-now, hold, release, "
        "summary, audit",
        file=sys.stderr,
    )
    return 2
