"""Value kinds of settings: how a TOML value is checked and what it becomes (pure)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

from mailengine.dns.bypass import BypassError, parse_bypass_line, split_address
from mailengine.policy.ipranges import (
    MAX_EXPANDED_ADDRESSES,
    IPRangeError,
    iter_bad_entries,
    parse_ip_ranges,
)

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class Invalid(ValueError):
    """A value that the kind does not allow; the text says what is allowed."""


# The manual's way to write retry intervals: "30,120,240,480,960" (§6).
_COMMA_NUMBERS = re.compile(r"^\s*\d+(?:\.\d+)?(?:\s*,\s*\d+(?:\.\d+)?)*\s*,?\s*$")


def _quoted_number(raw: Any, allowed: str) -> Invalid:
    """One rule for a number written as a string: refused, saying how to write it.

    TOML tells 81 from "81"; accepting the string in some places and not in others
    left operators guessing. Only the manual's comma form of retry intervals (a
    string there, as the manual writes it) is accepted.
    """
    text = str(raw).strip()
    hint = f"; write {text} without quotes" if re.fullmatch(r"-?\d+(?:\.\d+)?", text) else ""
    return Invalid(f"must be {allowed}, not the string {raw!r}{hint}")


def _is_hostname(text: str) -> bool:
    name = text.rstrip(".").lower()
    if not name or len(name) > 253:
        return False
    return all(_LABEL.match(label) for label in name.split("."))


def normalise_domain(text: str) -> str:
    """``@Example.COM`` or ``example.com.`` -> ``example.com`` (the manual writes both)."""
    return text.strip().lstrip("@").rstrip(".").lower()


@attrs.frozen
class Kind:
    """Base: accepts anything; subclasses check and convert."""

    def allowed(self) -> str:
        raise NotImplementedError

    def parse(self, raw: Any) -> Any:
        raise NotImplementedError

    def _list(self, raw: Any) -> list[Any]:
        if isinstance(raw, str):
            # An operator writing one entry without brackets meant a list of one.
            return [raw] if raw.strip() else []
        if not isinstance(raw, list):
            raise Invalid(f"must be a list: {self.allowed()}")
        return raw


@attrs.frozen
class Bool(Kind):
    def allowed(self) -> str:
        return "true or false"

    def parse(self, raw: Any) -> bool:
        if isinstance(raw, bool):
            return raw
        raise Invalid(f"must be {self.allowed()}")


@attrs.frozen
class Int(Kind):
    minimum: int = 0
    maximum: int | None = None
    also: tuple[int, ...] = ()
    unit: str = ""

    def allowed(self) -> str:
        span = f"a whole number ≥ {self.minimum}"
        if self.maximum is not None:
            span = f"a whole number from {self.minimum} to {self.maximum}"
        if self.unit:
            span += f" ({self.unit})"
        if self.also:
            span = " or ".join(str(v) for v in self.also) + ", or " + span
        return span

    def parse(self, raw: Any) -> int:
        if isinstance(raw, str):
            raise _quoted_number(raw, self.allowed())
        if isinstance(raw, bool) or not isinstance(raw, int):
            if isinstance(raw, float) and raw.is_integer():
                raw = int(raw)
            else:
                raise Invalid(f"must be {self.allowed()}")
        if raw in self.also:
            return raw
        if raw < self.minimum or (self.maximum is not None and raw > self.maximum):
            raise Invalid(f"must be {self.allowed()}")
        return raw


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _valid_address(text: str) -> bool:
    local, at, domain = text.rpartition("@")
    return bool(at and local and _is_hostname(domain)) and " " not in text


@attrs.frozen
class Text(Kind):
    """A string; subclasses say which non-empty strings they accept ("" always is)."""

    def allowed(self) -> str:
        return "a string"

    def accepts(self, text: str) -> bool:
        return True

    def parse(self, raw: Any) -> str:
        if not isinstance(raw, str):
            raise Invalid(f"must be {self.allowed()}")
        text = raw.strip()
        if text and not self.accepts(text):
            raise Invalid(f"must be {self.allowed()}")
        return text


@attrs.frozen
class Token(Text):
    """A shared secret: blank (none) or long enough not to be guessed."""

    minimum: int = 16

    def allowed(self) -> str:
        return f'"" or a string of at least {self.minimum} characters without spaces'

    def accepts(self, text: str) -> bool:
        return len(text) >= self.minimum and not any(c.isspace() for c in text)


@attrs.frozen
class Hostname(Text):
    blank: str = "the default"  # what "" means

    def allowed(self) -> str:
        return f'a host name like mailer.example.com, or "" for {self.blank}'

    def accepts(self, text: str) -> bool:
        return _is_hostname(text) or _is_ip(text)


@attrs.frozen
class Email(Text):
    def allowed(self) -> str:
        return 'one address like admin@example.com, or ""'

    def accepts(self, text: str) -> bool:
        return _valid_address(text)


@attrs.frozen
class IPAddress(Text):
    def allowed(self) -> str:
        return 'one IP address, or "" to let the system choose'

    def accepts(self, text: str) -> bool:
        return _is_ip(text)


@attrs.frozen
class HttpUrl(Text):
    def allowed(self) -> str:
        return 'an http:// or https:// URL like https://hooks.example.com/mail, or ""'

    def accepts(self, text: str) -> bool:
        scheme, sep, rest = text.partition("://")
        host = rest.split("/", 1)[0]
        return (
            bool(sep)
            and scheme.lower() in ("http", "https")
            and bool(host)
            and not any(c.isspace() for c in text)
        )


@attrs.frozen
class RedisUrl(Text):
    """``redis://[:password@]host[:port][/db]``: where cluster nodes share their caps."""

    def allowed(self) -> str:
        return (
            "a Redis URL like redis://127.0.0.1:6379/0 (redis://[:password@]host[:port][/db], "
            'port 1-65535, db 0-15), or "" for no cluster'
        )

    def accepts(self, text: str) -> bool:
        return parse_redis_url(text) is not None


