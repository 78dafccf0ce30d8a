"""DKIM in the web admin: keys listed with their TXT records (never the private key); the
[[dkim.key]] tables edited as TOML blocks on the settings page and through the JSON API."""

from __future__ import annotations

import html
import tomllib

import pytest

from mailengine.config.loader import load_config
from mailengine.signing.keys import DkimKey, generate_key, pem, txt_record
from mailengine.signing.signer import Signer

KEYS_TEXT = """[[dkim.key]]
domain = "example.com"
selector = "s2026"
key_file = "dkim/example.com.s2026.key"

[[dkim.key]]
domain = "example.com"
selector = "ed2026"
key_file = "dkim/example.com.ed2026.key"
"""


@pytest.fixture
def keys():
    return [
        DkimKey("example.com", "s2026", "/etc/k/rsa.key", generate_key("rsa")),
        DkimKey("example.com", "ed2026", "/etc/k/ed.key", generate_key("ed25519")),
    ]


def test_the_settings_page_lists_the_keys_in_use_with_their_txt_records_never_the_private_key(
    admin, keys
):
    admin.engine.signer = Signer(keys)
    page = admin.get("/gui/admin/settings").text
    assert "<h2>DKIM</h2>" in page and 'id="dkim-keys"' in page
    for key in keys:
        assert html.escape(txt_record(key.private)) in page
        assert f"{key.selector}._domainkey.example.com" in page
        secret = b"".join(pem(key.private).splitlines()[1:-1])[:40].decode()
        assert secret not in page
    assert "PRIVATE KEY" not in page
    listed = admin.get("/api/dkim/keys").json()["keys"]
    assert [(k["selector"], k["algorithm"]) for k in listed] == [
        ("s2026", "rsa"),
        ("ed2026", "ed25519"),
    ]
    assert listed[1]["txt_record"] == txt_record(keys[1].private)
    assert "PRIVATE" not in str(listed)


def test_without_keys_the_page_says_relay_mail_goes_unsigned(admin):
    assert "No DKIM keys: relay mail is sent unsigned." in admin.get("/gui/admin/settings").text
    assert admin.get("/api/dkim/keys").json() == {"keys": []}


def dkim_form(admin, **fields):
    data = {
        "group": "DKIM",
        "fields": "dkim.key",
        "dkim.key": "",
    }
    data.update(fields)
    return admin.post_form("/gui/admin/settings", data)


def test_key_tables_are_edited_as_toml_blocks_and_written_as_arrays_of_tables(admin):
    r = dkim_form(admin, **{"dkim.key": KEYS_TEXT})
    assert r.code == 303
    path = admin.engine.config.path
    with open(path, "rb") as fh:
        written = tomllib.load(fh)["dkim"]["key"]
    assert [t["selector"] for t in written] == ["s2026", "ed2026"]
    assert "dkim.key: applies after restart" in admin.get(r.header("location")).text
    assert [row.selector for row in load_config(path).dkim.key] == ["s2026", "ed2026"]
    page = admin.get("/gui/admin/settings").text
    assert html.escape('[[dkim.key]]\ndomain = "example.com"\nselector = "s2026"') in page
    assert admin.get("/api/settings/dkim/key").json()["value"] == written


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[[dkim.key]]\ndomain = "example.com"\n', "entry 1: selector is missing"),
        ("[[dkim.key]\n", "must be a list of tables"),
        ('[[dkim.key]]\ndomain = "x y"\nselector = "s"\nkey_file = "k"\n', "entry 1: domain"),
    ],
)
def test_bad_key_tables_are_shown_inline_and_nothing_is_saved(admin, text, problem):
    with open(admin.engine.config.path, encoding="utf-8") as fh:
        before = fh.read()
    r = dkim_form(admin, **{"dkim.key": text})
    assert r.code == 400 and problem in r.text
    assert html.escape(text) in r.text  # the operator's text stays in the field
    with open(admin.engine.config.path, encoding="utf-8") as fh:
        assert fh.read() == before


def test_key_tables_set_through_the_json_api_are_validated_and_saved(admin):
    headers = {"X-CSRF-Token": [admin.csrf]}
    tables = tomllib.loads(KEYS_TEXT)["dkim"]["key"]
    r = admin.request("put", "/api/settings/dkim/key", json={"value": tables}, headers=headers)
    assert r.code == 200 and r.json()["applies"] != "now"
    assert [row.domain for row in admin.engine.config.dkim.key] == ["example.com"] * 2
    bad = [{"domain": "example.com", "selector": "s2026", "key_file": "a"}] * 2
    r = admin.request("put", "/api/settings/dkim/key", json={"value": bad}, headers=headers)
    assert r.code == 400 and "entry 2 repeats entry 1" in r.json()["error"]
