"""``mailengine queue audit``: the engine's recipient books against the queue files.

The running engine writes its books (``observe.books``) to ``mailq/books.txt``
every few seconds and, counted exactly, at a graceful stop. After a stop every
recipient still to send must stand in a ``rcpttosend`` of ``retry/`` (or
``working/``); the audit counts them and says whether the books balance and
the files agree, and lists queue files that contradict themselves.
"""

from __future__ import annotations

import os

import attrs

from mailengine.observe.books import BOOKS_FILE, ENTRIES, MEANING, Books, parse_books_text
from mailengine.queue.inf import InfError
from mailengine.queue.store import QueueStore

SENT_DIRS = ("retry", "working")  # where a stopped engine's queued recipients wait
MAX_PROBLEMS_SHOWN = 20


@attrs.define
class Survey:
    """What the queue files hold: recipients still to send per directory, and problems."""

    recipients: dict[str, int] = attrs.field(factory=dict)
    messages: dict[str, int] = attrs.field(factory=dict)
    problems: list[str] = attrs.field(factory=list)
    journal_segments: int = 0


def survey(store: QueueStore, now: float) -> Survey:
    """Read every ``.inf`` of retry/, working/ and hold/ (as ``queue list`` does)."""
    found = Survey()
    for dirname in (*SENT_DIRS, "hold"):
        found.recipients[dirname] = found.messages[dirname] = 0
        names = sorted(os.listdir(store.dir(dirname)))
        infs = {n[:-4] for n in names if n.endswith(".inf") and not n.startswith(".")}
        for name in names:
            if name.endswith(".inf-claimed"):
                found.problems.append(f"{dirname}/{name}: claimed by an action that never finished")
            elif name.endswith(".dat") and name[:-4] not in infs and not name.startswith("."):
                found.problems.append(f"{dirname}/{name}: no .inf beside it")
            elif name.startswith("journal-"):
                found.journal_segments += 1
        for message_id in sorted(infs):
            try:
                envelope = store.read_envelope(
                    dirname, message_id, now=now, require_recipients=False
                )
            except (InfError, OSError, ValueError) as exc:
                found.problems.append(f"{dirname}/{message_id}.inf: unreadable: {exc}")
                continue
            found.messages[dirname] += 1
            found.recipients[dirname] += len(envelope.rcpt_to_send)
            ended = {a.lower() for a in (*envelope.rcpt_sent, *envelope.rcpt_failed)}
            twice = [a for a in envelope.rcpt_to_send if a.lower() in ended]
            if twice:
                found.problems.append(
                    f"{dirname}/{message_id}.inf: still to send but already sent or failed: "
                    + ", ".join(twice)
                )
    return found


def read_books(store: QueueStore) -> tuple[Books, dict[str, str]] | None:
    try:
        with open(os.path.join(store.root, BOOKS_FILE), encoding="utf-8") as fh:
            return parse_books_text(fh.read())
    except FileNotFoundError:
        return None


def audit_lines(
    books: tuple[Books, dict[str, str]] | None, files: Survey
) -> tuple[list[str], bool]:
    """The report, and whether everything checks out."""
    lines: list[str] = []
    ok = True
    if books is None:
        lines.append(f"no {BOOKS_FILE}: the engine has not run with this queue yet")
    else:
        tally, fields = books
        state, written = fields.get("state", "?"), fields.get("written", "?")
        lines.append(f"books of the engine's last run ({state}, written {written}):")
        for name in ENTRIES:
            lines.append(f"  {name:<12} {getattr(tally, name):>9}  {MEANING[name]}")
        queued = int(fields.get("queued", tally.should_be_queued))
        lines.append(f"  {'queued':<12} {queued:>9}  still to send")
        off = tally.unaccounted(queued)
        lines.append(
            f"  in {tally.taken_in} = out {tally.given_out} + queued {queued}: "
            + ("balanced" if off == 0 else f"NOT balanced ({off:+d} unaccounted for)")
        )
        ok = off == 0
        waiting = sum(files.recipients.get(d, 0) for d in SENT_DIRS)
        if state == "stopped":
            if waiting == queued:
                lines.append(f"the queue files hold the {queued} queued recipients: they agree")
            else:
                ok = False
                lines.append(
                    f"the queue files hold {waiting} recipients still to send, the books "
                    f"{queued}: they DISAGREE"
                )
        else:
            lines.append(
                "the engine was running: relay mail it holds in memory has no file, so the "
                "files are not compared (stop it, or watch /metrics "
                "mailengine_books_unaccounted_recipients)"
            )
    for dirname, n in files.recipients.items():
        lines.append(f"{dirname}/: {files.messages[dirname]} messages, {n} recipients to send")
    if files.journal_segments:
        lines.append(
            f"working/: {files.journal_segments} receipt journal segments (restored into "
            "retry/ at the next start)"
        )
    if files.problems:
        ok = False
        lines.append(f"{len(files.problems)} problems:")
        lines.extend(f"  {p}" for p in files.problems[:MAX_PROBLEMS_SHOWN])
        if len(files.problems) > MAX_PROBLEMS_SHOWN:
            lines.append(f"  ... and {len(files.problems) - MAX_PROBLEMS_SHOWN} more")
    return lines, ok
