"""INTERIM resolver, until the DNS branch (twisted.names + cache) is merged.

Answers from the ``[dns] bypass`` MX lines only; every other domain gets a
transient DNSFailure, so its mail waits in retry/ rather than failing. service.py
registers it only when no ``engine.parts["resolver"]`` exists; delete this file
and that one line once the real resolver is registered.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from mailengine.dns.answer import Destination, DNSFailure, Resolution, Target
from mailengine.dns.bypass import BypassTable


class BypassOnlyResolver:
    """An MXResolver over the live bypass lines (read at use time)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self._entries: Any = None
        self._answers: dict[str, Resolution] = {}

    def resolve(self, domain: str) -> defer.Deferred[Resolution]:
        entries = self.config.dns.bypass
        if entries is not self._entries:  # the setting changed: forget old answers
            self._entries, self._answers = entries, {}
        name = domain.rstrip(".").lower()
        answer = self._answers.get(name)
        if answer is None:
            answer = self._answers[name] = self._lookup(name, BypassTable.from_entries(entries))
        return defer.succeed(answer)

    @staticmethod
    def _lookup(name: str, table: BypassTable) -> Resolution:
        lines = table.mx_for(name)
        if not lines:
            return DNSFailure(name, False, f"no DNS resolver yet and no bypass line for {name}")
        targets: list[Target] = []
        for entry in lines:
            same = [i for i, t in enumerate(targets) if t.host == entry.host]
            if same and targets[same[0]].port == entry.port:
                t = targets[same[0]]
                targets[same[0]] = Target(t.preference, t.host, (*t.addresses, entry.ip), t.port)
            else:
                targets.append(Target(len(targets) * 10, entry.host, (entry.ip,), entry.port))
        return Destination(name, tuple(targets), source="bypass")