def parse_redis_url(text: str) -> tuple[str, int, int, str] | None:
    """(host, port, db, password) of a ``redis://`` URL; None when it is not one."""
    scheme, sep, rest = text.partition("://")
    if scheme.lower() != "redis" or not sep or any(c.isspace() for c in text):
        return None
    where, _, db_text = rest.partition("/")
    password = ""
    if "@" in where:
        auth, _, where = where.rpartition("@")
        password = auth.partition(":")[2] if ":" in auth else auth
    host, port_text = where, "6379"
    if where.startswith("["):  # [::1]:6379
        host, _, after = where[1:].partition("]")
        port_text = after.removeprefix(":") or "6379"
    elif where.count(":") == 1:
        host, _, port_text = where.partition(":")
    if not host or not (_is_hostname(host) or _is_ip(host)):
        return None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        return None
    db_text = db_text.rstrip("/") or "0"
    if not db_text.isdigit() or int(db_text) > 15:
        return None
    return host, int(port_text), int(db_text), password


@attrs.frozen
class Path(Text):
    def allowed(self) -> str:
        return 'a file path, or ""'


@attrs.frozen
class DomainName(Text):
    """One domain name (``example.com``), or several dot-separated labels (a DKIM selector)."""

    what: str = "a domain name like example.com"

    def allowed(self) -> str:
        return self.what

    def parse(self, raw: Any) -> str:
        text = super().parse(raw)
        return normalise_domain(text) if text else text

    def accepts(self, text: str) -> bool:
        return _is_hostname(normalise_domain(text)) and not _is_ip(text)


_FIELD_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 §3.6.8: printable ASCII but ":"


@attrs.frozen
class HeaderNameList(Kind):
    """Header field names (any case, kept lower case): some required, some refused."""

    required: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()

    def allowed(self) -> str:
        text = "a list of header field names like subject"
        if self.required:
            text += f" that includes {', '.join(self.required)}"
        if self.refused:
            text += f" and none of {', '.join(self.refused)}"
        return text

    def parse(self, raw: Any) -> tuple[str, ...]:
        out: list[str] = []
        for item in self._list(raw):
            name = item.strip().lower() if isinstance(item, str) else ""
            if not _FIELD_NAME.match(name):
                raise Invalid(f"{item!r} is not a header field name; must be {self.allowed()}")
            if name in self.refused:
                raise Invalid(f"{item!r} may not be listed; must be {self.allowed()}")
            if name not in out:
                out.append(name)
        missing = [name for name in self.required if name not in out]
        if missing:
            raise Invalid(f"{', '.join(missing)} is missing; must be {self.allowed()}")
        return tuple(out)


