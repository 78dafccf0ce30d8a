"""Command-line options of ``twistd mailengine``."""

from __future__ import annotations

from twisted.python import usage


class Options(usage.Options):
    synopsis = "[--root DIR] [--config FILE] [--test]"
    longdesc = (
        "Runs MailEngine. ROOT holds config/, mailq/ and log/. Foreground: "
        "twistd -n mailengine; daemon with a pid file: twistd --pidfile=FILE mailengine."
    )
    optParameters = [
        ["root", "r", ".", "directory holding config/, mailq/ and log/"],
        [
            "config",
            "c",
            None,
            "config file (default ROOT/config/mailengine.toml; created "
            "from the shipped template when missing)",
        ],
    ]
    optFlags = [
        [
            "test",
            "t",
            "test mode: queue in ROOT/mailq-test/, outbound sessions send RSET "
            "and QUIT instead of DATA",
        ],
    ]

    def postOptions(self) -> None:
        # Log lines as the manual prints them, unless the operator chose a logger or syslog.
        parent = getattr(self, "parent", None)
        if parent is not None and not parent.get("logger") and not parent.get("syslog"):
            from mailengine.observe import logfiles

            logfiles.console_target["logfile"] = parent.get("logfile") or ""
            logfiles.console_target["nodaemon"] = bool(parent.get("nodaemon"))
            parent["logger"] = "mailengine.observe.logfiles.console_observer"
