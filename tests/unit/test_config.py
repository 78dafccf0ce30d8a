import tomllib

import pytest

from mailengine.config import ConfigError, load_config
from mailengine.config.loader import load_or_create
from mailengine.config.model import Config
from mailengine.config.persist import change_setting, raw_from_text
from mailengine.config.schema import SETTINGS
from mailengine.config.template import render_template


def write(tmp_path, text):
    path = tmp_path / "mailengine.toml"
    path.write_text(text)
    return str(path)


def test_every_setting_of_the_schema_has_its_default_when_the_file_is_empty(tmp_path):
    config = load_config(write(tmp_path, ""))
    assert config.smtp_in.port == 25
    assert config.smtp_in.max_message_size_bytes == 10485760
    assert config.queue.retry_intervals_minutes == (30, 120, 240, 480, 960)
    assert config.web.port == 81
    assert "127.0.0.1" in config.smtp_in.relay_ips
    assert config.smtp_out.max_connections_per_host == 10
    assert config.logs.stats_interval_seconds == 10
    for s in SETTINGS:
        assert config.raw(s.section, s.key) == s.default


def test_shipped_config_file_is_the_rendered_template_and_loads():
    with open("config/mailengine.toml", encoding="utf-8") as fh:
        shipped = fh.read()
    assert shipped == render_template(), (
        "run: python -m mailengine.config.template > config/mailengine.toml"
    )
    document = tomllib.loads(shipped)
    for s in SETTINGS:
        # An array of tables is shown as a commented example block (empty by default).
        assert document[s.section].get(s.key, []) == s.default
    assert render_template().count("\n# ") > len(SETTINGS)  # every setting has a comment


