"""The web admin in memory: settings, queue actions, controls, dashboard, metrics."""

import os
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailengine.config.loader import load_config
from mailengine.config.persist import change_setting
from mailengine.config.schema import SETTINGS
from mailengine.delivery.status import DeliveryStatus, DomainStatus, HostStatus
from mailengine.observe.recent import FinalFailure
from mailengine.queue.envelope import Envelope
from tests.twisted.web_harness import queue_file


def read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def config_text(admin):
    return read(admin.engine.config.path)


def files(admin, dirname):
    return sorted(os.listdir(admin.engine.store.dir(dirname)))


# -- settings ----------------------------------------------------------------------


def test_the_settings_page_shows_every_setting_grouped_with_help_and_default(admin):
    page = admin.get("/gui/admin/settings").text
    for s in SETTINGS:
        assert f'id="row-{s.name}"' in page, s.name
    assert page.count("applies after restart") >= sum(not s.live for s in SETTINGS)
    assert "Default: </b>81" in page  # [web] port
    # A new HELO text names the engine from the next session on: no restart.
    helo = re.search(r'id="row-server.helo_text".*?class="setting-help"', page, re.S)
    assert helo and "applies after restart" not in helo.group(0)
    port = re.search(r'id="row-smtp_in.port".*?class="setting-help"', page, re.S)
    assert port and "applies after restart" in port.group(0)
    for group in ("Basic", "TCP/IP", "Permissions", "Queue", "Logs", "Limits", "Web admin"):
        assert f"<h2>{group}</h2>" in page


def save(admin, group, **fields):
    names = [s.name for s in SETTINGS if s.group == group]
    current = {}
    page = admin.get("/gui/admin/settings").text
    for name in names:
        # Resubmit every field as the browser would: its current text.
        m = re.search(rf'<(?:input|textarea|select)[^>]*name="{re.escape(name)}"[^>]*>', page)
        assert m, name
        tag = m.group(0)
        if tag.startswith("<select"):
            body = re.search(rf'name="{re.escape(name)}"[^>]*>(.*?)</select>', page, re.S)
            chosen = re.search(r'<option[^>]*value="([^"]*)"[^>]*selected', body.group(1))
            current[name] = chosen.group(1) if chosen else ""
        elif 'type="checkbox"' in tag:
            if " checked" in tag:
                current[name] = "true"
        elif tag.startswith("<textarea"):
            body = re.search(rf'name="{re.escape(name)}"[^>]*>(.*?)</textarea>', page, re.S)
            current[name] = body.group(1)
        else:
            current[name] = re.search(r'value="([^"]*)"', tag).group(1)
    current.update(fields)
    current = {k: v for k, v in current.items() if v is not None}
    return admin.post_form(
        "/gui/admin/settings", {"group": group, "fields": ",".join(names), **current}
    )


def test_a_bad_value_is_shown_inline_and_nothing_is_saved(admin):
    before = config_text(admin)
    r = save(admin, "Limits", **{"smtp_in.timeout_seconds": "2"})
    assert r.code == 400
    row = re.search(r'id="row-smtp_in.timeout_seconds".*?</div></div></div>', r.text, re.S)
    assert row and "must be a whole number" in row.group(0) and 'value="2"' in row.group(0)
    assert 'aria-invalid="true"' in row.group(0)
    assert config_text(admin) == before
    assert admin.engine.config.smtp_in.timeout_seconds == 600


def test_a_saved_setting_applies_at_once_and_is_written_keeping_comments(admin):
    r = save(
        admin, "Queue", **{"smtp_out.paused": "true", "queue.retry_intervals_minutes": "5, 10.5"}
    )
    assert r.code == 303
    assert admin.engine.config.smtp_out.paused is True
    assert admin.engine.config.queue.retry_intervals_minutes == (5.0, 10.5)
    text = config_text(admin)
    assert "paused = true" in text and "retry_intervals_minutes = [5, 10.5]" in text
    assert text.count("#") > 50  # the template's comments are still there
    reloaded = load_config(admin.engine.config.path)
    assert reloaded.smtp_out.paused is True
    flash = admin.get(r.header("location")).text
    assert "Saved smtp_out.paused, queue.retry_intervals_minutes." in flash


