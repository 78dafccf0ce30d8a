"""A message's metadata as the engine uses it, converted to and from ``.inf`` fields (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

from mailengine.observe.timestamps import format_retry, format_stamp, parse_retry, parse_stamp
from mailengine.queue import inf
from mailengine.scheduler.retry import MAX_PRIORITY

ADDRESS_KEYS = {
    "rcpttosend": "rcpt_to_send",
    "rcptsent": "rcpt_sent",
    "rcptfailed": "rcpt_failed",
    "rcpttransient": "rcpt_transient",
}
# Keys of received messages (manual §5); kept as text.
RECEIVED_KEYS = ("helo", "peertcpip", "peerhostname", "localhostname", "localtcpip", "datasize")
MANAGED_KEYS = {
    "messageid",
    "mailfrom",
    "log",
    "timecreated",
    "timefinished",
    "priority",
    "retrytime",
    "sendtries",
    "status",
    *ADDRESS_KEYS,
}
# Numbers in ASCII digits only: int() would also take "1_000", " 7" or Arabic-Indic digits.
_NUMBER = re.compile(r"^-?[0-9]{1,18}$")
# An address goes on the wire inside <...>: no white space, brackets, commas or controls.
_ADDRESS = re.compile(r"^[^\s<>,\x00-\x1f\x7f]+@[^\s<>,@\x00-\x1f\x7f]+$")


@attrs.define(eq=False)
class Envelope:
    """Sender, recipients by state, retry bookkeeping, and every other key kept verbatim."""

    message_id: str
    mail_from: str
    rcpt_to_send: list[str]
    time_created: float
    rcpt_sent: list[str] = attrs.field(factory=list)
    rcpt_failed: list[str] = attrs.field(factory=list)
    rcpt_transient: list[str] = attrs.field(factory=list)
    priority: int = 0
    send_tries: int = 0
    retry_time: float | None = None
    time_finished: float | None = None
    status: str = ""
    log: list[str] = attrs.field(factory=list)
    # helo, peertcpip, ... and keys written by other programs, preserved on rewrite.
    other: dict[str, str] = attrs.field(factory=dict)

    def add_log(self, now: float, text: str) -> None:
        """Append ``YYYY/MM/DD HH:MM:SS: text`` to the attempt log (manual §5)."""
        self.log.append(f"{format_stamp(now)}: {text.replace('|', '/')}")

    def to_fields(self) -> dict[str, str]:
        fields = dict(self.other)
        fields["messageid"] = self.message_id
        fields["mailfrom"] = self.mail_from
        fields["timecreated"] = format_stamp(self.time_created)
        fields["priority"] = str(self.priority)
        fields["sendtries"] = str(self.send_tries)
        for key, attr in ADDRESS_KEYS.items():
            fields[key] = inf.format_address_list(getattr(self, attr))
        if self.log:
            fields["log"] = "|".join(self.log) + "|"
        if self.retry_time is not None:
            fields["retrytime"] = format_retry(self.retry_time)
        if self.time_finished is not None:
            fields["timefinished"] = format_stamp(self.time_finished)
        if self.status:
            fields["status"] = self.status
        return fields

    def to_inf(self) -> str:
        return inf.format_inf(self.to_fields())

    @property
    def received_size(self) -> int:
        try:
            return int(self.other.get("datasize", "0"))
        except ValueError:
            return 0


def _int(fields: Mapping[str, str], key: str, default: int) -> int:
    value = fields.get(key, "").strip()
    if not value:
        return default
    if not _NUMBER.match(value):
        raise inf.InfError(f"{key}={value!r} is not a whole number")
    return int(value)


def is_valid_address(address: str) -> bool:
    """``local@domain`` that can go between ``<`` and ``>`` on the wire unchanged."""
    return bool(_ADDRESS.match(address))


def _addresses(fields: Mapping[str, str], key: str) -> list[str]:
    found = inf.parse_address_list(fields.get(key, ""))
    for address in found:
        if not is_valid_address(address):
            raise inf.InfError(f"{key}= holds {address[:80]!r}, which is not an address")
    return found


def _sender(fields: Mapping[str, str]) -> str:
    sender = fields["mailfrom"].strip().strip("<>")
    if sender and not is_valid_address(sender):
        raise inf.InfError(f"mailfrom={sender[:80]!r} is not an address (or empty)")
    return sender


def envelope_from_fields(
    fields: Mapping[str, str], message_id: str, *, now: float, require_recipients: bool = True
) -> Envelope:
    """Build an Envelope from parsed ``.inf`` fields; InfError says what is wrong.

    ``message_id`` is the file name without extension: it wins over a
    ``messageid`` key that disagrees (the file is what the engine moves).
    """
    if "mailfrom" not in fields:
        raise inf.InfError("no mailfrom= line")
    recipients = {attr: _addresses(fields, key) for key, attr in ADDRESS_KEYS.items()}
    if require_recipients and not recipients["rcpt_to_send"]:
        raise inf.InfError("rcpttosend= names no recipient")
    try:
        created = parse_stamp(fields["timecreated"]) if fields.get("timecreated") else now
        retry = parse_retry(fields["retrytime"]) if fields.get("retrytime") else None
        finished = parse_stamp(fields["timefinished"]) if fields.get("timefinished") else None
    except ValueError as exc:
        raise inf.InfError(str(exc)) from None
    priority = min(max(_int(fields, "priority", 0), 0), MAX_PRIORITY)
    _int(fields, "datasize", 0)  # only checked: a number or absent
    log = [entry for entry in fields.get("log", "").split("|") if entry.strip()]
    other = {k: v for k, v in fields.items() if k not in MANAGED_KEYS}
    return Envelope(
        message_id=message_id,
        mail_from=_sender(fields),
        time_created=created,
        priority=priority,
        send_tries=_int(fields, "sendtries", 0),
        retry_time=retry,
        time_finished=finished,
        status=fields.get("status", ""),
        log=log,
        other=other,
        **recipients,
    )


def parse_envelope(
    text: str, message_id: str, *, now: float, require_recipients: bool = True
) -> Envelope:
    return envelope_from_fields(
        inf.parse_inf(text), message_id, now=now, require_recipients=require_recipients
    )
