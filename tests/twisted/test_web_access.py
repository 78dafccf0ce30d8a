"""Who gets into the web admin: addresses, the password, sessions, CSRF, the API token."""

import os
import re
import sys

import pytest

from mailengine.config.persist import change_setting
from mailengine.web.admin import mailengine_command
from tests.twisted.web_harness import PASSWORD, Browser, make_engine

PAGES = [
    "/gui/admin",
    "/gui/admin/live",
    "/gui/admin/settings",
    "/gui/admin/queue",
    "/gui/admin/queue?dir=hold",
    "/gui/admin/queue/summary",
    "/gui/admin/queue/message/M1@h",
    "/gui/admin/logs",
    "/gui/admin/logs/file/hard-bounces.txt",
    "/gui/admin/controls",
]
PAGE_POSTS = [
    "/gui/admin/settings",
    "/gui/admin/queue/action",
    "/gui/admin/controls/pause",
    "/gui/admin/controls/resume",
    "/gui/admin/controls/shutdown",
    "/gui/admin/logout",
]
API_GETS = [
    "/api/status",
    "/api/settings",
    "/api/settings/smtp_out/paused",
    "/api/queue",
    "/api/queue/summary",
    "/api/queue/messages/M1@h",
    "/api/nothing-here",
]
API_POSTS = [
    "/api/settings/smtp_out/paused",
    "/api/queue/messages/M1@h/delete",
    "/api/queue/domains/x.test/hold",
    "/api/control/pause",
    "/api/control/shutdown",
]


@pytest.fixture
def admin(tmp_path):
    engine, clock = make_engine(str(tmp_path))
    return Browser(engine, clock)


@pytest.mark.parametrize("path", [*PAGES, "/"])
def test_every_page_sends_a_stranger_to_the_login_form(admin, path):
    r = admin.get(path)
    assert r.code == 302 and r.header("location").startswith("/gui/admin/login?next=")


@pytest.mark.parametrize("path", PAGE_POSTS)
def test_every_form_post_needs_a_login(admin, path):
    r = admin.post(path, {"confirm": "yes", "action": "delete", "id": "M1@h"})
    assert r.code == 302
    assert admin.engine.config.smtp_out.paused is False
    assert admin.running.service.stops == 0


@pytest.mark.parametrize(
    ("method", "path"), [("get", p) for p in API_GETS] + [("post", p) for p in API_POSTS]
)
def test_every_api_call_needs_a_login_or_the_token(admin, method, path):
    r = admin.request(method, path)
    assert r.code == 401 and r.json() == {"error": "log in first"}


def test_the_api_token_opens_the_api_and_a_wrong_one_does_not(admin):
    change_setting(admin.engine.config, "web", "api_token", "tok-123-long-enough-token")
    good = {"Authorization": ["Bearer tok-123-long-enough-token"]}
    assert admin.get("/api/status", headers=good).code == 200
    assert (
        admin.get(
            "/api/status", headers={"Authorization": ["Bearer tok-124-long-enough-token"]}
        ).code
        == 401
    )
    r = admin.post("/api/control/pause", headers=good)  # no CSRF needed: not a cookie
    assert r.code == 200 and r.json() == {"paused": True}
    assert admin.get("/gui/admin", headers=good).code == 302  # the token is for /api/ only


def test_without_an_api_token_setting_no_bearer_token_works(admin):
    assert admin.engine.config.web.api_token == ""
    assert admin.get("/api/status", headers={"Authorization": ["Bearer "]}).code == 401


def test_a_disallowed_address_gets_403_everywhere(admin):
    change_setting(admin.engine.config, "web", "allowed_ips", ["10.0.0.0/8"])
    for path in [*PAGES, "/gui/admin/login", "/metrics", "/static/admin.css", "/api/status"]:
        r = admin.get(path)
        assert r.code == 403, path
        assert "127.0.0.1 is not in [web] allowed_ips" in r.text
    assert admin.post("/gui/admin/login", {"user": "admin", "password": PASSWORD}).code == 403


def test_an_empty_allowed_list_lets_everyone_in_and_zero_turns_the_admin_off(admin):
    change_setting(admin.engine.config, "web", "allowed_ips", [])
    assert admin.get("/metrics").code == 200
    change_setting(admin.engine.config, "web", "allowed_ips", ["0"])
    assert admin.get("/metrics").code == 403


def test_with_no_password_set_the_admin_only_says_how_to_set_one(tmp_path):
    engine, clock = make_engine(str(tmp_path), password=False)
    admin = Browser(engine, clock)
    for path in [*PAGES, "/gui/admin/login"]:
        r = admin.get(path)
        assert r.code == 403, path
        assert "mailengine passwd admin" in r.text and "<form" not in r.text
    r = admin.get("/api/status")
    assert r.code == 403 and "mailengine passwd admin" in r.json()["error"]
    assert admin.post("/gui/admin/login", {"user": "admin", "password": "x"}).code == 403


