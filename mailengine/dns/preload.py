"""``[dns] preload_domains``: resolved at start-up and kept warm while the engine runs (shell)."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailengine.dns.cache import refresh_plan

log = Logger(namespace="mailengine.dns")


class PreloadService(service.Service):
    """Warms the preload domains, refreshes each shortly before its first answer
    expires, and on stop cancels its timers and closes the resolver's connections.

    ``resolver`` is a MailResolver (``warm(domain, fresh_for) -> Deferred[expiry]``).
    """

    name = "dns-preload"

    def __init__(self, resolver: Any, config: Any, clock: Any) -> None:
        self.resolver = resolver
        self.config = config
        self.clock = clock
        self.timers: dict[str, Any] = {}
        # A change of settings starts a new round; answers of older rounds are ignored.
        self._round = 0
        self._subscribed = False

    def startService(self) -> None:
        super().startService()
        if not self._subscribed:
            self.config.subscribe(self._setting_changed)
            self._subscribed = True
        domains = self.config.dns.preload_domains
        if domains:
            log.info("DNS preload: looking up {n} domain(s)", n=len(domains))
        self._warm_all()

    def stopService(self) -> Any:
        self._round += 1
        self._cancel_timers()
        self.resolver.close()
        return super().stopService()

    def _setting_changed(self, section: str, key: str, value: Any) -> None:
        if self.running and section == "dns" and key in ("preload_domains", "bypass"):
            self._warm_all()

    def _cancel_timers(self) -> None:
        for call in self.timers.values():
            if call.active():
                call.cancel()
        self.timers.clear()

    def _warm_all(self) -> None:
        self._round += 1
        self._cancel_timers()
        for domain in self.config.dns.preload_domains:
            self._warm(domain, 0.0, self._round)

    def _warm(self, domain: str, fresh_for: float, round_: int) -> None:
        self.timers.pop(domain, None)
        d = self.resolver.warm(domain, fresh_for)
        d.addCallback(self._schedule, domain, round_)
        d.addErrback(self._failed, domain)

    def _schedule(self, expires_at: float, domain: str, round_: int) -> None:
        if not self.running or round_ != self._round:
            return
        plan = refresh_plan(self.clock.seconds(), expires_at)
        self.timers[domain] = self.clock.callLater(
            plan.delay, self._warm, domain, plan.fresh_for, round_
        )

    def _failed(self, failure: Failure, domain: str) -> None:
        log.failure("keeping {domain} warm failed", failure, domain=domain)
