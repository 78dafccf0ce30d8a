"""The running engine's parts, made once by service.py and handed to every shell."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import attrs

from mailengine.config.model import Config
from mailengine.observe.counters import Counters
from mailengine.observe.eventlog import EventLog
from mailengine.observe.recent import RecentFailures
from mailengine.queue.commit import GroupCommit
from mailengine.queue.ids import MessageIdFactory
from mailengine.queue.live import LiveQueue
from mailengine.queue.store import QueueStore
from mailengine.queue.suppression import SuppressionList
from mailengine.reports.bouncepatterns import shipped_patterns
from mailengine.reports.categories import Pattern
from mailengine.signing.process import SigningProcess
from mailengine.signing.signer import Signer


@attrs.define(eq=False)
class Engine:
    """Everything a component may need; nothing here decides anything."""

    root: str
    config: Config
    reactor: Any  # IReactorTime + IReactorTCP + IReactorCore (+ threads)
    store: QueueStore
    queue: LiveQueue
    counters: Counters
    committer: GroupCommit
    ids: MessageIdFactory
    hostname: str  # the machine's name (``[server] helo_text`` overrides it: ``name``)
    test_mode: bool = False
    recent_failures: RecentFailures = attrs.field(factory=RecentFailures)
    signer: Signer = attrs.field(factory=lambda: Signer(()))  # [[dkim.key]], read at start
    # Runs CPU-heavy work (signing large messages) off the reactor thread; None: inline.
    run_in_thread: Callable[[Callable[[], Any]], Any] | None = None
    # Makes the DKIM signatures on another core ([dkim] separate_process); None: here.
    signing_process: SigningProcess | None = None
    # Bounce-category patterns (reports.categories); build_engine adds the operator's.
    bounce_patterns: list[Pattern] = attrs.field(factory=shipped_patterns)
    # The per-recipient event log; off (writes nothing) until build_engine makes the real one.
    events: EventLog = attrs.field(
        factory=lambda: EventLog("", retention_days=lambda: 0, is_enabled=lambda: False)
    )
    # mailq/suppression.sqlite (queue.suppression); build_engine makes it.
    suppression: SuppressionList | None = None

    @property
    def name(self) -> str:
        """The name this engine gives peers (greeting, EHLO, Received, DSNs), read at use
        time so a changed ``[server] helo_text`` applies at once."""
        return self.config.server.helo_text or self.hostname

    @property
    def config_dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.config.path))

    @property
    def log_dir(self) -> str:
        return os.path.join(self.root, "log")

    def root_file(self, name: str) -> str:
        """Files the manual keeps in the MailEngine directory (hard-bounces.txt, ...)."""
        return os.path.join(self.root, name)
