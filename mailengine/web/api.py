"""The JSON API under ``/api/``: status, settings, queue actions, pause/resume/shutdown.

Same gate as the pages: a logged-in session (with its CSRF token in
``X-CSRF-Token`` for writes) or ``Authorization: Bearer <[web] api_token>``.
"""

from __future__ import annotations

import json
from typing import Any

from mailengine.config.loader import ConfigError
from mailengine.config.schema import BY_NAME, SETTINGS, Setting
from mailengine.queue.actions import ACTIONS, NOT_FOUND, ActionResult, QueueEntry
from mailengine.queue.store import BadMessageId
from mailengine.web.admin import Routes, WebAdmin, is_secret, shown_value
from mailengine.web.auth import client_address, identity_of
from mailengine.web.login import arg
from mailengine.web.queuepages import SUMMARY_DIRS, parse_filter
from mailengine.web.settingspage import RESTART, lockout_problem, short_problem
from mailengine.web.snapshot import snapshot_json

MAX_LIMIT = 1000


class BadRequest(ValueError):
    """The client's mistake: answered 400 with the text."""


def setting_json(setting: Setting, admin: WebAdmin) -> dict[str, Any]:
    return {
        "section": setting.section,
        "key": setting.key,
        "value": shown_value(
            setting.section, setting.key, admin.engine.config.raw(setting.section, setting.key)
        ),
        "secret": is_secret(setting.section, setting.key),
        "default": setting.default,
        "group": setting.group,
        "help": setting.help,
        "allowed": setting.kind.allowed(),
        "live": setting.live,
    }


def entry_json(entry: QueueEntry, now: float) -> dict[str, Any]:
    env = entry.envelope
    data: dict[str, Any] = {
        "id": entry.message_id,
        "dir": entry.dirname,
        "size": entry.size,
        "being_sent": entry.is_being_sent or entry.dirname == "working",
        "waiting_for_connection": entry.is_waiting_to_send,
    }
    if env is None:
        data["error"] = entry.error
        return data
    data.update(
        mail_from=env.mail_from,
        rcpt_to_send=env.rcpt_to_send,
        rcpt_sent=env.rcpt_sent,
        rcpt_failed=env.rcpt_failed,
        rcpt_transient=env.rcpt_transient,
        time_created=env.time_created,
        age_seconds=round(now - env.time_created, 3),
        retry_time=env.retry_time,
        send_tries=env.send_tries,
        priority=env.priority,
        status=env.status,
        log=env.log,
    )
    return data


def result_json(r: ActionResult) -> dict[str, Any]:
    return {
        "id": r.message_id,
        "action": r.action,
        "ok": r.ok,
        "text": r.text,
        "from_dir": r.source,
        "to_dir": r.dest,
        "recipients_deleted": r.changed_recipients,
    }


def body_json(request: Any) -> dict[str, Any]:
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def int_arg(request: Any, name: str, default: int, maximum: int) -> int:
    try:
        return max(0, min(maximum, int(arg(request, name, str(default)))))
    except ValueError:
        raise BadRequest(f"{name} must be a whole number") from None