def test_with_no_password_set_the_configured_api_token_still_opens_the_api_only(tmp_path):
    # The token is a credential the operator put in the file: automation that only uses
    # the API needs no human password. Pages stay closed until a password is set.
    engine, clock = make_engine(str(tmp_path), password=False)
    change_setting(engine.config, "web", "api_token", "tok-123-long-enough-token")
    admin = Browser(engine, clock)
    good = {"Authorization": ["Bearer tok-123-long-enough-token"]}
    assert admin.get("/api/status", headers=good).code == 200
    assert admin.post("/api/control/pause", headers=good).json() == {"paused": True}
    r = admin.get("/api/status", headers={"Authorization": ["Bearer tok-124-long-enough-token"]})
    assert r.code == 403 and "mailengine passwd admin" in r.json()["error"]
    assert admin.get("/api/status").code == 403
    r = admin.get("/gui/admin", headers=good)
    assert r.code == 403 and "mailengine passwd admin" in r.text


def test_login_sets_an_httponly_samesite_strict_session_cookie(admin):
    r = admin.login()
    assert r.code == 303 and r.header("location") == "/gui/admin"
    cookie = next(c for c in r.headers.getRawHeaders("set-cookie") if "mailengine_session=" in c)
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert admin.get("/gui/admin").code == 200


def test_login_returns_to_the_page_asked_for_but_never_to_another_site(admin):
    page = admin.get("/gui/admin/login?next=/gui/admin/queue")
    assert 'name="next" value="/gui/admin/queue"' in page.text
    page = admin.get("/gui/admin/login?next=//evil.example/")
    assert 'name="next" value="/gui/admin"' in page.text


def test_login_without_the_forms_token_is_refused(admin):
    admin.get("/gui/admin/login")
    r = admin.post("/gui/admin/login", {"user": "admin", "password": PASSWORD})
    assert r.code == 403 and "expired" in r.text
    assert admin.get("/gui/admin").code == 302


def test_failed_logins_from_one_address_wait_longer_each_time(admin):
    waits = []
    for _ in range(3):
        before = admin.clock.seconds()
        r = admin.login(password="wrong")
        waits.append(admin.clock.seconds() - before)
        assert r.code == 401 and "Wrong user name or password" in r.text
    assert waits == [1.0, 2.0, 4.0]
    # An attempt before the delay is over is refused without checking the password.
    access = admin.resource.access
    access.throttle.failed("127.0.0.1", admin.clock.seconds())
    r = admin.login()
    assert r.code == 429 and "wait" in r.text
    admin.clock.advance(60)
    assert admin.login().code == 303
    assert access.throttle.wait_seconds("127.0.0.1", admin.clock.seconds()) == 0


def test_a_wrong_user_name_fails_like_a_wrong_password(admin):
    r = admin.login(user="root")
    assert r.code == 401 and "Wrong user name or password" in r.text


def test_logout_ends_the_session(admin):
    admin.login()
    r = admin.post_form("/gui/admin/logout")
    assert r.code == 303
    assert admin.get("/gui/admin").code == 302


def test_a_form_post_without_the_csrf_token_is_refused(admin):
    admin.login()
    r = admin.post("/gui/admin/controls/pause", {})
    assert r.code == 403 and "CSRF" in r.text
    r = admin.post("/gui/admin/controls/pause", {"csrf": "forged"})
    assert r.code == 403
    assert admin.engine.config.smtp_out.paused is False
    assert admin.post_form("/gui/admin/controls/pause").code == 303
    assert admin.engine.config.smtp_out.paused is True


def test_an_api_write_with_a_session_needs_the_csrf_header(admin):
    admin.login()
    r = admin.post("/api/control/pause")
    assert r.code == 403 and "CSRF" in r.json()["error"]
    r = admin.post("/api/control/pause", headers={"X-CSRF-Token": [admin.csrf]})
    assert r.code == 200 and admin.engine.config.smtp_out.paused is True
    assert admin.get("/api/status").json()["paused"] is True  # reads need no token


def test_path_tricks_in_the_url_are_refused(admin):
    admin.login()
    for path in [
        "/static/../gui/admin",
        "/static/%2e%2e/config/password.txt",
        "/gui/admin/logs/file/..%2Fconfig%2Fpassword.txt",
    ]:
        r = admin.get(path)
        assert r.code in (400, 403, 404), path
        assert "scrypt" not in r.text


def test_idle_sessions_expire(admin):
    admin.login()
    admin.clock.advance(admin.resource.access.sessions.idle_seconds + 1)
    assert admin.get("/gui/admin").code == 302


def test_pages_carry_the_csrf_token_for_their_forms(admin):
    admin.login()
    page = admin.get("/gui/admin/controls")
    tokens = set(re.findall(r'name="csrf" value="([^"]+)"', page.text))
    assert tokens == {admin.csrf}


def test_the_password_hint_is_a_command_that_runs_here(tmp_path, monkeypatch):
    engine, clock = make_engine(str(tmp_path), password=False)
    page = Browser(engine, clock).get("/gui/admin").text
    command = re.search(r'<pre class="command">(.*?)</pre>', page, re.S).group(1)
    program = command.split(" passwd admin")[0]
    # The script beside the engine's Python (not on PATH in a fresh venv), or -m.
    assert os.access(program, os.X_OK) or program == f"{sys.executable} -m mailengine.cli"
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    python = str(bindir / "python")
    assert mailengine_command(python) == f"{python} -m mailengine.cli"
    script = bindir / "mailengine"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert mailengine_command(python) == str(script)  # README: .venv/bin/mailengine
    monkeypatch.setenv("PATH", str(bindir))
    assert mailengine_command(python) == "mailengine"
