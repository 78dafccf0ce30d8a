"""The DSN mail sent to MAIL FROM when recipients finally failed (pure).

Manual §4: "Your message (id ...) could not be delivered to", the session
transcript, then "A copy of your message is reproduced below:". RFC 3464/6522:
the same as a multipart/report with a message/delivery-status part, so
programs can read it too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.parser import BytesHeaderParser
from email.utils import formatdate

from mailengine.queue.content import split_headers
from mailengine.queue.envelope import Envelope
from mailengine.queue.results import HARD, RecipientResult
from mailengine.reports.categories import category_text
from mailengine.reports.mail import finish, header_block, postmaster

MAX_COPY_BYTES = 100_000  # longer originals are cut in the reproduced copy
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def should_send_dsn(envelope: Envelope, original: bytes = b"") -> bool:
    """Never to the null sender nor for a bounce (RFC 5321 §6.1, RFC 3461 §6.2): not for
    mail from MAILER-DAEMON, nor for a delivery status notification sent with a sender."""
    sender = envelope.mail_from.strip()
    if not sender or "@" not in sender or sender.lower().startswith("mailer-daemon@"):
        return False
    return not is_delivery_status_notification(original)


def is_delivery_status_notification(original: bytes) -> bool:
    """Is the message itself a DSN (multipart/report; report-type=delivery-status)?"""
    headers, _ = split_headers(original)
    message = BytesHeaderParser().parsebytes(headers)
    return (
        message.get_content_type() == "multipart/report"
        and str(message.get_param("report-type", "")).lower() == "delivery-status"
    )


def status_code(result: RecipientResult) -> str:
    """The RFC 3463 status: from the reply when it has one, else the engine's, else by
    outcome (4.4.7: delivery time expired, for soft failures after the last retry)."""
    match = _ENHANCED.search(result.reply)
    if match and match.group(1) in "45":
        return ".".join(match.groups())
    if result.status:
        return result.status
    return "5.0.0" if result.kind == HARD else "4.4.7"


def transcript_text(results: Sequence[RecipientResult]) -> str:
    lines: list[str] = []
    seen: set[int] = set()
    for r in results:
        if id(r.transcript) in seen:
            continue
        seen.add(id(r.transcript))
        lines.append(f" {r.address}" + (f" ({category_text(r.category)})" if r.category else ""))
        lines.append("")
        lines.extend(r.transcript or [f"<-- {r.reply}"])
        lines.append("")
    return "\n".join(lines)


def _recipient_fields(r: RecipientResult, last_attempt: str) -> str:
    """RFC 3464 §2.3 fields of one recipient, in its order (extensions last);
    Remote-MTA only when a session with a server took place."""
    return (
        f"Final-Recipient: rfc822; {r.address}\n"
        "Action: failed\n"
        f"Status: {status_code(r)}\n"
        + (f"Remote-MTA: dns; {r.remote_mta}\n" if r.remote_mta else "")
        + (f"Diagnostic-Code: smtp; {r.reply}\n" if r.code else "")
        + f"Last-Attempt-Date: {last_attempt}\n"
        + (f"X-MailEngine-Reason: {r.reply}\n" if not r.code and r.reply else "")
        + (f"X-MailEngine-Category: {r.category}\n" if r.category else "")
    )


def build_dsn(
    envelope: Envelope,
    failures: Sequence[RecipientResult],
    original: bytes,
    *,
    hostname: str,
    now: float,
    dsn_id: str,
    boundary: str,
) -> bytes:
    """The whole DSN message (canonical bytes) for ``failures`` of ``envelope``."""
    headers, body = split_headers(original)
    copy = original if len(original) <= MAX_COPY_BYTES else original[:MAX_COPY_BYTES]
    cut = "" if copy is original else f"\n[... cut: the message has {len(original)} bytes]\n"
    addresses = "\n".join(r.address for r in failures)
    human = (
        f"Your message (id {envelope.message_id}) could not be delivered to\n\n"
        f"{addresses}\n\n"
        "A transcript of the session follows:\n"
        f"{transcript_text(failures)}\n"
        "---\n\n"
        "A copy of your message is reproduced below:\n\n"
        + copy.decode("utf-8", "replace").replace("\r\n", "\n")
        + cut
    )
    delivery_status = (
        f"Reporting-MTA: dns; {hostname}\n"
        f"Arrival-Date: {formatdate(envelope.time_created, localtime=True)}\n"
        f"X-MailEngine-Id: {envelope.message_id}\n\n"
    )
    last_attempt = envelope.time_finished if envelope.time_finished is not None else now
    per_recipient = "\n".join(
        _recipient_fields(r, formatdate(last_attempt, localtime=True)) for r in failures
    )
    text = (
        header_block(
            sender=postmaster(hostname),
            to=envelope.mail_from,
            subject="Undeliverable mail: delivery status notification (failure)",
            now=now,
            message_id=dsn_id,
            extra=(
                "Content-Type: multipart/report; report-type=delivery-status;\n"
                f' boundary="{boundary}"\n'
            ),
        )
        + "\nThis is a MIME-encapsulated delivery status notification.\n\n"
        f"--{boundary}\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n\n"
        f"{human}\n"
        f"--{boundary}\n"
        "Content-Type: message/delivery-status\n\n"
        f"{delivery_status}{per_recipient}\n"
        f"--{boundary}\n"
        "Content-Type: text/rfc822-headers\n\n"
        + headers.decode("utf-8", "replace").replace("\r\n", "\n")
        + f"\n--{boundary}--\n"
    )
    del body
    return finish(text)
