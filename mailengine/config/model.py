"""The live settings object: parsed values by section, changed one setting at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mailengine.config.errors import ConfigError, describe_error
from mailengine.config.kinds import Invalid
from mailengine.config.schema import BY_NAME, SECTIONS, SETTINGS, cross_problems

Listener = Callable[[str, str, Any], None]


class Section:
    """Parsed values of one TOML table as attributes (read at use time, so edits apply)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        items = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return f"<Section {self._name} {items}>"

    def __getattr__(self, name: str) -> Any:  # only reached for names never set
        raise AttributeError(f"[{self._name}] has no setting {name!r}")


class Config:
    """All settings of one file; ``config.smtp_in.port`` reads a parsed value."""

    def __init__(
        self, path: str, raw: dict[tuple[str, str], Any], parsed: dict[tuple[str, str], Any]
    ) -> None:
        self.path = path
        self._raw = dict(raw)
        self._listeners: list[Listener] = []
        self._sections = {name: Section(name) for name in SECTIONS}
        for (section, key), value in parsed.items():
            setattr(self._sections[section], key, value)

    # mypy cannot see dynamic sections; these annotations document them.
    server: Section
    smtp_in: Section
    smtp_out: Section
    dns: Section
    queue: Section
    logs: Section
    events: Section
    suppression: Section
    reports: Section
    dkim: Section
    shaping: Section
    egress: Section
    web: Section

    def __getattr__(self, name: str) -> Section:
        sections = self.__dict__.get("_sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(name)

    @classmethod
    def defaults(cls, path: str = "<defaults>") -> Config:
        raw = {(s.section, s.key): s.default for s in SETTINGS}
        return cls(path, raw, {n: BY_NAME[n].kind.parse(v) for n, v in raw.items()})

    def get(self, section: str, key: str) -> Any:
        return getattr(self._sections[section], key)

    def raw(self, section: str, key: str) -> Any:
        """The value as the file spells it (for display and persistence)."""
        return self._raw[(section, key)]

    def apply(self, section: str, key: str, raw: Any) -> Any:
        """Validate ``raw`` and make it current; raises ConfigError. Does not write the file."""
        setting = BY_NAME.get((section, key))
        if setting is None:
            raise ConfigError([f"{self.path}: [{section}] {key} is not a setting"])
        try:
            value = setting.kind.parse(raw)
        except Invalid as exc:
            raise ConfigError([describe_error(self.path, setting, raw, str(exc))]) from None
        before = self.get(section, key)
        setattr(self._sections[section], key, value)
        problems = cross_problems(self.get)
        if problems:
            setattr(self._sections[section], key, before)
            raise ConfigError([f"{self.path}: {p}" for p in problems])
        self._raw[(section, key)] = raw
        for listener in list(self._listeners):
            listener(section, key, value)
        return value

    def override(self, section: str, key: str, value: Any) -> None:
        """Set a parsed value for this run only (command-line options, test mode)."""
        setattr(self._sections[section], key, value)

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(section, key, value)`` after every applied change."""
        self._listeners.append(listener)
