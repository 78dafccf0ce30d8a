"""Write one changed setting back into the TOML file, keeping comments and layout."""

from __future__ import annotations

import os
import tomllib
from typing import Any

import tomlkit

from mailengine.config.model import Config


def write_setting(path: str, section: str, key: str, raw: Any) -> None:
    """Set ``[section] key = raw`` in the file at ``path`` atomically."""
    with open(path, encoding="utf-8") as fh:
        document = tomlkit.parse(fh.read())
    table = document.get(section)
    if table is None:
        table = tomlkit.table()
        document[section] = table
    if isinstance(raw, tuple):
        raw = list(raw)
    table[key] = raw
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(tomlkit.dumps(document))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def change_setting(config: Config, section: str, key: str, raw: Any) -> Any:
    """Validate, apply at once, then persist; raises ConfigError and changes nothing if bad."""
    before = config.raw(section, key)
    value = config.apply(section, key, raw)
    try:
        write_setting(config.path, section, key, raw)
    except OSError:
        config.apply(section, key, before)
        raise
    return value


def raw_from_text(default: Any, text: str) -> Any:
    """Turn a form field into the TOML value of a setting whose default is ``default``.

    Lists are one entry per line (commas also split numeric lists); booleans
    accept on/true/yes/1; numbers must be numbers. The kind still validates.
    """
    text = text.strip()
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "on", "yes")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            return text
    if isinstance(default, list):
        if default and all(isinstance(v, int | float) for v in default):
            parts = [p for p in text.replace("\n", ",").split(",") if p.strip()]
            try:
                return [float(p) if "." in p else int(p) for p in parts]
            except ValueError:
                return parts
        return [line.strip() for line in text.splitlines() if line.strip()]
    return text


def tables_as_text(section: str, key: str, raw: Any) -> str:
    """An array of tables as the file spells it: ``[[section.key]]`` blocks (form fields)."""
    document = tomlkit.document()
    if raw:
        document.append(section, tomlkit.table(is_super_table=True))
        document[section][key] = [dict(table) for table in raw]
    return tomlkit.dumps(document).strip()


def tables_from_text(section: str, key: str, text: str) -> Any:
    """Inverse of ``tables_as_text``; text that is not TOML comes back as it is (the kind
    then refuses it, saying what is allowed). Blank: no tables."""
    if not text.strip():
        return []
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return text
    tables = document.get(section, {}).get(key) if len(document) == 1 else None
    return tables if tables is not None else text