def test_a_setting_that_needs_a_restart_says_so_when_saved(admin):
    r = save(admin, "Web admin", **{"web.port": "8181"})
    assert r.code == 303
    page = admin.get("/gui/admin/settings").text
    assert "web.port: applies after restart" in page
    assert "port = 8181" in config_text(admin)


def test_list_settings_are_one_entry_per_line(admin):
    r = save(admin, "Permissions", **{"smtp_in.relay_ips": "127.0.0.1\n10.0.0.0/8\n"})
    assert r.code == 303
    assert '"10.0.0.0/8"' in config_text(admin)
    assert "10.1.2.3" in admin.engine.config.smtp_in.relay_ips


def test_an_allowed_ips_list_that_would_lock_the_operator_out_is_refused(admin):
    r = save(admin, "Web admin", **{"web.allowed_ips": "10.0.0.0/8"})
    assert r.code == 400 and "would lock you out" in r.text
    assert "127.0.0.1" in admin.engine.config.web.allowed_ips


def test_the_settings_api_reads_and_validates(admin):
    headers = {"X-CSRF-Token": [admin.csrf]}
    one = admin.get("/api/settings/smtp_in/port").json()
    assert one["value"] == 25 and one["default"] == 25 and one["live"] is False
    assert len(admin.get("/api/settings").json()["settings"]) == len(SETTINGS)
    r = admin.request("put", "/api/settings/smtp_in/port", json={"value": 0}, headers=headers)
    assert (
        r.code == 400
        and "[smtp_in] port = 0: must be a whole number from 1 to 65535" in r.json()["error"]
    )
    r = admin.request("put", "/api/settings/logs/debug_dns", json={"value": True}, headers=headers)
    assert r.code == 200 and r.json()["applies"] == "now"
    assert admin.engine.config.logs.debug_dns is True and "debug_dns = true" in config_text(admin)
    assert admin.request("put", "/api/settings/x/y", json={"value": 1}, headers=headers).code == 404


def test_the_api_token_is_never_shown_returned_or_logged(admin):
    from twisted.logger import globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        r = save(admin, "Web admin", **{"web.api_token": "tok-secret-1-long-enough"})
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert r.code == 303 and admin.engine.config.web.api_token == "tok-secret-1-long-enough"
    assert 'api_token = "tok-secret-1-long-enough"' in config_text(admin)
    logged = " ".join(str(e.get("raw")) for e in events)
    assert "tok-secret-1-long-enough" not in logged and "********" in logged
    page = admin.get("/gui/admin/settings").text
    assert "tok-secret-1-long-enough" not in page and "type a new one to replace it" in page
    one = admin.get("/api/settings/web/api_token").json()
    assert one["value"] == "********" and one["secret"] is True
    assert "tok-secret-1-long-enough" not in admin.get("/api/settings").text
    # Saving the group again with the field left blank keeps the token.
    assert save(admin, "Web admin").code == 303
    assert admin.engine.config.web.api_token == "tok-secret-1-long-enough"
    assert save(admin, "Web admin", **{"web.api_token.remove": "true"}).code == 303
    assert admin.engine.config.web.api_token == ""
    assert admin.get("/api/settings/web/api_token").json()["value"] == ""


# -- queue -------------------------------------------------------------------------


def act(admin, **fields):
    return admin.post_form("/gui/admin/queue/action", fields)


def test_the_queue_lists_searches_and_pages_a_directory(admin):
    for i in range(60):
        queue_file(
            admin.engine, "retry", f"M{i:02d}@h", [f"u{i}@{'x' if i % 2 else 'y'}.test"], age=i
        )
    page = admin.get("/gui/admin/queue").text
    assert "1-50 of 60 messages" in page and "next →" in page
    assert "51-60 of 60" in admin.get("/gui/admin/queue?page=1").text
    found = admin.get("/gui/admin/queue?domain=x.test").text
    assert "1-30 of 30 messages" in found
    assert "M03@h" in admin.get("/gui/admin/queue?q=u3%40").text
    assert admin.get("/gui/admin/queue?dir=../../etc").code == 400


