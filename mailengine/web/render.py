"""HTML for the web admin: an escaping element builder, number and age formats, the page frame.

Everything that reaches a page passes ``el``/``esc``: text is escaped unless it
is already ``Html`` built here, so queue contents and settings cannot inject markup.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

NONE = "\u2014"  # an em dash: "nothing here" in a table cell
VOID_TAGS = frozenset({"br", "hr", "img", "input", "link", "meta", "col"})


class Html(str):
    """Markup that is safe to send as is."""

    __slots__ = ()


def esc(value: object) -> Html:
    if isinstance(value, Html):
        return value
    return Html(html.escape(str(value), quote=True))


def _flatten(children: Iterable[Any]) -> Iterable[Any]:
    for child in children:
        if child is None or child is False:
            continue
        if isinstance(child, list | tuple) or (
            not isinstance(child, str) and hasattr(child, "__next__")
        ):
            yield from _flatten(child)
        else:
            yield child


def _attr_name(name: str) -> str:
    # class_ -> class, data_refresh -> data-refresh, stroke_width -> stroke-width
    return name.rstrip("_").replace("_", "-")


def el(tag: str, *children: Any, **attributes: Any) -> Html:
    """``<tag attributes>children</tag>``; str children and attribute values are escaped."""
    parts = ["<", tag]
    for name, value in attributes.items():
        if value is None or value is False:
            continue
        if value is True:
            parts.append(f" {_attr_name(name)}")
        else:
            parts.append(f' {_attr_name(name)}="{html.escape(str(value), quote=True)}"')
    parts.append(">")
    if tag in VOID_TAGS:
        return Html("".join(parts))
    parts.extend(esc(child) for child in _flatten(children))
    parts.append(f"</{tag}>")
    return Html("".join(parts))


def join(items: Iterable[Any], sep: str = "") -> Html:
    return Html(esc(sep).join(esc(i) for i in _flatten(items)))


def num(value: Any, *, big: bool = False) -> Html:
    """A right-aligned number cell."""
    return el("td", value, class_="num big" if big else "num")


def tr(*cells: Any) -> Html:
    """A table row; cells that are not already ``<td>`` become plain cells."""
    return el(
        "tr", [c if isinstance(c, Html) and c.startswith("<td") else el("td", c) for c in cells]
    )


def grid(columns: Iterable[str], rows: Iterable[Html], empty: str = "") -> Html:
    """A data table; a column title starting with "#" is a number column.

    With no rows and an ``empty`` text, that text instead of an empty table.
    """
    rows = list(rows)
    if not rows and empty:
        return el("p", empty, class_="muted")
    head = el(
        "tr",
        [el("th", c.lstrip("#"), class_="num" if c.startswith("#") else None) for c in columns],
    )
    return el("table", head, rows, class_="grid")


def url(path: str, **query: Any) -> str:
    """``path?query`` with empty values left out."""
    kept = {k: v for k, v in query.items() if v not in (None, "", 0)}
    return path + ("?" + urlencode(kept, doseq=True) if kept else "")


def id_path(message_id: str) -> str:
    return quote(message_id, safe="@=+")


# -- numbers and times ---------------------------------------------------------


def count(n: float) -> str:
    """``12345`` -> ``12,345``."""
    return f"{round(n):,}"


def kilobytes(n_bytes: float) -> str:
    """``2048`` -> ``2 KB``; under 1 KB in bytes, so a small message is not "0 KB"."""
    if 0 < n_bytes < 1024:
        return f"{int(n_bytes)} bytes"
    return f"{count(n_bytes / 1024)} KB"


def local_time(epoch: float, fmt: str = "%H:%M:%S") -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).astimezone().strftime(fmt)


# -- the page frame -------------------------------------------------------------

NAV = (
    ("dashboard", "Dashboard", "/gui/admin"),
    ("queue", "Queue", "/gui/admin/queue"),
    ("destinations", "Destinations", "/gui/admin/destinations"),
    ("suppression", "Suppression", "/gui/admin/suppression"),
    ("settings", "Settings", "/gui/admin/settings"),
    ("logs", "Logs", "/gui/admin/logs"),
    ("controls", "Controls", "/gui/admin/controls"),
)


def csrf_field(token: str) -> Html:
    return el("input", type="hidden", name="csrf", value=token)


def post_button(target: str, label: str, csrf: str, *, cls: str = "", **fields: str) -> Html:
    """A one-button form that POSTs ``fields`` (and the CSRF token) to ``target``."""
    hidden = [el("input", type="hidden", name=k, value=v) for k, v in fields.items()]
    return el(
        "form",
        csrf_field(csrf),
        hidden,
        el("button", label, type="submit", class_=cls or None),
        method="post",
        action=target,
        class_="inline",
    )


def flash_box(message: str, kind: str = "ok") -> Html:
    return el("div", message, class_=f"flash {kind}", role="status") if message else Html("")


def layout(
    title: str,
    body: Any,
    *,
    active: str = "",
    hostname: str = "",
    user: str = "",
    csrf: str = "",
) -> bytes:
    """A whole page: head, navigation (when logged in), body."""
    nav = None
    if user:
        links = [
            el("a", label, href=href, class_="active" if key == active else None)
            for key, label, href in NAV
        ]
        nav = el(
            "nav",
            el("span", "MailEngine", class_="brand"),
            el("span", hostname, class_="host"),
            el("div", links, class_="links"),
            el(
                "div",
                el("span", user, class_="user"),
                post_button("/gui/admin/logout", "Log out", csrf, cls="link"),
                class_="account",
            ),
        )
    head = el(
        "head",
        el("meta", charset="utf-8"),
        el("meta", name="viewport", content="width=device-width, initial-scale=1"),
        el("meta", name="csrf-token", content=csrf) if csrf else None,
        el("title", f"{title} · MailEngine {hostname}".strip()),
        el("link", rel="stylesheet", href="/static/admin.css"),
        el("script", src="/static/admin.js", defer=True),
    )
    page = el("html", head, el("body", nav, el("main", body)), lang="en")
    return ("<!doctype html>\n" + page).encode("utf-8")
