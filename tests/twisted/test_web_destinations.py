"""The Destinations page in memory: states, reasons, and the suspend/resume/retry buttons."""

import attrs
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailengine.delivery.status import DeliveryStatus, DomainStatus
from tests.twisted.web_harness import Browser, make_engine


class Delivery:
    """Stands in for the delivery engine: its status and the operator's actions."""

    def __init__(self):
        self.actions = []

    def status(self, now, top=20):
        return DeliveryStatus(
            paused=False,
            open_connections=0,
            domains=(
                DomainStatus(
                    "yahoo.test",
                    40,
                    90.0,
                    "",
                    "suspended",
                    "suspended",
                    "421 4.7.0 [TSS04] deferred",
                    now + 600,
                ),
                DomainStatus(
                    "gmail.test",
                    12,
                    30.0,
                    "",
                    "throttled",
                    "throttled to 30/min",
                    "451 4.7.28 slow down",
                ),
            ),
            destination_states=(("sending", 5), ("suspended", 1), ("throttled", 1)),
            rule_events=(("google", "throttle", 3),),
        )

    def suspend_destination(self, domain, minutes):
        self.actions.append(("suspend", domain, minutes))

    def resume_destination(self, domain):
        self.actions.append(("resume", domain))

    def retry_destination_now(self, domain):
        self.actions.append(("retry", domain))
        return 7


@pytest.fixture
def admin(tmp_path):
    engine, clock = make_engine(str(tmp_path))
    browser = Browser(engine, clock)
    assert browser.login().code == 303
    browser.running.delivery = Delivery()
    return browser


def test_the_destinations_page_shows_each_state_with_its_reason(admin):
    page = admin.get("/gui/admin/destinations").text
    assert "yahoo.test" in page and "suspended until " in page
    assert 'title="421 4.7.0 [TSS04] deferred"' in page
    assert "throttled to 30/min" in page and "451 4.7.28 slow down" in page
    assert page.count("Retry now") == 2
    assert "throttled to 30/min" in admin.get("/gui/admin").text  # the dashboard too


def test_the_buttons_suspend_resume_and_retry_a_destination(admin):
    delivery = admin.running.delivery
    r = admin.post_form("/gui/admin/destinations/suspend", {"domain": "Yahoo.TEST"})
    assert r.code == 303
    admin.post_form("/gui/admin/destinations/resume", {"domain": "yahoo.test"})
    admin.post_form("/gui/admin/destinations/retry", {"domain": "yahoo.test"})
    assert delivery.actions == [
        ("suspend", "yahoo.test", 30.0),
        ("resume", "yahoo.test"),
        ("retry", "yahoo.test"),
    ]
    assert "7 waiting messages are due now" in admin.get("/gui/admin/destinations").text
    assert admin.post_form("/gui/admin/destinations/explode", {"domain": "x.test"}).code == 404


def test_metrics_count_destinations_per_state_and_events_per_rule(admin):
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(admin.get("/metrics").text)
        for s in family.samples
    }
    assert samples[("mailengine_destinations", (("state", "suspended"),))] == 1
    key = ("mailengine_shaping_events_total", (("event", "throttle"), ("rule", "google")))
    assert samples[key] == 3


class Box:
    """Stands in for a supervisor of workers: the box's picture is its workers'."""

    async def combine(self, own):
        return attrs.evolve(own, destinations=(DomainStatus("box.test", 99, 5.0),))


def test_a_supervisor_lists_the_destinations_of_its_workers(admin):
    admin.running.box = Box()
    listed = admin.get("/api/destinations").json()["destinations"]
    assert [(d["domain"], d["queued_recipients"]) for d in listed] == [("box.test", 99)]
    assert "box.test" in admin.get("/gui/admin/destinations").text
