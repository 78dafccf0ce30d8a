"""Read and validate config/mailengine.toml; every problem is reported at once."""

from __future__ import annotations

import difflib
import os
import tomllib
from typing import Any

from mailengine.config.errors import ConfigError, describe_error
from mailengine.config.kinds import Invalid
from mailengine.config.kinds import shown as _shown
from mailengine.config.model import Config
from mailengine.config.schema import BY_NAME, SECTIONS, SETTINGS, cross_problems


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _unknown_key(path: str, section: str | None, key: str, value: Any) -> str:
    """``[web] prt = 80 is not a setting; did you mean port?`` (or the section's list)."""
    where = f"[{section}] {key}" if section else f"{key} (outside any [section])"
    own = [s.key for s in SETTINGS if s.section == section]
    hint = _did_you_mean(key, own)
    if not hint:
        # The right name in the wrong section: name the section it belongs to.
        elsewhere = [f"[{s.section}] {s.key}" for s in SETTINGS if s.key == key]
        elsewhere = elsewhere or [
            f"[{s.section}] {s.key}"
            for s in SETTINGS
            if difflib.get_close_matches(key, [s.key], n=1, cutoff=0.8)
        ]
        if elsewhere:
            hint = f"; did you mean {' or '.join(elsewhere[:3])}?"
        elif own:
            hint = f" (settings of [{section}]: {', '.join(own)})"
    return f"{path}: {where} = {_shown(value)} is not a setting{hint}"


def validate(document: dict[str, Any], path: str) -> tuple[dict, dict, list[str]]:
    """Check a parsed TOML document; return (raw, parsed, problems). Pure."""
    problems: list[str] = []
    raw: dict[tuple[str, str], Any] = {}
    for name, table in document.items():
        if name not in SECTIONS:
            if not isinstance(table, dict):
                problems.append(_unknown_key(path, None, name, table))
                continue
            problems.append(
                f"{path}: [{name}] is not a section{_did_you_mean(name, list(SECTIONS))}"
                f" (sections: {', '.join(SECTIONS)})"
            )
            continue
        if not isinstance(table, dict):
            problems.append(
                f"{path}: {name} = {_shown(table)}: {name} is a section; write [{name}] "
                "and its settings below it"
            )
            continue
        for key, value in table.items():
            if (name, key) not in BY_NAME:
                problems.append(_unknown_key(path, name, key, value))
                continue
            raw[(name, key)] = value
    parsed: dict[tuple[str, str], Any] = {}
    for setting in SETTINGS:
        ident = (setting.section, setting.key)
        value = raw.setdefault(ident, setting.default)
        try:
            parsed[ident] = setting.kind.parse(value)
        except Invalid as exc:
            problems.append(describe_error(path, setting, value, str(exc)))
    if not problems:
        problems.extend(f"{path}: {p}" for p in cross_problems(lambda s, k: parsed[(s, k)]))
    return raw, parsed, problems


def load_config(path: str) -> Config:
    """Load and validate ``path``; raises ConfigError listing every problem."""
    try:
        with open(path, "rb") as fh:
            document = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    raw, parsed, problems = validate(document, path)
    if problems:
        raise ConfigError(problems)
    return Config(path, raw, parsed)


def load_or_create(path: str) -> tuple[Config, bool]:
    """Load ``path``, first writing the shipped template there when it is missing."""
    from mailengine.config.template import render_template

    created = False
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(render_template())
        os.replace(tmp, path)
        created = True
    return load_config(path), created
