"""Arrays of tables (``[[section.key]]``) as settings: loaded, checked, written back, shown."""

from __future__ import annotations

import tomllib

import pytest

from mailengine.config import ConfigError, load_config
from mailengine.config import kinds as k
from mailengine.config.persist import change_setting, tables_as_text, tables_from_text
from mailengine.config.template import render_template

KEYS = """
[dkim]
canonicalization = "relaxed/simple"

[[dkim.key]]
domain = "Example.COM"
selector = "s2026"
key_file = "dkim/example.com.s2026.key"

[[dkim.key]]
domain = "example.com"
selector = "ed2026"
key_file = "dkim/example.com.ed2026.key"
"""


def write(tmp_path, text):
    path = tmp_path / "mailengine.toml"
    path.write_text(text)
    return str(path)


def test_dkim_keys_load_as_rows_with_normalised_fields_beside_plain_dkim_settings(tmp_path):
    config = load_config(write(tmp_path, KEYS))
    first, second = config.dkim.key
    assert (first.domain, first.selector, first.key_file) == (
        "example.com",
        "s2026",
        "dkim/example.com.s2026.key",
    )
    assert second["selector"] == "ed2026"
    assert config.dkim.canonicalization == "relaxed/simple"
    assert config.raw("dkim", "key")[0]["domain"] == "Example.COM"  # as the file spells it


def test_no_tables_means_an_empty_list(tmp_path):
    assert load_config(write(tmp_path, "")).dkim.key == ()


def test_every_problem_of_every_table_is_reported_naming_the_entry_and_field(tmp_path):
    path = write(
        tmp_path,
        """
[[dkim.key]]
domain = "example.com"
selector = "s 1"
key_file = "a.key"
colour = "red"

[[dkim.key]]
selector = "s2"
key_file = ""

[[dkim.key]]
domain = "example.com"
selector = "S 1"
key_file = "b.key"

[[dkim.key]]
domain = "example.org"
selector = "s2"
key_file = "c.key"

[[dkim.key]]
domain = "EXAMPLE.org."
selector = "s2"
key_file = "d.key"
""",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: [[dkim.key]] entry 1: colour is not a field")
    assert 'entry 1: selector = "s 1": must be a DKIM selector' in problem
    assert "entry 2: domain is missing (a domain name like example.com)" in problem
    assert "entry 2: key_file must not be blank" in problem
    assert "entry 3: selector" in problem
    assert "entry 4:" not in problem
    assert 'entry 5 repeats entry 4 (domain = "example.org", selector = "s2")' in problem


def test_tables_written_as_a_plain_value_are_refused_with_what_is_allowed(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, '[dkim]\nkey = "example.com"\n'))
    assert "must be a list of tables: tables with domain: a domain name" in str(info.value)


def test_changing_the_tables_rewrites_them_as_blocks_keeping_the_rest_of_the_file(tmp_path):
    path = write(tmp_path, "# mine\n[web]\nport = 8081\n" + KEYS)
    config = load_config(path)
    new = [{"domain": "example.net", "selector": "s1", "key_file": "n.key"}]
    change_setting(config, "dkim", "key", new)
    text = (tmp_path / "mailengine.toml").read_text(encoding="utf-8")
    assert "# mine" in text and "[[dkim.key]]" in text and "example.com" not in text
    assert tomllib.loads(text)["dkim"] == {"canonicalization": "relaxed/simple", "key": new}
    assert load_config(path).dkim.key[0].domain == "example.net"
    change_setting(config, "dkim", "headers", ["from", "subject"])  # a plain key beside them
    assert load_config(path).dkim.headers == ("from", "subject")
    with pytest.raises(ConfigError):
        change_setting(config, "dkim", "key", [{"domain": "x"}])
    assert load_config(path).dkim.key[0].domain == "example.net"  # nothing written


def test_tables_round_trip_through_their_form_text():
    tables = [{"domain": "a.test", "selector": "s", "key_file": "k"}] * 2
    text = tables_as_text("dkim", "key", tables)
    assert text.count("[[dkim.key]]") == 2
    assert tables_from_text("dkim", "key", text) == tables
    assert tables_from_text("dkim", "key", "  ") == []
    assert tables_from_text("dkim", "key", "[[dkim.key]\n") == "[[dkim.key]\n"  # kind refuses


def test_the_template_shows_a_commented_example_block_after_the_plain_keys():
    text = render_template()
    dkim = text[text.index("[dkim]") :]
    assert dkim.index("canonicalization =") < dkim.index("# [[dkim.key]]")
    assert '# domain = "example.com"' in dkim
    assert "dkim" not in tomllib.loads(text) or "key" not in tomllib.loads(text)["dkim"]


def test_a_table_list_kind_is_generic_with_optional_fields_and_defaults():
    kind = k.TableList(
        fields=(
            k.Field("name", k.Text(), "a"),
            k.Field("weight", k.Int(minimum=1), 1, required=False, default=1),
        )
    )
    rows = kind.parse([{"name": "x"}, {"name": "y", "weight": 5}])
    assert [(r.name, r.weight) for r in rows] == [("x", 1), ("y", 5)]
    assert kind.parse({"name": "z"})[0].name == "z"  # an inline table alone
    with pytest.raises(k.Invalid, match="entry 1: weight = 0: must be a whole number ≥ 1"):
        kind.parse([{"name": "x", "weight": 0}])
    with pytest.raises(k.Invalid, match="entry 2 is not a table"):
        kind.parse([{"name": "x"}, 3])
    assert k.toml_literal([{"name": "x", "weight": 2}]) == '[{name = "x", weight = 2}]'


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (["to", "subject"], "from is missing"),
        (["from", "received"], "'received' may not be listed"),
        (["from", "x y"], "'x y' is not a header field name"),
        (["from", "a:b"], "'a:b' is not a header field name"),
    ],
)
def test_dkim_headers_must_sign_from_and_nothing_relays_add(tmp_path, raw, problem):
    path = write(tmp_path, f"[dkim]\nheaders = {k.toml_literal(raw)}\n")
    with pytest.raises(ConfigError, match=problem):
        load_config(path)
    assert load_config(
        write(tmp_path, '[dkim]\nheaders = ["FROM", "From", "X-Id"]\n')
    ).dkim.headers == ("from", "x-id")
