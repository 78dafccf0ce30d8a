"""The web admin: the suppression page and API, last replies, operator events, bounce metrics."""

import json
import os

import pytest

from mailengine.queue.suppression import SuppressionList
from tests.twisted.web_harness import Browser, make_engine


@pytest.fixture
def admin(tmp_path):
    engine, clock = make_engine(str(tmp_path))
    engine.suppression = SuppressionList(os.path.join(engine.store.root, "suppression.sqlite"))
    browser = Browser(engine, clock)
    assert browser.login().code == 303
    return browser


def test_the_page_adds_searches_and_removes_with_who_when_and_why(admin):
    listing = admin.engine.suppression
    r = admin.post_form("/gui/admin/suppression/add", {"address": "Bob@X.test", "reason": "asked"})
    assert r.code == 303
    entry = listing.lookup("bob@x.test")
    assert entry is not None and entry.reason == "asked" and entry.by == "admin"
    page = admin.get("/gui/admin/suppression?q=x.test").text
    assert "bob@x.test" in page and "asked" in page and "admin" in page
    assert "bob@x.test suppressed." in page  # the flash
    assert "nobody@" not in admin.get("/gui/admin/suppression?q=nobody").text
    admin.post_form("/gui/admin/suppression/add", {"address": "not an address"})
    assert "is not an address" in admin.get("/gui/admin/suppression").text
    r = admin.post_form("/gui/admin/suppression/remove", {"address": "bob@x.test"})
    assert r.code == 303 and listing.lookup("bob@x.test") is None


def test_a_form_without_the_csrf_token_changes_nothing(admin):
    r = admin.post("/gui/admin/suppression/add", {"address": "eve@x.test"})
    assert r.code == 403 and admin.engine.suppression.lookup("eve@x.test") is None


def test_the_json_api_lists_adds_and_deletes(admin):
    headers = {"X-CSRF-Token": admin.csrf, "Content-Type": "application/json"}
    r = admin.request(
        "post",
        "/api/suppression",
        data=json.dumps({"address": "a@y.test", "reason": "api"}),
        headers=headers,
    )
    assert r.code == 200 and r.json() == {"address": "a@y.test", "added": True}
    listed = admin.get("/api/suppression?search=y.test").json()
    assert listed["total"] == 1 and listed["entries"][0]["reason"] == "api"
    r = admin.request("delete", "/api/suppression/a@y.test", headers=headers)
    assert r.code == 200 and r.json()["removed"] is True
    r = admin.request("delete", "/api/suppression/a@y.test", headers=headers)
    assert r.code == 404
    bad = admin.request("post", "/api/suppression", data="{}", headers=headers)
    assert bad.code == 400


def test_the_queue_and_message_pages_show_each_recipients_last_reply(admin):
    from mailengine.queue.lastreply import update_last_replies
    from tests.twisted.web_harness import queue_file

    engine = admin.engine
    env = queue_file(engine, "retry", "R1@h", ["a@x.test", "b@x.test"])
    update_last_replies(env, [("a@x.test", "451 4.7.1 greylisted"), ("b@x.test", "452 full")], [])
    engine.store.replace_inf("retry", "R1@h", env.to_inf().encode())
    page = admin.get("/gui/admin/queue?dir=retry").text
    assert "<th>Last reply</th>" in page.replace(' class="num"', "") or "Last reply" in page
    assert "451 4.7.1 greylisted" in page
    detail = admin.get("/gui/admin/queue/message/R1@h").text
    assert "a@x.test: 451 4.7.1 greylisted" in detail and "b@x.test: 452 full" in detail


def test_web_queue_actions_write_operator_events(admin, tmp_path):
    from mailengine.observe.eventlog import EventLog
    from mailengine.observe.events import parse_lines
    from tests.twisted.web_harness import queue_file

    engine = admin.engine
    engine.events = EventLog(
        str(tmp_path / "events"), retention_days=lambda: 1, is_enabled=lambda: True
    )
    queue_file(engine, "retry", "H1@h", ["a@x.test", "b@x.test"])
    r = admin.post_form(
        "/gui/admin/queue/action", {"id": "H1@h", "action": "hold", "confirm": "yes"}
    )
    assert r.code in (200, 303)
    engine.events.flush()
    [path] = os.listdir(tmp_path / "events")
    events = list(parse_lines((tmp_path / "events" / path).read_text()))
    assert [(e["event"], e["recipient"], e["by"]) for e in events] == [
        ("held", "a@x.test", "web:admin"),
        ("held", "b@x.test", "web:admin"),
    ]
    assert {e["sender"] for e in events} == {"sender@example.org"}


def test_metrics_count_bounces_by_category(admin):
    admin.engine.counters.bounced("bad_mailbox", 3)
    text = admin.get("/metrics").text
    assert 'mailengine_bounces_total{category="bad_mailbox"} 3' in text
    assert 'mailengine_bounces_total{category="tls"} 0' in text
