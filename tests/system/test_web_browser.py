"""The web admin in headless Chromium: log in, change a setting, pause, see the dashboard say so."""

import os
import shutil
import smtplib
import time

import pytest

from mailengine.config.passwords import set_password
from tests.harness import read_text, run_cli, wait_for
from tests.sinks import route

pytestmark = [pytest.mark.system, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS = "/work/wt/web-screenshots"  # where the lead looks; skipped when absent


@pytest.fixture
def browser(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(
            "headless Chromium not installed (Debian: apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1440,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture
def engine(engine_factory, sinks):
    """Real delivery traffic: one receiving host takes everything, one greylists (mail
    waits in retry/ with its last error), one refuses some users (final failures) and one
    never answers the end of DATA (its connections stay open)."""
    accepting, greylisting, refusing, stalling = (sinks(f"127.0.2.{n}") for n in (1, 2, 3, 4))
    greylisting.rcpt_reply = lambda rcpt: (451, "4.7.1 greylisted, try again later")
    refusing.rcpt_reply = lambda rcpt: (550, "5.1.1 no such user") if "gone" in rcpt else None
    stalling.stall_on = "DATA-END"
    routes = [
        route("gmail.test", accepting),
        route("yahoo.test", accepting),
        route("corp.test", greylisting),
        route("hotmail.test", refusing),
        route("slow.test", stalling),
    ]
    proc = engine_factory(
        {
            "queue": {"check_interval_seconds": 1},
            "logs": {"stats_interval_seconds": 1},
            "server": {"local_domains": ["local.test"]},
            "dns": {"bypass": routes},
        },
        start=False,
    )
    set_password(os.path.join(proc.root, "config", "password.txt"), "admin", "browser-pw")
    return proc.start()


BURSTS = (6, 14, 22, 9, 17, 5)  # messages per stats interval: a shape for the chart
RECIPIENTS = [
    *["gmail.test"] * 4,
    *["yahoo.test"] * 2,
    "corp.test",
    "hotmail.test",
    "slow.test",
    "local.test",
]


def make_traffic(engine):
    """Mail received (local and relay) over several stats intervals, then delivered,
    deferred, refused or stuck by the receiving hosts."""
    sent = 0
    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=10) as client:
        for size in BURSTS:
            lines = engine.console().count(" recv [")
            for _ in range(size):
                domain = RECIPIENTS[sent % len(RECIPIENTS)]
                user = "gone" if domain == "hotmail.test" and sent % 2 else "user"
                client.sendmail(
                    "news@example.org", [f"{user}{sent}@{domain}"], b"Subject: hi\r\n\r\nhello\r\n"
                )
                sent += 1
            wait_for(lambda n=lines: engine.console().count(" recv [") > n, what="a stats line")
    result = run_cli(
        "send",
        "--root",
        engine.root,
        "a@corp.test",
        "b@hotmail.test",
        input=b"Subject: by file\n\nbody\n",
    )
    assert result.returncode == 0, result.stderr
    return sent


def find(driver, css):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def text_of(driver, css):
    """An element's text, or "" while it is missing or being replaced by a refresh."""
    from selenium.common.exceptions import WebDriverException

    try:
        return find(driver, css).text
    except WebDriverException:
        return ""


def attribute_of(driver, css, name):
    from selenium.common.exceptions import WebDriverException

    try:
        return find(driver, css).get_attribute(name)
    except WebDriverException:
        return None


def number_of(driver, css):
    """The number shown in an element, or None while the page is being refreshed."""
    text = text_of(driver, css).replace(",", "")
    return int(text) if text.isdigit() else None


def full_page_screenshot(driver, path):
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1440, max(900, min(int(height) + 40, 4000)))
    time.sleep(0.3)  # let the resize re-layout before the capture (not a wait for the engine)
    driver.save_screenshot(str(path))
    driver.set_window_size(1440, 1000)


def keep(path):
    if os.path.isdir(os.path.dirname(SCREENSHOTS)):
        os.makedirs(SCREENSHOTS, exist_ok=True)
        shutil.copy(path, os.path.join(SCREENSHOTS, os.path.basename(path)))


def test_log_in_change_a_setting_pause_and_see_the_dashboard_say_so(engine, browser, tmp_path):
    base = f"http://127.0.0.1:{engine.web_port}"
    received = make_traffic(engine)
    browser.get(base + "/gui/admin")
    wait_for(lambda: "/gui/admin/login" in browser.current_url, what="the login form")
    find(browser, "input[name=user]").clear()
    find(browser, "input[name=user]").send_keys("admin")
    find(browser, "input[name=password]").send_keys("browser-pw")
    find(browser, "form.login button").click()
    wait_for(lambda: text_of(browser, ".statebar .badge") == "SENDING", what="the dashboard")

    # A setting: first a bad value (shown inline), then a good one (saved to the file).
    browser.get(base + "/gui/admin/settings")
    field = find(browser, "input[name='smtp_out.max_connections_per_host']")
    field.clear()
    field.send_keys("lots")
    find(browser, "#group-limits button[type=submit]").click()
    error = wait_for(
        lambda: text_of(browser, "#row-smtp_out\\.max_connections_per_host .error"),
        what="the inline error",
    )
    assert "must be a whole number" in error
    browser.execute_script(
        "document.getElementById('row-smtp_out.max_connections_per_host')"
        ".scrollIntoView({block: 'center'})"
    )
    browser.save_screenshot(str(tmp_path / "settings-error.png"))
    field = find(browser, "input[name='smtp_out.max_connections_per_host']")
    field.clear()
    field.send_keys("25")
    find(browser, "#group-limits button[type=submit]").click()
    wait_for(
        lambda: "Saved smtp_out.max_connections_per_host" in text_of(browser, ".flash"),
        what="the saved message",
    )
    config = os.path.join(engine.root, "config", "mailengine.toml")
    assert "max_connections_per_host = 25" in read_text(config)
    browser.refresh()
    value = find(browser, "input[name='smtp_out.max_connections_per_host']").get_attribute("value")
    assert value == "25"

    # Sending, with real traffic: delivered, deferred, refused, and connections held open.
    browser.get(base + "/gui/admin")
    wait_for(lambda: number_of(browser, ".tile .value") == received, what="received count")
    wait_for(lambda: (number_of(browser, "#tile-sent .value") or 0) > 0, what="sent mail")
    wait_for(
        lambda: (number_of(browser, "#tile-connections .value") or 0) > 0,
        what="open connections",
    )
    wait_for(lambda: "mx.slow.test" in text_of(browser, "#hosts"), what="the busy host")
    wait_for(
        lambda: "550 5.1.1 no such user" in text_of(browser, "#failures"),
        what="a recent final failure",
    )
    wait_for(lambda: "greylisted" in text_of(browser, "#destinations"), what="a last error")
    points = wait_for(
        lambda: attribute_of(browser, "svg.chart polyline.received", "points"), what="the chart"
    )
    assert points.count(",") >= 6  # steps: the bursts landed in several stats intervals
    shot = tmp_path / "dashboard-sending.png"
    full_page_screenshot(browser, shot)
    assert shot.stat().st_size > 20_000

    # Pause sending from the dashboard; it says so, and the setting is saved.
    find(browser, "form[action='/gui/admin/controls/pause'] button").click()
    wait_for(
        lambda: "Sending is paused" in text_of(browser, ".statebar .state-text"),
        what="the dashboard to say sending is paused",
    )
    assert text_of(browser, ".statebar .badge") == "PAUSED"
    assert "paused = true" in read_text(config)

    # The page refreshes itself (these reads poll: the dashboard's content is replaced
    # every few seconds): a message queued now shows up without reloading.
    in_retry = wait_for(lambda: number_of(browser, "#tile-retry .value"), what="retry/")
    run_cli("send", "--root", engine.root, "late@gmail.test", input=b"Subject: late\n\nx\n")
    wait_for(
        lambda: number_of(browser, "#tile-retry .value") == in_retry + 1,
        what="the dashboard to refresh itself",
    )
    full_page_screenshot(browser, tmp_path / "dashboard-paused.png")
    for name in ("dashboard-sending.png", "dashboard-paused.png", "settings-error.png"):
        keep(tmp_path / name)

    browser.get(base + "/gui/admin/queue")
    full_page_screenshot(browser, tmp_path / "queue.png")
    keep(tmp_path / "queue.png")

    # Mail in memory: the stuck slow.test messages are being sent, and say so.
    browser.get(base + "/gui/admin/queue?dir=memory")
    assert "being sent now" in text_of(browser, "table.grid")
    find(browser, "table.grid a.mono").click()
    wait_for(lambda: "Being sent now" in text_of(browser, ".actions"), what="the message page")
    full_page_screenshot(browser, tmp_path / "message-being-sent.png")
    keep(tmp_path / "message-being-sent.png")
