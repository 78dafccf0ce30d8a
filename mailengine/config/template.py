"""Render the shipped config/mailengine.toml from the schema, one commented line per setting."""

from __future__ import annotations

import textwrap

from mailengine.config.kinds import TableList, toml_literal
from mailengine.config.schema import SECTIONS, SETTINGS, Setting

SECTION_HELP = {
    "server": "The engine itself.",
    "smtp_in": "Receiving: who may relay, limits, TLS and AUTH (manual §2).",
    "smtp_out": "Sending: connections, timeouts, caps, pause, VERP (manual §3).",
    "dns": "MX lookups: servers, bypass table, preloaded domains.",
    "queue": "The mailq/ directories, retries, memory limits, DSN (manual §5).",
    "logs": "Console and log/ files, statistics, undeliverable logs, debug switches.",
    "events": "The per-recipient event log (log/events-*.jsonl) and its webhook.",
    "suppression": "Addresses never relayed to again (mailq/suppression.sqlite).",
    "reports": "Delivery reports mailed after send attempts (manual §4).",
    "dkim": "DKIM signing of relay mail by its From: domain (issue 11).",
    "shaping": "Traffic shaping per destination: rules and reactions to deferrals (issue 10).",
    "egress": "Source addresses for outbound connections, in pools (issue 10).",
    "cluster": "Caps shared with other nodes through Redis (issue 13).",
    "web": "The web admin at http://host:<port>/gui/admin, its JSON API and /metrics.",
}

HEADER = """\
# MailEngine configuration.
#
# Every setting is listed with its default. A file may hold only the settings
# that differ; missing ones take their defaults. Unknown names are errors.
# Check a file with:  mailengine check-config --config FILE
# Settings marked "applies after restart" need the engine restarted; the
# others take effect at once when changed in the web admin.
"""


def _comment(s: Setting) -> list[str]:
    note = f"Allowed: {s.kind.allowed()}. Default: {toml_literal(s.default)}."
    if not s.live:
        note += " Applies after restart."
    wrapped = [*textwrap.wrap(s.help, width=76), *textwrap.wrap(note, width=76)]
    return ["", *(f"# {line}" for line in wrapped)]


def _table_example(s: Setting, kind: TableList) -> list[str]:
    """A commented ``[[section.key]]`` block: an empty ``key = []`` would forbid adding one."""
    lines = [f"# [[{s.section}.{s.key}]]"]
    lines.extend(f"# {name} = {toml_literal(value)}" for name, value in kind.example().items())
    return lines


def render_template() -> str:
    out = [HEADER]
    for section in SECTIONS:
        out.append("")
        out.append(f"# {SECTION_HELP[section]}")
        out.append(f"[{section}]")
        members = [s for s in SETTINGS if s.section == section]
        # Tables of a list come last: after a [[section.key]] line, plain keys would
        # belong to that table.
        for s in sorted(members, key=lambda s: isinstance(s.kind, TableList)):
            out.extend(_comment(s))
            if isinstance(s.kind, TableList):
                out.extend(_table_example(s, s.kind))
            else:
                out.append(f"{s.key} = {toml_literal(s.default)}")
    return "\n".join(out) + "\n"