def test_a_message_page_shows_its_inf_and_headers(admin):
    queue_file(admin.engine, "retry", "M1@h", ["a@x.test"])
    page = admin.get("/gui/admin/queue/message/M1@h").text
    assert "rcpttosend=a@x.test" in page and "Subject: hello M1@h" in page
    assert ">Retry now<" in page and ">Hold<" in page and ">Delete<" in page


def test_each_action_asks_first_and_does_nothing_until_confirmed(admin):
    queue_file(admin.engine, "retry", "M1@h", ["a@x.test"])
    r = act(admin, id="M1@h", action="delete")
    assert r.code == 200 and "Delete message M1@h?" in r.text and "Yes, delete" in r.text
    assert files(admin, "retry") == ["M1@h.dat", "M1@h.inf"]
    r = act(admin, id="M1@h", action="delete", confirm="yes")
    assert r.code == 303 and files(admin, "retry") == []


def test_hold_and_release_from_the_web_update_the_engine_at_once(admin):
    engine = admin.engine
    queue_file(engine, "retry", "M1@h", ["a@x.test"])
    engine.queue.scan_retry()
    assert "M1@h" in engine.queue.messages
    assert act(admin, id="M1@h", action="hold", confirm="yes").code == 303
    assert files(admin, "hold") == ["M1@h.dat", "M1@h.inf"]
    assert "M1@h" not in engine.queue.messages  # forgotten now, not at the next check
    assert act(admin, id="M1@h", action="release", confirm="yes").code == 303
    assert files(admin, "retry") == ["M1@h.dat", "M1@h.inf"]
    msg = engine.queue.messages["M1@h"]
    assert msg.envelope.retry_time == admin.clock.seconds()
    assert engine.queue.schedule.due_time("M1@h") == admin.clock.seconds()


def test_retry_now_makes_a_waiting_message_due(admin):
    engine = admin.engine
    queue_file(engine, "retry", "M1@h", ["a@x.test"])
    engine.queue.scan_retry()
    assert engine.queue.schedule.due_time("M1@h") > admin.clock.seconds()
    assert act(admin, id="M1@h", action="retry-now", confirm="yes").code == 303
    assert engine.queue.schedule.due_time("M1@h") == admin.clock.seconds()


def test_actions_for_all_mail_to_one_domain_are_confirmed_with_counts(admin):
    engine = admin.engine
    queue_file(engine, "retry", "A@h", ["a@x.test", "b@x.test"])
    queue_file(engine, "retry", "B@h", ["c@x.test", "d@y.test"])
    queue_file(engine, "retry", "C@h", ["e@y.test"])
    r = act(admin, action="delete", dir="retry", domain="x.test")
    assert "Delete all mail to x.test in retry/?" in r.text
    assert "2 messages with 4 recipients match." in r.text
    r = act(admin, action="delete", dir="retry", domain="x.test", confirm="yes")
    assert "Delete: 2 of 2 messages to x.test in retry/" in r.text
    assert files(admin, "retry") == ["B@h.dat", "B@h.inf", "C@h.dat", "C@h.inf"]
    [left] = admin.get("/api/queue/messages/B@h").json()["rcpt_to_send"]
    assert left == "d@y.test"


@pytest.mark.parametrize(
    "bad", ["../../config/password.txt", "..", "../config", "M1@h/../../x", ".M1"]
)
def test_path_tricks_in_message_ids_are_refused(admin, bad):
    queue_file(admin.engine, "retry", "M1@h", ["a@x.test"])
    secret = os.path.join(admin.engine.config_dir, "password.txt")
    before = read(secret)
    r = act(admin, id=bad, action="delete", confirm="yes")
    assert r.code in (400, 404) and "scrypt" not in r.text
    quoted = bad.replace("/", "%2F")
    assert admin.get(f"/gui/admin/queue/message/{quoted}").code in (400, 404)
    r = admin.post(f"/api/queue/messages/{quoted}/delete", headers={"X-CSRF-Token": [admin.csrf]})
    assert r.code in (400, 404)
    assert read(secret) == before
    assert files(admin, "retry") == ["M1@h.dat", "M1@h.inf"]


