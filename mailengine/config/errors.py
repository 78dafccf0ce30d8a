"""How a bad setting is reported: the error and its one line per problem (pure)."""

from __future__ import annotations

from typing import Any

from mailengine.config.kinds import TableList
from mailengine.config.kinds import shown as _shown
from mailengine.config.schema import Setting


class ConfigError(Exception):
    """One or more bad settings; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def describe_error(path: str, setting: Setting, raw: Any, why: str) -> str:
    if isinstance(setting.kind, TableList) and isinstance(raw, list):
        # The tables' own problems say which entry (the n-th block) and field.
        return f"{path}: [[{setting.section}.{setting.key}]] {why}"
    return f"{path}: [{setting.section}] {setting.key} = {_shown(raw)}: {why}"
