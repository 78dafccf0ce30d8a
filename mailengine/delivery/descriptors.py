"""The open-file limit against what the connection caps need (manual §7)."""

from __future__ import annotations

import resource

from twisted.logger import Logger

from mailengine.reports.notices import FD_WARNING

log = Logger(namespace="mailengine.delivery")

MARGIN = 200  # queue files, logs, listening sockets, DNS, the web admin


def descriptors_needed(outbound_max: int, inbound_max: int) -> int:
    return outbound_max + inbound_max + MARGIN


def plan_limit(soft: int, hard: int, needed: int) -> tuple[int | None, bool]:
    """(new soft limit to set or None, whether the manual's warning is due) (pure)."""
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None, False
    if hard == resource.RLIM_INFINITY or hard >= needed:
        return needed, False
    return (hard if hard > soft else None), True


def ensure_descriptors(outbound_max: int, inbound_max: int) -> bool:
    """Raise the soft RLIMIT_NOFILE where allowed; log the warning if still short.

    Returns True when the limit covers the caps.
    """
    needed = descriptors_needed(outbound_max, inbound_max)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new_soft, warn = plan_limit(soft, hard, needed)
    if new_soft is not None:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
            log.info("raised the open-file limit from {old} to {new}", old=soft, new=new_soft)
        except (ValueError, OSError) as exc:
            log.warn("cannot raise the open-file limit: {why}", why=exc)
            warn = True
    if warn:
        log.warn(
            "{warning} (the connection caps need {needed} open files, the limit is {limit})",
            warning=FD_WARNING,
            needed=needed,
            limit=new_soft or soft,
        )
    return not warn
