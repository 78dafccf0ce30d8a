"""Controls: pause and resume sending (``[smtp_out] paused``), and a graceful shutdown."""

from __future__ import annotations

from typing import Any

from mailengine.config.loader import ConfigError
from mailengine.web.admin import Routes, WebAdmin
from mailengine.web.auth import identity_of
from mailengine.web.login import arg
from mailengine.web.render import el, post_button


def add_routes(app: Routes, admin: WebAdmin) -> None:
    @app.route("/gui/admin/controls", methods=["GET"])
    def controls(request: Any) -> bytes:
        csrf = identity_of(request).csrf
        paused = bool(admin.engine.config.smtp_out.paused)
        sending = el(
            "section",
            el("h2", "Sending"),
            el(
                "p",
                el(
                    "span",
                    "PAUSED" if paused else "ON",
                    class_="badge paused" if paused else "badge sending",
                ),
                " ",
                "Outbound SMTP is paused; received mail waits in retry/."
                if paused
                else "Outbound SMTP runs; pausing stops new attempts (mail waits in retry/).",
            ),
            post_button("/gui/admin/controls/resume", "Resume sending", csrf, cls="primary")
            if paused
            else post_button("/gui/admin/controls/pause", "Pause sending", csrf),
            el(
                "p",
                "Saved as [smtp_out] paused in the configuration, so it survives a restart.",
                class_="muted",
            ),
            class_="card",
        )
        stop = el(
            "section",
            el("h2", "Shut down"),
            el(
                "p",
                "Stops receiving, finishes the sessions in progress, writes every message "
                "held in memory to retry/ and exits (like kill -15 or `mailengine shutdown`).",
            ),
            post_button(
                "/gui/admin/controls/shutdown", "Shut down MailEngine…", csrf, cls="danger"
            ),
            class_="card",
        )
        return admin.page(
            request, "Controls", el("div", el("h1", "Controls"), sending, stop), active="controls"
        )

    def set_paused(request: Any, paused: bool) -> bytes:
        try:
            admin.set_paused(request, paused)
        except (ConfigError, OSError) as exc:
            admin.flash(request, f"Could not change [smtp_out] paused: {exc}")
            return admin.back(request)
        admin.flash(
            request, "Sending paused: mail waits in retry/." if paused else "Sending resumed."
        )
        return admin.back(request)

    @app.route("/gui/admin/controls/pause", methods=["POST"])
    def pause(request: Any) -> bytes:
        return set_paused(request, True)

    @app.route("/gui/admin/controls/resume", methods=["POST"])
    def resume(request: Any) -> bytes:
        return set_paused(request, False)

    @app.route("/gui/admin/controls/shutdown", methods=["POST"])
    def shutdown(request: Any) -> bytes:
        csrf = identity_of(request).csrf
        if arg(request, "confirm") != "yes":
            body = el(
                "section",
                el("h1", "Shut down MailEngine?"),
                el(
                    "p",
                    "Receiving stops, sessions in progress finish, messages in memory are "
                    "written to retry/, then the process exits. Starting it again needs "
                    "access to the machine.",
                ),
                post_button(
                    "/gui/admin/controls/shutdown",
                    "Yes, shut down",
                    csrf,
                    cls="danger",
                    confirm="yes",
                ),
                " ",
                el("a", "Cancel", href="/gui/admin/controls", class_="button"),
                class_="card narrow",
            )
            return admin.page(request, "Confirm shutdown", body, active="controls")
        if not admin.shutdown(request):
            admin.flash(request, "This engine cannot be stopped from the web admin.")
            return admin.redirect(request, "/gui/admin/controls")
        body = el(
            "section",
            el("h1", "Shutting down"),
            el(
                "p",
                "MailEngine is stopping gracefully. This page will not answer again "
                "until the engine is started.",
            ),
            class_="card narrow",
        )
        return admin.page(request, "Shutting down", body, active="controls")
