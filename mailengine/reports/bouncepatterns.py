"""Reads the bounce-category patterns: the shipped file and the operator's additions."""

from __future__ import annotations

import os
from importlib import resources

from mailengine.reports.categories import Pattern, parse_patterns

OPERATOR_FILE = "bounce-patterns.txt"  # in config/, beside mailengine.toml


def shipped_patterns() -> list[Pattern]:
    text = resources.files("mailengine.reports").joinpath("bounce-patterns.txt").read_text("utf-8")
    return parse_patterns(text, "bounce-patterns.txt (shipped)")


def load_patterns(config_dir: str) -> list[Pattern]:
    """The operator's patterns first (they win), then the shipped ones; PatternError
    names a bad line of the operator's file."""
    path = os.path.join(config_dir, OPERATOR_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            own = parse_patterns(fh.read(), path)
    except FileNotFoundError:
        own = []
    return own + shipped_patterns()
