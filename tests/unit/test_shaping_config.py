"""[[shaping.rule]], [[shaping.reaction]] and [[egress.pool]]: validated, applied, written back."""

from __future__ import annotations

import pytest

from mailengine.config import ConfigError, load_config
from mailengine.config.persist import change_setting
from mailengine.delivery.destinations import rulebook_from

RULES = """
[shaping]
# the big provider
[[shaping.rule]]
name = "google"
domains = ["Gmail.com", "googlemail.com"]
mx_suffixes = [".google.com"]
max_connections = 20
max_messages_per_minute = 600
pool = "bulk"

[[shaping.reaction]]
pattern = "TSS04|4\\\\.7\\\\.28"
action = "suspend"
minutes = 0.5

[[egress.pool]]
name = "bulk"
source_ips = ["127.0.0.2", "127.0.0.3"]
helo_names = ["out2.me.test", "out3.me.test"]
"""


def write(tmp_path, text):
    path = tmp_path / "mailengine.toml"
    path.write_text(text)
    return str(path)


def test_rules_reactions_and_pools_load_into_a_rulebook(tmp_path):
    book = rulebook_from(load_config(write(tmp_path, RULES)))
    rule = book.for_domain("gmail.com")
    assert rule is not None and rule.name == "google" and rule.max_connections == 20
    assert rule.max_messages_per_connection == 0 and rule.pool == "bulk"
    assert book.for_mx(["alt1.aspmx.l.google.com"]) is rule
    assert book.reaction_to("421 4.7.28 too much").action == "suspend"
    assert book.pools["bulk"].source_ips == ("127.0.0.2", "127.0.0.3")
    assert book.pools["bulk"].helo_names == ("out2.me.test", "out3.me.test")


def test_no_tables_means_no_rules(tmp_path):
    book = rulebook_from(load_config(write(tmp_path, "")))
    assert book.rules == () and book.reactions == () and book.pools == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[shaping.rule]]\nname = "x"\nmax_connections = -1\n', "max_connections = -1"),
        ('[[shaping.rule]]\nname = "x"\nmax_conections = 1\n', "max_conections is not a field"),
        ('[[shaping.rule]]\ndomains = ["a.test"]\n', "name is missing"),
        ('[[shaping.rule]]\nname = "x"\ndomains = ["not a domain"]\n', "not a domain name"),
        ('[[shaping.rule]]\nname = "x"\n[[shaping.rule]]\nname = "x"\n', "repeats entry 1"),
        (
            '[[shaping.reaction]]\npattern = "("\naction = "suspend"\nminutes = 1\n',
            "not a regular expression",
        ),
        (
            '[[shaping.reaction]]\npattern = "x"\naction = "explode"\nminutes = 1\n',
            "'suspend', 'throttle'",
        ),
        ('[[shaping.reaction]]\npattern = "x"\naction = "suspend"\nminutes = 0\n', "minutes > 0"),
        ('[[egress.pool]]\nname = "b"\nsource_ips = ["10.0.0.0/24"]\n', "not an IP address"),
        ('[[shaping.rule]]\nname = "x"\npool = "nope"\n', "no [[egress.pool]] has that name"),
        (
            '[[egress.pool]]\nname = "b"\nsource_ips = ["127.0.0.2"]\nhelo_names = ["a b"]\n',
            "helo_names = [\"a b\"]: 'a b' is not a host name",
        ),
        (
            '[[egress.pool]]\nname = "b"\nsource_ips = ["127.0.0.2", "127.0.0.3"]\n'
            'helo_names = ["a.me"]\n',
            'helo_names = ["a.me"]: 1 names for 2 source_ips; must be one host name per',
        ),
    ],
)
def test_bad_tables_name_the_table_the_field_and_what_is_allowed(tmp_path, text, expected):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    message = str(caught.value)
    assert expected in message
    assert "[[shaping." in message or "[[egress." in message


def test_a_rule_edited_at_run_time_is_checked_applied_and_written_with_comments_kept(tmp_path):
    path = write(tmp_path, RULES)
    config = load_config(path)
    seen = []
    config.subscribe(lambda section, key, value: seen.append((section, key)))
    rows = [{"name": "small", "domains": ["small.test"], "max_messages_per_connection": 5}]
    change_setting(config, "shaping", "rule", rows)
    assert seen == [("shaping", "rule")]
    assert rulebook_from(config).for_domain("small.test").max_messages_per_connection == 5
    text = (tmp_path / "mailengine.toml").read_text(encoding="utf-8")
    assert "# the big provider" in text and "[[shaping.rule]]" in text
    assert rulebook_from(load_config(path)).for_domain("small.test").name == "small"
    with pytest.raises(ConfigError, match=r"no \[\[egress\.pool\]\]"):
        change_setting(config, "shaping", "rule", [{"name": "x", "pool": "missing"}])
    assert rulebook_from(config).for_domain("small.test") is not None  # unchanged
