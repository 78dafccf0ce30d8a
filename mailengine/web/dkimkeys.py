"""The DKIM keys the engine signs with, as the DNS records to publish (never the private keys)."""

from __future__ import annotations

from typing import Any

from mailengine.signing.keys import DkimKey
from mailengine.web.admin import Routes, WebAdmin
from mailengine.web.render import Html, el


def key_json(key: DkimKey) -> dict[str, Any]:
    return {
        "domain": key.domain,
        "selector": key.selector,
        "algorithm": key.algorithm,
        "key_file": key.path,
        "dns_name": key.dns_name,
        "txt_record": key.txt_record(),
    }


def keys_in_use(keys: list[DkimKey]) -> Html:
    """A table of the keys read at start: where each TXT record goes and what it says."""
    if not keys:
        return el("p", "No DKIM keys: relay mail is sent unsigned.", class_="muted")
    rows = [
        el(
            "tr",
            el("td", key.domain),
            el("td", key.selector),
            el("td", key.algorithm),
            el("td", el("code", key.dns_name)),
            el("td", el("code", key.txt_record(), class_="txt-record")),
        )
        for key in keys
    ]
    head = el(
        "tr", [el("th", t) for t in ("Domain", "Selector", "Kind", "TXT record at", "Record")]
    )
    return el(
        "div",
        el("h3", "Keys in use (read at start)"),
        el("table", el("thead", head), el("tbody", rows), class_="dkim-keys"),
        el(
            "p",
            "Publish each record as TXT at its name; check with ",
            el("code", "mailengine dkim check DOMAIN"),
            ".",
            class_="muted small",
        ),
        id="dkim-keys",
    )


def all_keys(admin: WebAdmin) -> list[DkimKey]:
    return [key for keys in admin.engine.signer.by_domain.values() for key in keys]


def add_routes(app: Routes, admin: WebAdmin) -> None:
    @app.route("/api/dkim/keys", methods=["GET"])
    def keys(request: Any) -> bytes:
        return admin.json(request, {"keys": [key_json(k) for k in all_keys(admin)]})