def add_routes(app: Routes, admin: WebAdmin) -> None:
    @app.handle_errors(BadRequest)
    def bad_request(request: Any, failure: Any) -> bytes:
        return admin.json(request, {"error": str(failure.value)}, 400)

    @app.handle_errors(BadMessageId)
    def bad_id(request: Any, failure: Any) -> bytes:
        return admin.json(request, {"error": "not a message id"}, 400)

    @app.route("/api/status", methods=["GET"])
    async def status(request: Any) -> bytes:
        return admin.json(request, snapshot_json(await admin.snapshot()))

    @app.route("/api/settings", methods=["GET"])
    def settings(request: Any) -> bytes:
        return admin.json(request, {"settings": [setting_json(s, admin) for s in SETTINGS]})

    @app.route("/api/settings/<section>/<key>", methods=["GET"])
    def one_setting(request: Any, section: str, key: str) -> bytes:
        setting = BY_NAME.get((section, key))
        if setting is None:
            return admin.json(request, {"error": f"[{section}] {key} is not a setting"}, 404)
        return admin.json(request, setting_json(setting, admin))

    @app.route("/api/settings/<section>/<key>", methods=["PUT", "POST"])
    def set_setting(request: Any, section: str, key: str) -> bytes:
        setting = BY_NAME.get((section, key))
        if setting is None:
            return admin.json(request, {"error": f"[{section}] {key} is not a setting"}, 404)
        data = body_json(request)
        if "value" not in data:
            raise BadRequest('send {"value": ...}')
        problem = lockout_problem(setting, data["value"], client_address(request))
        if problem:
            raise BadRequest(problem)
        try:
            admin.change(request, section, key, data["value"])
        except ConfigError as exc:
            raise BadRequest(short_problem(admin.engine.config, exc)) from None
        reply = setting_json(setting, admin)
        reply["applies"] = "now" if setting.live else RESTART
        return admin.json(request, reply)

    @app.route("/api/queue", methods=["GET"])
    async def queue(request: Any) -> bytes:
        try:
            which = parse_filter(lambda n: arg(request, n))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        offset = int_arg(request, "offset", 0, 10**9)
        limit = int_arg(request, "limit", 100, MAX_LIMIT)
        entries, total = await admin.queue.page(which, offset, limit)
        now = admin.now()
        return admin.json(
            request,
            {"total": total, "offset": offset, "messages": [entry_json(e, now) for e in entries]},
        )

    @app.route("/api/queue/summary", methods=["GET"])
    async def summary(request: Any) -> bytes:
        try:
            which = parse_filter(lambda n: arg(request, n), SUMMARY_DIRS)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        shapes = await admin.queue.summary(which.dirs)
        return admin.json(
            request,
            {
                "dirs": which.dirs,
                "domains": [
                    {
                        "domain": s.domain,
                        "recipients": s.recipients,
                        "messages": s.messages,
                        "oldest_seconds": round(s.oldest_seconds, 3),
                        "age_buckets": list(s.buckets),
                        "last_note": s.last_note,
                    }
                    for s in shapes
                ],
            },
        )

    @app.route("/api/queue/messages/<message_id>", methods=["GET"])
    async def message(request: Any, message_id: str) -> bytes:
        detail = await admin.queue.show(message_id)
        if detail is None:
            return admin.json(request, {"error": f"{message_id} is not in the queue"}, 404)
        data = entry_json(detail.entry, admin.now())
        data.update(inf=detail.inf_text, headers=detail.headers)
        return admin.json(request, data)

    @app.route("/api/queue/messages/<message_id>/<action>", methods=["POST"])
    async def act(request: Any, message_id: str, action: str) -> bytes:
        if action not in ACTIONS:
            raise BadRequest(f"no action {action!r} (actions: {', '.join(ACTIONS)})")
        result = await admin.queue.act(action, message_id, identity_of(request).user)
        code = 200 if result.ok else (404 if result.text == NOT_FOUND else 409)
        return admin.json(request, result_json(result), code)

    @app.route("/api/queue/domains/<domain>/<action>", methods=["POST"])
    async def act_on_domain(request: Any, domain: str, action: str) -> bytes:
        if action not in ACTIONS:
            raise BadRequest(f"no action {action!r} (actions: {', '.join(ACTIONS)})")
        try:
            which = parse_filter(lambda n: domain if n == "domain" else arg(request, n))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        results = await admin.queue.act_on_matching(action, which, identity_of(request).user)
        return admin.json(
            request,
            {
                "domain": which.domain,
                "dirs": which.dirs,
                "done": sum(r.ok for r in results),
                "results": [result_json(r) for r in results],
            },
        )

    @app.route("/api/control/<what>", methods=["POST"])
    def control(request: Any, what: str) -> bytes:
        if what in ("pause", "resume"):
            admin.set_paused(request, what == "pause")
            return admin.json(request, {"paused": bool(admin.engine.config.smtp_out.paused)})
        if what == "shutdown":
            if not admin.shutdown(request):
                return admin.json(request, {"error": "this engine cannot be stopped here"}, 409)
            return admin.json(request, {"stopping": True})
        return admin.json(request, {"error": f"no control {what!r}"}, 404)

    @app.route("/api/", branch=True)
    def unknown(request: Any) -> bytes:
        return admin.json(request, {"error": "no such API call"}, 404)
