"""What can refuse the start, each as one line naming the cause: ports, directories.

Checked before twistd daemonizes, so the operator sees the line on the terminal
(and again, where it matters, as the user twistd's ``--uid`` switches to).
"""

from __future__ import annotations

import os
import socket
import sqlite3
from typing import Any, Protocol

import attrs
from twisted.logger import Logger

from mailengine.queue.store import QueueStore
from mailengine.queue.suppression import SuppressionList

log = Logger(namespace="mailengine")


class StartupError(SystemExit):
    """A one-line reason the engine cannot start (shown instead of a traceback)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"mailengine: {message}")


class DaemonStartupError(RuntimeError):
    """The same reason inside twistd's daemon: twistd reports an Exception to the
    waiting parent and removes the pid file; a SystemExit there leaves the parent
    waiting for ever."""


def startup_failure(message: str, *, daemon: bool) -> BaseException:
    """The exception that refuses the start: logged for a daemon, one line in the foreground."""
    if daemon:
        log.error("mailengine: {message}", message=message)
        return DaemonStartupError(message)
    return StartupError(message)


@attrs.frozen
class Listener:
    """One server to listen for: on ``port`` of every address (``""``: all)."""

    what: str
    setting: str
    port: int
    factory: Any
    addresses: tuple[str, ...]


def listen_addresses(ranges: Any) -> tuple[str, ...]:
    """The addresses of a ``listen_ips`` setting (``""``: every address)."""
    return tuple(ranges.addresses()) if ranges else ("",)


def listener_for(section: str, what: str, settings: Any, factory: Any) -> Listener:
    """The listener of ``[smtp_in]`` or ``[web]``: its port on its ``listen_ips``."""
    where = f"[{section}] port (or listen_ips)"
    return Listener(what, where, settings.port, factory, listen_addresses(settings.listen_ips))


def smtp_listener(smtp_in: Any, factory: Any) -> Listener:
    return listener_for("smtp_in", "SMTP", smtp_in, factory)


def web_listener(web: Any, site: Any) -> Listener:
    return listener_for("web", "the web admin", web, site)


def cannot_listen(listener: Listener, address: str, reason: str, config_path: str) -> str:
    return (
        f"cannot listen for {listener.what} on {address or '*'}:{listener.port} ({reason}); "
        f"change {listener.setting} in {config_path}"
    )


def try_binding(listener: Listener, config_path: str) -> None:
    """Bind (and close) each address as listenTCP will; StartupError names the setting.

    Run before twistd daemonizes, so a busy or forbidden port is one line on the
    operator's terminal rather than a daemon that dies out of sight.
    """
    for address in listener.addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as listenTCP does
            try:
                probe.bind((address, listener.port))
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise StartupError(cannot_listen(listener, address, reason, config_path)) from None


class StartupParts(Protocol):
    """What the start-up checks need of the engine (``Engine``)."""

    @property
    def store(self) -> QueueStore: ...

    @property
    def log_dir(self) -> str: ...

    @property
    def suppression(self) -> SuppressionList | None: ...


def prepare_directories(engine: StartupParts) -> None:
    """mailq/ (or mailq-test/) and log/, created before the start so a bad --root is one line."""
    try:
        engine.store.ensure_dirs()
        os.makedirs(engine.log_dir, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create {exc.filename}: {exc.strerror}") from None
    problem = unwritable_queue(engine)
    if problem:
        raise StartupError(problem)
    if engine.suppression is not None:
        try:
            engine.suppression.prepare()
        except sqlite3.Error as exc:  # mail still flows: lookups report it once
            log.warn("the suppression list cannot be opened: {why}", why=exc)


def unwritable_queue(engine: StartupParts) -> str:
    """One line when the queue cannot be written to by this process ("" when it can)."""
    try:
        engine.store.check_writable()
    except OSError as exc:
        where = os.path.dirname(exc.filename) if exc.filename else engine.store.root
        return (
            f"the queue is not writable: cannot create files in {where} ({exc.strerror}); "
            f"the engine must own {engine.store.root} (mind twistd's --uid/--gid)"
        )
    return ""