def test_a_message_held_only_in_memory_can_be_deleted_or_held(admin):
    engine = admin.engine

    class Sender:
        def messages_due(self):
            pass

    engine.queue.consumer = Sender()
    now = admin.clock.seconds()
    for i in (1, 2):
        env = Envelope(f"R{i}@h", "s@y.test", ["a@x.test"], time_created=now)
        engine.queue.accept_relay(env, b"Subject: relay\r\n\r\nhi\r\n")
    assert engine.queue.memory_count == 2
    assert "R1@h" in admin.get("/gui/admin/queue?dir=memory").text
    assert act(admin, id="R1@h", action="delete", confirm="yes").code == 303
    assert "R1@h" not in engine.queue.messages and engine.queue.memory_count == 1
    assert act(admin, id="R2@h", action="hold", confirm="yes").code == 303
    assert files(admin, "hold") == ["R2@h.dat", "R2@h.inf"] and engine.queue.memory_count == 0


def test_the_queue_api_lists_shows_and_acts(admin):
    engine = admin.engine
    queue_file(engine, "retry", "A@h", ["a@x.test"], age=7200)
    queue_file(engine, "retry", "B@h", ["b@y.test"], age=10)
    listed = admin.get("/api/queue?older_than=1h").json()
    assert listed["total"] == 1 and listed["messages"][0]["id"] == "A@h"
    summary = admin.get("/api/queue/summary").json()
    assert [(d["domain"], d["recipients"]) for d in summary["domains"]] == [
        ("x.test", 1),
        ("y.test", 1),
    ]
    headers = {"X-CSRF-Token": [admin.csrf]}
    r = admin.post("/api/queue/domains/x.test/hold", headers=headers)
    assert r.code == 200 and r.json()["done"] == 1
    assert files(admin, "hold") == ["A@h.dat", "A@h.inf"]
    r = admin.post("/api/queue/messages/B@h/delete", headers=headers)
    assert r.code == 200 and r.json()["ok"] is True
    r = admin.post("/api/queue/messages/B@h/delete", headers=headers)
    assert r.code == 404
    assert admin.post("/api/queue/messages/A@h/explode", headers=headers).code == 400


# -- controls, dashboard, logs, metrics --------------------------------------------


def test_pausing_shows_on_the_dashboard_and_resuming_clears_it(admin):
    page = admin.get("/gui/admin").text
    assert "NOT SENDING" in page and "Pause sending" in page
    r = admin.post_form(
        "/gui/admin/controls/pause", headers={"Referer": ["http://admin.test/gui/admin"]}
    )
    assert r.code == 303 and r.header("location") == "/gui/admin"
    page = admin.get("/gui/admin").text
    assert ">PAUSED<" in page and "Sending is paused" in page and "Resume sending" in page
    assert "paused = true" in config_text(admin)
    admin.post_form("/gui/admin/controls/resume")
    assert ">PAUSED<" not in admin.get("/gui/admin/live").text


def test_shutdown_asks_first_then_asks_the_service_to_stop(admin):
    service = admin.running.service
    r = admin.post_form("/gui/admin/controls/shutdown")
    assert "Shut down MailEngine?" in r.text and service.stops == 0
    r = admin.post_form("/gui/admin/controls/shutdown", {"confirm": "yes"})
    assert "Shutting down" in r.text
    admin.clock.advance(1)
    assert service.stops == 1


def fill_traffic(engine, clock):
    c = engine.counters
    for minute in range(30):
        c.received("relay", 100 + minute)
        c.received("inbound", 7)
        c.delivered(90)
        c.failed(hard=True, n=2)
        c.deferred_once(3)
        clock.advance(60)
        c.close_interval(clock.seconds())