@attrs.frozen
class CountOrAuto(Int):
    """A whole number, or ``"auto"`` (the caller decides what auto means, e.g. one per core)."""

    def allowed(self) -> str:
        return f'"auto" or {super().allowed()}'

    def parse(self, raw: Any) -> Any:  # int, or "auto"
        if isinstance(raw, str) and raw.strip().lower() == "auto":
            return "auto"
        if isinstance(raw, str):
            raise _quoted_number(raw, self.allowed())
        return super().parse(raw)


@attrs.frozen
class Choice(Kind):
    choices: tuple[str, ...] = ()

    def allowed(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def parse(self, raw: Any) -> str:
        if not isinstance(raw, str) or raw.strip() not in self.choices:
            raise Invalid(f"must be {self.allowed()}")
        return raw.strip()


@attrs.frozen
class IntervalList(Kind):
    """Retry intervals in minutes; fractions allowed; ``[0]`` means never retry."""

    def allowed(self) -> str:
        return (
            'a list of minutes > 0 like [30, 120, 240] (or the manual\'s "30,120,240"), '
            "or [0] to never retry"
        )

    def parse(self, raw: Any) -> tuple[float, ...]:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            raw = [raw]
        if isinstance(raw, str):
            if not _COMMA_NUMBERS.match(raw):
                raise Invalid(f"must be {self.allowed()}, not {raw!r}")
            raw = [float(p) for p in raw.split(",") if p.strip()]
        if not isinstance(raw, list) or not raw:
            raise Invalid(f"must be {self.allowed()}")
        values: list[float] = []
        for item in raw:
            if isinstance(item, str):
                raise _quoted_number(item, self.allowed())
            if isinstance(item, bool) or not isinstance(item, int | float) or item < 0:
                raise Invalid(f"must be {self.allowed()}")
            values.append(float(item))
        if values == [0.0]:
            return ()
        if any(v == 0 for v in values):
            raise Invalid(f"0 only stands alone; must be {self.allowed()}")
        return tuple(values)


@attrs.frozen
class Minutes(Kind):
    """A positive number of minutes; fractions allowed (0.5 = 30 seconds)."""

    def allowed(self) -> str:
        return "a number of minutes > 0, like 30 or 0.5"

    def parse(self, raw: Any) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not raw > 0:
            raise Invalid(f"must be {self.allowed()}")
        return float(raw)


@attrs.frozen
class Pattern(Text):
    """A regular expression (Python syntax), matched case-insensitively."""

    def allowed(self) -> str:
        return 'a regular expression like "TSS04|4\\.7\\.28|rate limit"'

    def parse(self, raw: Any) -> str:
        text = super().parse(raw)
        try:
            re.compile(text)
        except re.error as exc:
            raise Invalid(f"not a regular expression ({exc}); must be {self.allowed()}") from None
        return text


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@attrs.frozen
class Name(Text):
    """A short name for a rule or a pool (shown in the web admin and /metrics labels)."""

    def allowed(self) -> str:
        return "a name of letters, digits, '-', '_' and '.' (64 at most), like google"

    def accepts(self, text: str) -> bool:
        return bool(_NAME.match(text))


@attrs.frozen
class HostSuffixList(Kind):
    def allowed(self) -> str:
        return 'a list of host name endings like ".google.com"'

    def parse(self, raw: Any) -> tuple[str, ...]:
        out: list[str] = []
        for item in self._list(raw):
            text = item.strip().lower() if isinstance(item, str) else ""
            if not _is_hostname(text.lstrip(".")):
                raise Invalid(f"{item!r} is not a host name ending; must be {self.allowed()}")
            out.append(text)
        return tuple(out)


@attrs.frozen
class _CheckedList(Kind):
    """A list of strings each of which must be one thing (``what``), kept as written."""

    what = "a value"
    plural = "values"
    example = "[]"

    def allowed(self) -> str:
        return f"a list of {self.plural} like {self.example}"

    def accepts(self, text: str) -> bool:
        raise NotImplementedError

    def parse(self, raw: Any) -> tuple[str, ...]:
        out: list[str] = []
        for item in self._list(raw):
            text = item.strip() if isinstance(item, str) else ""
            if not self.accepts(text):
                raise Invalid(f"{item!r} is not {self.what}; must be {self.allowed()}")
            out.append(text)
        return tuple(out)


@attrs.frozen
class AddressIPList(_CheckedList):
    """Single IP addresses (no ranges): each one is bound as a source address."""

    what = "an IP address"
    plural = "IP addresses"
    example = '["192.0.2.10", "192.0.2.11"]'

    def accepts(self, text: str) -> bool:
        return _is_ip(text)


@attrs.frozen
class HostnameList(_CheckedList):
    """Host names said in EHLO/HELO, one per source address of an egress pool."""

    what = "a host name"
    plural = "host names"
    example = '["mta1.example.com", "mta2.example.com"]'

    def accepts(self, text: str) -> bool:
        return _is_hostname(text)


@attrs.frozen
class IPList(Kind):
    zero_means: str = "everyone"  # "": the manual's "0" is not allowed in this list

    def allowed(self) -> str:
        text = "a list of IP addresses, ranges like 10.0.0.1-10.0.0.9, CIDR like 10.0.0.0/24"
        return f'{text}, or "0" ({self.zero_means})' if self.zero_means else text

    def parse(self, raw: Any) -> Any:
        entries = [str(e) for e in self._list(raw)]
        bad = list(iter_bad_entries(entries))  # every bad entry at once
        if bad:
            raise Invalid("; ".join(bad))
        ranges = parse_ip_ranges(entries)
        if ranges.has_zero and not self.zero_means:
            raise Invalid(f'"0" has no meaning here; must be {self.allowed()}')
        return ranges


@attrs.frozen
class ListenList(IPList):
    """Addresses to listen on: each address of a range or CIDR gets its own socket."""

    zero_means: str = ""

    def allowed(self) -> str:
        return f"{super().allowed()} ({MAX_EXPANDED_ADDRESSES} addresses at most)"

    def parse(self, raw: Any) -> Any:
        ranges = super().parse(raw)
        try:
            count = len(ranges.addresses())
        except IPRangeError:
            count = MAX_EXPANDED_ADDRESSES + 1
        if count > MAX_EXPANDED_ADDRESSES:
            raise Invalid(f"names too many addresses to listen on; must be {self.allowed()}")
        return ranges


@attrs.frozen
class DomainList(Kind):
    allow_everything: bool = False

    def allowed(self) -> str:
        extra = ', or "@" / "." for every address' if self.allow_everything else ""
        return f"a list of domain names like example.com{extra}"

    def parse(self, raw: Any) -> tuple[str, ...]:
        out: list[str] = []
        for item in self._list(raw):
            if not isinstance(item, str):
                raise Invalid(f"must be {self.allowed()}")
            text = item.strip()
            if self.allow_everything and text in ("@", "."):
                out.append(text)
                continue
            name = normalise_domain(text)
            if not _is_hostname(name):
                raise Invalid(f"{item!r} is not a domain name; must be {self.allowed()}")
            out.append(name)
        return tuple(out)


@attrs.frozen
class TextList(Kind):
    what: str = "strings"

    def allowed(self) -> str:
        return f"a list of {self.what}"

    def parse(self, raw: Any) -> tuple[str, ...]:
        out: list[str] = []
        for item in self._list(raw):
            if not isinstance(item, str):
                raise Invalid(f"must be {self.allowed()}")
            if item.strip():
                out.append(item.strip())
        return tuple(out)


@attrs.frozen
class AddressList(Kind):
    def allowed(self) -> str:
        return "a list of addresses like ops@example.com"

    def parse(self, raw: Any) -> tuple[str, ...]:
        out: list[str] = []
        for item in self._list(raw):
            if not isinstance(item, str) or not _valid_address(item.strip()):
                raise Invalid(f"{item!r} is not an address; must be {self.allowed()}")
            out.append(item.strip())
        return tuple(out)


@attrs.frozen
class SubsetList(Kind):
    choices: tuple[str, ...] = ()

    def allowed(self) -> str:
        return "a list drawn from " + ", ".join(repr(c) for c in self.choices)

    def parse(self, raw: Any) -> tuple[str, ...]:
        out: list[str] = []
        for item in self._list(raw):
            if not isinstance(item, str) or item.strip().upper() not in self.choices:
                raise Invalid(f"{item!r} is not allowed; must be {self.allowed()}")
            out.append(item.strip().upper())
        return tuple(out)


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """``ip``, ``ip:port`` or ``[v6]:port`` -> (ip, port); ValueError when malformed."""
    host, port_text = split_address(text)
    port = int(port_text) if port_text is not None else default_port
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(text)
    return host, port


@attrs.frozen
class ServerList(Kind):
    def allowed(self) -> str:
        return 'a list of DNS servers as "ip" or "ip:port" (empty: the system\'s resolv.conf)'

    def parse(self, raw: Any) -> tuple[tuple[str, int], ...]:
        out: list[tuple[str, int]] = []
        for item in self._list(raw):
            try:
                out.append(parse_host_port(str(item), 53))
            except ValueError:
                raise Invalid(f"{item!r} is not a server; must be {self.allowed()}") from None
        return tuple(out)


@attrs.frozen
class BypassList(Kind):
    def allowed(self) -> str:
        return 'a list of "domain,host,MX|NS,ip[:port]" lines'

    def parse(self, raw: Any) -> tuple[Any, ...]:
        out = []
        for item in self._list(raw):
            try:
                out.append(parse_bypass_line(str(item)))
            except BypassError as exc:
                raise Invalid(f"{exc}; must be {self.allowed()}") from None
        return tuple(out)


@attrs.frozen
class Field:
    """One key of the tables of a ``TableList``: its kind, whether it must be given, an example."""

    name: str
    kind: Kind
    example: Any
    required: bool = True
    default: Any = None  # the parsed value when an optional field is left out


class Row(Mapping[str, Any]):
    """One parsed table of a ``TableList``: field values by name, also as attributes."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self._values.items())))

    def __repr__(self) -> str:
        return f"Row({self._values!r})"


@attrs.frozen
class TableList(Kind):
    """A TOML array of tables (``[[section.key]]`` blocks), each table checked field by field.

    The setting's value is a list of tables; every problem of every table is
    reported at once, naming the table by its position (1 = the first block).
    ``unique`` names fields whose values together may appear in one table only.
    """

    fields: tuple[Field, ...] = ()
    unique: tuple[str, ...] = ()

    def allowed(self) -> str:
        parts = [
            f"{f.name}{'' if f.required else ' (optional)'}: {f.kind.allowed()}"
            for f in self.fields
        ]
        return "tables with " + "; ".join(parts)

    def example(self) -> dict[str, Any]:
        return {f.name: f.example for f in self.fields}

    def parse(self, raw: Any) -> tuple[Row, ...]:
        if isinstance(raw, Mapping):
            raw = [raw]  # one table written as an inline table
        if not isinstance(raw, list):
            raise Invalid(f"must be a list of tables: {self.allowed()}")
        rows: list[Row] = []
        problems: list[str] = []
        seen: dict[tuple[Any, ...], int] = {}
        for number, table in enumerate(raw, 1):
            if not isinstance(table, Mapping):
                problems.append(f"entry {number} is not a table")
                continue
            row, row_problems = self._row(table)
            problems.extend(f"entry {number}: {p}" for p in row_problems)
            if row_problems:
                continue
            ident = tuple(row[name] for name in self.unique)
            if self.unique and ident in seen:
                pairs = zip(self.unique, ident, strict=True)
                which = ", ".join(f"{n} = {toml_literal(v)}" for n, v in pairs)
                problems.append(f"entry {number} repeats entry {seen[ident]} ({which})")
                continue
            seen[ident] = number
            rows.append(row)
        if problems:
            raise Invalid("; ".join(problems))
        return tuple(rows)

    def _row(self, table: Mapping[str, Any]) -> tuple[Row, list[str]]:
        names = [f.name for f in self.fields]
        problems = [
            f"{key} is not a field (fields: {', '.join(names)})"
            for key in table
            if key not in names
        ]
        values: dict[str, Any] = {}
        for f in self.fields:
            if f.name not in table:
                if f.required:
                    problems.append(f"{f.name} is missing ({f.kind.allowed()})")
                values[f.name] = f.default
                continue
            try:
                values[f.name] = f.kind.parse(table[f.name])
            except Invalid as exc:
                problems.append(f"{f.name} = {shown(table[f.name])}: {exc}")
            else:
                if f.required and values[f.name] in ("", ()):
                    problems.append(f"{f.name} must not be blank ({f.kind.allowed()})")
        return Row(values), problems


def shown(value: Any) -> str:
    """A value as TOML spells it when it can be, else as Python does (error messages)."""
    try:
        return toml_literal(value)
    except TypeError:
        return repr(value)


def toml_literal(value: Any) -> str:
    """The TOML spelling of a default, for the template and the web admin."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Mapping):  # an inline table
        return "{" + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    raise TypeError(value)
