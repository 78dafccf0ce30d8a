"""``/metrics`` in the Prometheus text format (0.0.4), rendered from a snapshot (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mailengine.reports.categories import CATEGORIES
from mailengine.web.admin import Routes, WebAdmin
from mailengine.web.snapshot import Snapshot

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def family(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        if labels:
            inner = ",".join(f'{k}="{label_value(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{inner}}} {_number(value)}")
        else:
            lines.append(f"{name} {_number(value)}")
    return lines


def render_metrics(s: Snapshot) -> str:
    t = s.totals
    out: list[str] = []
    out += family(
        "mailengine_messages_received_total",
        "counter",
        "Messages received over SMTP since start (local domains and relay).",
        [({}, t.received)],
    )
    out += family(
        "mailengine_recipients_total",
        "counter",
        "Recipients by delivery outcome since start: sent (accepted by the receiving "
        "server), failed_hard (5xx), failed_soft (given up after retries), deferred "
        "(a soft failure that will be retried).",
        [
            ({"outcome": "sent"}, t.sent),
            ({"outcome": "failed_hard"}, t.failed_hard),
            ({"outcome": "failed_soft"}, t.failed_soft),
            ({"outcome": "deferred"}, t.deferred),
        ],
    )
    out += family(
        "mailengine_own_mail_recipients_total",
        "counter",
        "Recipients of the engine's own DSNs, delivery reports and notices by outcome "
        "(not in mailengine_recipients_total).",
        [({"outcome": k}, v) for k, v in s.own_mail.items()],
    )
    out += books_metrics(s)
    out += family(
        "mailengine_bounces_total",
        "counter",
        "Final failures and received bounces since start, by bounce category "
        "(README: Bounce categories).",
        [({"category": c}, t.bounces.get(c, 0)) for c in CATEGORIES],
    )
    out += family(
        "mailengine_rejected_total",
        "counter",
        "Senders or recipients refused by the SMTP server since start.",
        [({}, t.rejected)],
    )
    out += family(
        "mailengine_dkim_messages_total",
        "counter",
        "Messages queued for sending (relay and the engine's own DSNs and reports) by DKIM "
        "outcome since start: signed, or unsignable (no single "
        "From: domain, ...; sent unsigned with a warning). Mail without a key is neither.",
        [({"outcome": "signed"}, t.dkim_signed), ({"outcome": "unsignable"}, t.dkim_unsignable)],
    )
    out += family(
        "mailengine_dkim_signed_in_engine_total",
        "counter",
        "Messages the engine signed itself since start because its DKIM signing process "
        "([dkim] separate_process) was unavailable (failed, stuck, or restarting).",
        [({}, t.dkim_signed_in_engine)],
    )
    out += family(
        "mailengine_queue_messages",
        "gauge",
        "Messages per mailq/ directory.",
        [({"dir": d}, n) for d, n in sorted(s.queue.dirs.items())],
    )
    out += family(
        "mailengine_queue_memory_messages",
        "gauge",
        "Messages held in memory for sending.",
        [({}, s.queue.memory_messages)],
    )
    out += family(
        "mailengine_queue_memory_bytes",
        "gauge",
        "Bytes of message data held in memory.",
        [({}, s.queue.memory_bytes)],
    )
    out += family(
        "mailengine_queue_oldest_message_age_seconds",
        "gauge",
        "Age of the oldest message the engine still has to send.",
        [({}, round(s.oldest_seconds, 3))],
    )
    out += family(
        "mailengine_outbound_connections_open",
        "gauge",
        "Open outbound SMTP connections.",
        [({}, s.open_connections)],
    )
    out += family(
        "mailengine_outbound_host_connections_open",
        "gauge",
        "Open outbound SMTP connections per receiving host (busiest hosts).",
        [({"host": h.host}, h.open_connections) for h in s.hosts[:20]],
    )
    out += family(
        "mailengine_outbound_protocol_errors_total",
        "counter",
        "Outbound SMTP sessions ended because the receiving server answered out of step "
        "(a protocol error: its open recipients were deferred).",
        [({}, s.protocol_errors)],
    )
    out += family(
        "mailengine_outbound_host_protocol_errors_total",
        "counter",
        "Protocol errors per misbehaving receiving host (hosts shown by the admin).",
        [({"host": h.host}, h.protocol_errors) for h in s.hosts[:20] if h.protocol_errors],
    )
    out += family(
        "mailengine_destination_queued_recipients",
        "gauge",
        "Recipients queued per destination domain (the domains with most).",
        [({"domain": d.domain}, d.queued_recipients) for d in s.destinations],
    )
    out += family(
        "mailengine_destination_oldest_age_seconds",
        "gauge",
        "Age of the oldest queued message per destination domain.",
        [({"domain": d.domain}, round(d.oldest_seconds, 3)) for d in s.destinations],
    )
    out += family(
        "mailengine_destinations",
        "gauge",
        "Destination domains the traffic shaper knows, per state (sending, suspended, "
        "throttled, dns_failing, dns_lookup, connection_capped, rate_limited).",
        [({"state": state}, n) for state, n in s.destination_states],
    )
    out += family(
        "mailengine_shaping_events_total",
        "counter",
        "Per [[shaping.rule]] name since start: suspend and throttle reactions, "
        "connections opened.",
        [({"rule": rule, "event": event}, n) for rule, event, n in s.rule_events],
    )
    out += family(
        "mailengine_sending_paused",
        "gauge",
        "1 while sending is paused.",
        [({}, 1 if s.paused else 0)],
    )
    out += family(
        "mailengine_sending_held_by_rate_cap",
        "gauge",
        "1 while [smtp_out] max_messages_per_hour holds sending back.",
        [({}, 1 if s.held_by_rate_cap else 0)],
    )
    out += cluster_metrics(s)
    out += family(
        "mailengine_delivery_running",
        "gauge",
        "1 when the delivery engine runs in this process.",
        [({}, 1 if s.delivery_running else 0)],
    )
    out += family(
        "mailengine_start_time_seconds",
        "gauge",
        "When the engine started (epoch).",
        [({}, round(s.started, 3))],
    )
    out += family(
        "mailengine_info",
        "gauge",
        "Version and host name.",
        [({"version": s.version, "hostname": s.hostname}, 1)],
    )
    return "\n".join(out) + "\n"


def cluster_metrics(s: Snapshot) -> list[str]:
    """A node of a cluster ([cluster] redis_url): shared or falling back, nodes, leases."""
    view = s.cluster
    if view is None:
        return []
    out = family(
        "mailengine_cluster_fallback",
        "gauge",
        "1 while Redis cannot be reached and each cap is this node's share (cap / nodes "
        "last seen); 0 while caps are shared through Redis.",
        [({}, 0 if view.is_shared else 1)],
    )
    out += family(
        "mailengine_cluster_nodes_seen",
        "gauge",
        "Nodes sharing the caps (as last seen through Redis).",
        [({}, view.node_count)],
    )
    out += family(
        "mailengine_cluster_leases_held",
        "gauge",
        "Connection leases this node (a box: its workers) holds under the shared caps.",
        [({}, view.leases)],
    )
    return out


def books_metrics(s: Snapshot) -> list[str]:
    """The recipient books (observe.books): in = out + queued at any quiet moment."""
    books = s.books
    out = family(
        "mailengine_books_recipients_total",
        "counter",
        "Recipients into the queue (received, generated, found) and out of it (sent, "
        "failed_hard, failed_soft, local, removed) since start.",
        [({"entry": name}, value) for name, value in books.as_dict().items()],
    )
    out += family(
        "mailengine_books_queued_recipients",
        "gauge",
        "Recipients still to send in every message the engine holds.",
        [({}, s.books_queued)],
    )
    out += family(
        "mailengine_books_unaccounted_recipients",
        "gauge",
        "In minus out minus queued: 0 when every recipient is accounted for (a message "
        "being received or sent at that moment may show for an instant).",
        [({}, books.unaccounted(s.books_queued))],
    )
    return out


def add_routes(app: Routes, admin: WebAdmin) -> None:
    @app.route("/metrics", methods=["GET"])
    async def metrics(request: Any) -> bytes:
        snapshot = await admin.snapshot()
        request.setHeader(b"content-type", CONTENT_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        return render_metrics(snapshot).encode("utf-8")
