import pytest

from tests.twisted.web_harness import Browser, make_engine


@pytest.fixture
def admin(tmp_path):
    """The web admin in memory, logged in as admin (a test file may define its own)."""
    engine, clock = make_engine(str(tmp_path))
    browser = Browser(engine, clock)
    assert browser.login().code == 303
    return browser
