"""``twistd mailengine`` options as twistd parses them (the plugin found on the path)."""

import pytest
from twisted.scripts.twistd import ServerOptions

from mailengine.observe import logfiles


@pytest.fixture(autouse=True)
def console_target():
    saved = dict(logfiles.console_target)
    yield
    logfiles.console_target.update(saved)


def parse(*argv):
    options = ServerOptions()
    options.parseOptions(list(argv))
    return options


def test_root_config_and_test_mode_reach_the_service_maker():
    options = parse("-n", "mailengine", "--root", "/srv/me", "--config", "/etc/me.toml", "--test")
    sub = options.subOptions
    assert (sub["root"], sub["config"], sub["test"]) == ("/srv/me", "/etc/me.toml", True)
    assert parse("-n", "mailengine").subOptions["root"] == "."


def test_the_console_prints_the_manuals_lines_unless_a_logger_or_syslog_was_chosen():
    assert parse("-n", "mailengine")["logger"] in (
        logfiles.console_observer,
        "mailengine.observe.logfiles.console_observer",
    )
    assert logfiles.console_target == {"logfile": "", "nodaemon": True}
    parse("--logfile=/var/log/me.log", "mailengine")
    assert logfiles.console_target == {"logfile": "/var/log/me.log", "nodaemon": False}
    assert parse("--syslog", "mailengine")["logger"] is None
    assert parse("--logger=twisted.logger.jsonFileLogObserver", "mailengine")["logger"] not in (
        logfiles.console_observer,
        "mailengine.observe.logfiles.console_observer",
    )