def test_the_dashboard_shows_the_last_hour_the_queue_and_failures(admin):
    engine, clock = admin.engine, admin.clock
    fill_traffic(engine, clock)
    queue_file(engine, "retry", "Q1@h", ["a@slow.test", "b@slow.test"], age=5400)
    queue_file(engine, "hold", "Q2@h", ["c@x.test"])
    engine.queue.scan_retry()
    engine.recent_failures.add(
        FinalFailure(clock.seconds(), "Q0@h", "gone@x.test", True, "550 no such user")
    )
    page = admin.get("/gui/admin").text
    received = sum(100 + m + 7 for m in range(30))
    assert f">{received:,}<" in page  # received in the last hour
    assert f">{90 * 30:,}<" in page  # sent
    assert "1 h 30 min" in page  # oldest queued message
    assert "slow.test" in page and "550 no such user" in page
    assert "<svg" in page and "<polyline" in page
    assert re.search(r"\d+ recv \[210 inbound, \d+ relay\] \(\d+/h avg, \d+ total\)", page)
    assert 'data-refresh="/gui/admin/live"' in page


class Delivery:
    """Stands in for the delivery engine's status()."""

    def __init__(self, open_connections=7, held=False):
        self.open_connections = open_connections
        self.held = held
        self.calls = 0

    def status(self, now, top=20):
        self.calls += 1
        return DeliveryStatus(
            paused=False,
            open_connections=self.open_connections,
            hosts=(
                HostStatus("mx1.big.test (192.0.2.1:25)", self.open_connections, 100, 2, ""),
                HostStatus("mx.gone.test (192.0.2.9:25)", 0, 0, 5, "550 5.1.1 no such user"),
                HostStatus(
                    "mx.odd.test (192.0.2.5:25)", 0, 0, 3, "x", 2, "250 ok is no reply to DATA"
                ),
            ),
            domains=(DomainStatus("big.test", 1234, 600.0, "421 slow down"),),
            held_by_rate_cap=self.held,
            protocol_errors=2,
        )


def test_the_dashboard_uses_the_delivery_engines_status_when_it_runs(admin):
    admin.running.delivery = Delivery()
    page = admin.get("/gui/admin").text
    assert ">SENDING<" in page and "Sending: 7 connections open to 1 host." in page
    assert "mx1.big.test (192.0.2.1:25)" in page and "550 5.1.1 no such user" in page
    assert ">1,234<" in page and "421 slow down" in page
    assert "outbound SMTP to 1 host<" in page
    status = admin.get("/api/status").json()
    assert status["open_connections"] == 7 and status["destinations"][0]["domain"] == "big.test"


def test_a_host_out_of_step_shows_as_misbehaving_on_the_dashboard_and_in_metrics(admin):
    admin.running.delivery = Delivery()
    page = admin.get("/gui/admin").text
    assert "misbehaving (2 protocol errors): 250 ok is no reply to DATA" in page
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(admin.get("/metrics").text)
        for s in family.samples
    }
    assert samples[("mailengine_outbound_protocol_errors_total", ())] == 2
    host = (("host", "mx.odd.test (192.0.2.5:25)"),)
    assert samples[("mailengine_outbound_host_protocol_errors_total", host)] == 2


def test_a_pause_with_attempts_under_way_says_they_still_finish(admin):
    admin.running.delivery = Delivery(open_connections=3)
    admin.post_form("/gui/admin/controls/pause")
    text = admin.get("/gui/admin/live").text
    assert ">PAUSED<" in text
    assert "3 connections still finish the attempts already under way." in text


def test_the_hourly_cap_shows_with_its_value(admin):
    change_setting(admin.engine.config, "smtp_out", "max_messages_per_hour", 5000)
    admin.running.delivery = Delivery(open_connections=0, held=True)
    text = admin.get("/gui/admin/live").text
    assert ">RATE CAP<" in text and "5,000 messages were sent in the last hour" in text
    assert "no connection open" in text