def test_all_errors_are_reported_at_once_with_file_key_value_and_what_is_allowed(tmp_path):
    path = write(
        tmp_path,
        """
[smtp_in]
timeout_seconds = 3
max_message_size_bytes = 100
relay_ips = ["10.0.0.300", "10.0.0.9-10.0.0.1"]
relay_ip = ["1.2.3.4"]
[queue]
max_memory_kb = 5
retry_intervals_minutes = [30, 0]
[smtpout]
x = 1
""",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    text = "\n".join(problems)
    assert len(problems) == 7, text
    assert f"{path}: [smtp_in] timeout_seconds = 3: must be a whole number ≥ 5" in text
    assert "max_message_size_bytes = 100: must be 0, or a whole number ≥ 1024" in text
    assert "'10.0.0.300' is not an IP address" in text
    assert "'10.0.0.9-10.0.0.1': range ends before it starts" in text  # every bad entry
    assert '[smtp_in] relay_ip = ["1.2.3.4"] is not a setting; did you mean relay_ips?' in text
    assert "max_memory_kb = 5: must be a whole number ≥ 1000" in text
    assert "retry_intervals_minutes = [30, 0]" in text
    assert "[smtpout] is not a section; did you mean smtp_out?" in text


def test_ip_lists_accept_addresses_ranges_cidr_and_zero(tmp_path):
    config = load_config(
        write(
            tmp_path,
            """
[smtp_in]
relay_ips = ["10.0.0.5", "192.168.1.10-192.168.1.20", "172.16.0.0/12"]
priority_ips = ["0"]
""",
        )
    )
    relay = config.smtp_in.relay_ips
    assert "10.0.0.5" in relay and "192.168.1.15" in relay and "172.31.255.1" in relay
    assert "192.168.1.21" not in relay and "10.0.0.6" not in relay
    assert config.smtp_in.priority_ips.has_zero


def test_a_setting_in_the_wrong_section_or_outside_any_names_where_it_belongs(tmp_path):
    path = write(tmp_path, "port = 2525\n[smtp_in]\npaused = true\nzzz = 1\n[web]\nprt = 80\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        f"{path}: port (outside any [section]) = 2525 is not a setting; "
        "did you mean [smtp_in] port or [web] port?",
        f"{path}: [smtp_in] paused = true is not a setting; did you mean [smtp_out] paused?",
        f"{path}: [smtp_in] zzz = 1 is not a setting (settings of [smtp_in]: listen_ips, port, "
        "relay_ips, relay_domains, reject_mail_from, priority_ips, max_connections, "
        "max_connections_per_ip, timeout_seconds, data_timeout_seconds, max_message_size_bytes, "
        "tls_certificate, tls_private_key, auth_mechanisms, allow_plain_auth_without_tls, "
        "auth_max_failures, auth_lockout_seconds)",
        f"{path}: [web] prt = 80 is not a setting; did you mean port?",
    ]


@pytest.mark.parametrize("section", ["smtp_in", "web"])
def test_listen_addresses_refuse_zero_and_ranges_too_large_to_listen_on(tmp_path, section):
    path = write(tmp_path, f'[{section}]\nlisten_ips = ["0"]\n')
    with pytest.raises(ConfigError, match='listen_ips = \\["0"\\]: "0" has no meaning here'):
        load_config(path)
    path = write(tmp_path, f'[{section}]\nlisten_ips = ["10.0.0.0/8"]\n')
    with pytest.raises(ConfigError, match="too many addresses to listen on"):
        load_config(path)
    path = write(tmp_path, f'[{section}]\nlisten_ips = ["127.0.0.5-127.0.0.6", "127.0.1.0/30"]\n')
    assert len(load_config(path).get(section, "listen_ips").addresses()) == 6


def test_never_retry_is_written_as_a_single_zero(tmp_path):
    config = load_config(write(tmp_path, "[queue]\nretry_intervals_minutes = [0]\n"))
    assert config.queue.retry_intervals_minutes == ()
    config = load_config(write(tmp_path, "[queue]\nretry_intervals_minutes = [0.5, 1]\n"))
    assert config.queue.retry_intervals_minutes == (0.5, 1.0)


def test_bad_toml_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[smtp_in\nport=1"))
    assert "not valid TOML" in info.value.problems[0]


def test_a_missing_file_is_created_from_the_template(tmp_path):
    path = tmp_path / "config" / "mailengine.toml"
    config, created = load_or_create(str(path))
    assert created and path.read_text() == render_template()
    assert config.smtp_in.port == 25
    _, created = load_or_create(str(path))
    assert not created


def test_changing_a_setting_applies_at_once_and_keeps_the_files_comments(tmp_path):
    path = tmp_path / "mailengine.toml"
    path.write_text(render_template())
    config = load_config(str(path))
    seen = []
    config.subscribe(lambda section, key, value: seen.append((section, key, value)))
    change_setting(config, "smtp_out", "paused", True)
    change_setting(config, "smtp_in", "relay_ips", ["10.1.0.0/16"])
    assert config.smtp_out.paused is True
    assert "10.1.2.3" in config.smtp_in.relay_ips
    assert seen[0] == ("smtp_out", "paused", True)
    text = path.read_text()
    assert "# Pause sending" in text and "paused = true" in text
    again = load_config(str(path))
    assert again.smtp_out.paused is True and "10.1.2.3" in again.smtp_in.relay_ips


def test_a_bad_change_is_refused_and_changes_nothing(tmp_path):
    path = tmp_path / "mailengine.toml"
    path.write_text("")
    config = load_config(str(path))
    with pytest.raises(ConfigError) as info:
        change_setting(config, "smtp_in", "timeout_seconds", 2)
    assert "[smtp_in] timeout_seconds = 2" in info.value.problems[0]
    assert config.smtp_in.timeout_seconds == 600
    assert path.read_text() == ""


def test_form_text_becomes_the_settings_toml_value():
    assert raw_from_text(False, "on") is True
    assert raw_from_text(25, " 2525 ") == 2525
    assert raw_from_text([30, 120], "10, 20.5") == [10, 20.5]
    assert raw_from_text([], "a.com\n\n b.com ") == ["a.com", "b.com"]
    assert raw_from_text("", " x ") == "x"


def test_defaults_config_matches_schema():
    config = Config.defaults()
    assert config.queue.use_disk_for_relay is False
    assert config.reports.type == ""


def test_unwise_but_valid_settings_are_warned_about(tmp_path):
    from mailengine.config.advice import advice

    config = load_config(
        write(
            tmp_path,
            """
[queue]
check_interval_seconds = 3600
[smtp_in]
relay_ips = ["0"]
[smtp_out]
bounce_host = "bounce.example.com"
""",
        )
    )
    lines = advice(config)
    assert len(lines) == 3
    assert "check_interval_seconds = 3600 is longer than the shortest retry interval" in lines[0]
    assert advice(Config.defaults()) == []


def test_an_api_token_must_be_long_enough_to_be_a_secret(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, '[web]\napi_token = "x"\n'))
    assert "at least 16 characters" in info.value.problems[0]
    assert load_config(write(tmp_path, '[web]\napi_token = "%s"\n' % ("k" * 16))).web.api_token


@pytest.mark.parametrize(
    "line",
    [
        'port = "81"',  # [web]
        'max_connections = "100"',  # [smtp_in]
    ],
)
def test_a_number_written_as_a_string_is_refused_everywhere_with_the_fix(tmp_path, line):
    section = "web" if line.startswith("port") else "smtp_in"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"[{section}]\n{line}\n"))
    [problem] = info.value.problems
    number = line.split('"')[1]
    assert f"not the string '{number}'; write {number} without quotes" in problem


def test_only_retry_intervals_take_the_manuals_comma_form_and_only_that_form(tmp_path):
    def intervals(value):
        return load_config(write(tmp_path, f"[queue]\nretry_intervals_minutes = {value}\n"))

    assert intervals('"30,120,240,480,960"').queue.retry_intervals_minutes == (
        30,
        120,
        240,
        480,
        960,
    )
    assert intervals('"0"').queue.retry_intervals_minutes == ()  # the manual's "0"
    for bad in ('"30;120"', '"1e3"', '"thirty"', '["30", "120"]', '"30,,120"'):
        with pytest.raises(ConfigError, match="retry_intervals_minutes"):
            intervals(bad)
