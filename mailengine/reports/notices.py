"""Admin notices (low disk space, out of file descriptors) and the lines of the
undeliverable files (pure)."""

from __future__ import annotations

from collections.abc import Iterable

from mailengine.queue.results import RecipientResult
from mailengine.reports.mail import finish, header_block, postmaster

NOTICE_INTERVAL_SECONDS = 3600.0  # each kind of notice at most once an hour

FD_WARNING = (
    "Warning: you are out of file descriptors. Performance may be very poor until you "
    "increase them. Try lowering the number of mail sends."
)  # manual §7, word for word


class NoticeGate:
    """Remembers when each kind of notice last went out."""

    def __init__(self, interval_seconds: float = NOTICE_INTERVAL_SECONDS) -> None:
        self.interval = interval_seconds
        self.last: dict[str, float] = {}

    def may_send(self, kind: str, now: float) -> bool:
        last = self.last.get(kind)
        if last is not None and now - last < self.interval:
            return False
        self.last[kind] = now
        return True


def build_notice(
    *, to: str, subject: str, body: str, hostname: str, now: float, notice_id: str
) -> bytes:
    text = header_block(
        sender=postmaster(hostname),
        to=to,
        subject=f"MailEngine on {hostname}: {subject}",
        now=now,
        message_id=notice_id,
        extra="Content-Type: text/plain; charset=utf-8\n",
    )
    return finish(text + "\n" + body + "\n")


def undeliverable_lines(failures: Iterable[RecipientResult], with_reply: bool = True) -> str:
    """One ``address<TAB>reply`` line per failure (README), or the manual's bare
    address (§3) with ``[logs] undeliverable_reasons = false``."""
    if not with_reply:
        return "".join(f"{r.address}\n" for r in failures)
    return "".join(f"{r.address}\t{' '.join(r.reply.split()) or r.code}\n" for r in failures)


def disk_space_is_low(free_bytes: int, threshold_mb: int) -> bool:
    """Less than ``threshold_mb`` MB free (``[server] low_disk_space_mb``; 0: never low)."""
    return free_bytes < threshold_mb * 1024 * 1024