def test_ages_keep_growing_while_the_queue_shape_is_reused(admin):
    engine, clock = admin.engine, admin.clock
    clock.advance(10)  # the shape the login's dashboard worked out is old now
    queue_file(engine, "retry", "Q1@h", ["a@x.test"], age=60)
    engine.queue.scan_retry()
    assert admin.get("/api/status").json()["oldest_seconds"] == 60
    clock.advance(3)  # the shape is worked out again only after a few seconds
    status = admin.get("/api/status").json()
    assert status["oldest_seconds"] == 63 and status["destinations"][0]["oldest_seconds"] == 63


def test_a_costly_delivery_status_is_asked_for_less_often(admin):
    from mailengine.web.snapshot import DeliveryView

    delivery = Delivery()
    admin.running.delivery = delivery
    ticks = iter(range(1000))
    view = DeliveryView(
        admin.engine, admin.running, timer=lambda: next(ticks) * 0.1
    )  # 0.1 s per call
    now = admin.clock.seconds()
    first = view.get(now, 20)
    again = view.get(now + 1.5, 20)  # within 20 x 0.1 s: reused, its ages moved on
    assert delivery.calls == 1 and again.domains[0].oldest_seconds == 601.5
    assert again.hosts == first.hosts
    view.get(now + 2.5, 20)
    assert delivery.calls == 2
    cheap = DeliveryView(admin.engine, admin.running, timer=lambda: 0.0)
    cheap.get(now, 20)
    cheap.get(now, 20)
    assert delivery.calls == 4  # a cheap answer is asked for every time


def test_metrics_parse_as_prometheus_text_and_match_the_engine(admin):
    engine, clock = admin.engine, admin.clock
    fill_traffic(engine, clock)
    queue_file(engine, "retry", "Q1@h", ["a@x.test", "b@x.test"], age=120)
    queue_file(engine, "hold", "Q2@h", ["c@y.test"])
    engine.queue.scan_retry()
    admin.post_form("/gui/admin/logout")
    r = admin.get("/metrics")  # no login needed
    assert r.code == 200 and r.header("content-type").startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("mailengine_messages_received_total", ())] == engine.counters.total_recv
    assert samples[("mailengine_recipients_total", (("outcome", "sent"),))] == 2700
    assert samples[("mailengine_recipients_total", (("outcome", "failed_hard"),))] == 60
    assert samples[("mailengine_queue_messages", (("dir", "retry"),))] == 1
    assert samples[("mailengine_queue_messages", (("dir", "hold"),))] == 1
    assert samples[("mailengine_destination_queued_recipients", (("domain", "x.test"),))] == 2
    assert samples[("mailengine_queue_oldest_message_age_seconds", ())] == 120
    assert samples[("mailengine_sending_paused", ())] == 0


def test_the_logs_page_tails_todays_log_and_offers_the_report_files(admin):
    from mailengine.web.logs import today_log_name

    engine = admin.engine
    os.makedirs(engine.log_dir, exist_ok=True)
    with open(os.path.join(engine.log_dir, today_log_name(admin.clock.seconds())), "w") as fh:
        fh.writelines(f"2023/11/14 12:00:{i:02d} line {i} <b>\n" for i in range(50))
    with open(engine.root_file("hard-undeliverable.txt"), "w") as fh:
        fh.write("gone@x.test\n")
    page = admin.get("/gui/admin/logs?lines=10").text
    assert "line 49 &lt;b&gt;" in page and "line 39" not in page
    assert 'href="/gui/admin/logs/file/hard-undeliverable.txt"' in page
    r = admin.get("/gui/admin/logs/file/hard-undeliverable.txt")
    assert r.code == 200 and r.text == "gone@x.test\n"
    assert "attachment" in r.header("content-disposition")
    assert admin.get("/gui/admin/logs/file/password.txt").code == 404
    assert admin.get("/gui/admin/logs/file/soft-bounces.txt").code == 404  # not there yet


def test_the_queue_summary_page_puts_each_count_under_its_own_age_column(admin):
    engine = admin.engine
    queue_file(engine, "retry", "A@h", ["a@x.test", "b@x.test"], age=7200)  # 80-160 min
    page = admin.get("/gui/admin/queue/summary").text
    table = re.search(r"<table.*?</table>", page, re.S).group(0)
    headers = re.findall(r"<th[^>]*>(.*?)</th>", table, re.S)
    row = re.search(r"<tr>(?:(?!</tr>).)*x\.test.*?</tr>", table, re.S).group(0)
    assert "<td><td" not in row  # no list of cells nested inside one cell
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    assert len(cells) == len(headers)
    counted = {h: c for h, c in zip(headers[4:], cells[4:], strict=True) if c != "·"}
    assert counted == {"&lt;160m": "2"}  # 120 minutes old: between 80 and 160


def test_traffic_counts_are_labelled_since_start_until_the_engine_ran_an_hour(admin):
    # The counts live in memory: after a restart they are not the last hour's.
    engine, clock = admin.engine, admin.clock
    page = admin.get("/gui/admin").text
    assert "Since start (" in page and ">Last hour<" not in page
    assert "Last hour, as the stats line prints it" not in page
    fill_traffic(engine, clock)  # 30 minutes
    clock.advance(3600)
    admin.login()  # the session timed out meanwhile
    page = admin.get("/gui/admin").text
    assert ">Last hour<" in page and "Since start (" not in page


def test_metrics_show_the_recipient_books_and_whether_they_balance(admin):
    engine = admin.engine
    queue_file(engine, "retry", "Q1@h", ["a@x.test", "b@x.test"])
    engine.queue.scan_retry()  # found: 2
    engine.counters.received_message(relay=0, local=3)
    engine.counters.attempt_outcome(sent=0, failed_hard=0, failed_soft=0, deferred=1, own=True)

    def samples():
        found = {}
        for family in text_string_to_metric_families(admin.get("/metrics").text):
            for s in family.samples:
                found[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return found

    admin.clock.advance(60)  # past a queue shape cached before
    admin.get("/metrics")  # the fresh shape is worked out behind a stale answer
    got = samples()
    assert got[("mailengine_books_recipients_total", (("entry", "found"),))] == 2
    assert got[("mailengine_books_recipients_total", (("entry", "received"),))] == 3
    assert got[("mailengine_books_recipients_total", (("entry", "local"),))] == 3
    assert got[("mailengine_books_queued_recipients", ())] == 2
    assert got[("mailengine_books_unaccounted_recipients", ())] == 0
    assert got[("mailengine_own_mail_recipients_total", (("outcome", "deferred"),))] == 1
    assert "+ 2 queued: balanced" in admin.get("/gui/admin").text  # the dashboard says so
    engine.queue.messages["Q1@h"].envelope.rcpt_to_send.pop()  # lost without an outcome
    admin.clock.advance(60)  # past the cached queue shape
    admin.get("/metrics")  # the fresh shape is worked out behind a stale answer
    assert samples()[("mailengine_books_unaccounted_recipients", ())] == 1


def test_with_the_delivery_engine_running_status_metrics_and_destinations_walk_no_queue(admin):
    from tests.twisted.test_delivery_engine import NoWalk

    engine = admin.engine
    engine.queue.messages = table = NoWalk()
    queue_file(engine, "retry", "Q1@h", ["a@x.test", "b@y.test"], age=60)
    engine.queue.scan_retry()
    admin.running.delivery = Delivery()
    table.is_forbidden = True
    status = admin.get("/api/status").json()
    assert status["oldest_seconds"] == 60 and status["books_queued"] == 2
    assert status["destinations"][0]["domain"] == "big.test"  # the delivery engine's
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(admin.get("/metrics").text)
        for s in family.samples
    }
    assert samples["mailengine_books_queued_recipients"] == 2
    assert samples["mailengine_books_unaccounted_recipients"] == 0
    listed = admin.get("/api/destinations").json()["destinations"]
    assert [d["domain"] for d in listed] == ["big.test"]
    assert "big.test" in admin.get("/gui/admin/destinations").text
