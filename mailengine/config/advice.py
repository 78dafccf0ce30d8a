"""Settings that are valid but unwise, as warnings logged at start-up (pure)."""

from __future__ import annotations

from mailengine.config.model import Config


def advice(config: Config) -> list[str]:
    out: list[str] = []
    q = config.queue
    if q.retry_intervals_minutes and q.check_interval_seconds > min(q.retry_intervals_minutes) * 60:
        out.append(
            f"[queue] check_interval_seconds = {q.check_interval_seconds} is longer than the "
            f"shortest retry interval ({min(q.retry_intervals_minutes):g} minutes): files other "
            "programs drop into retry/ wait up to the check interval (manual §5: keep it at or "
            "below the shortest retry interval)"
        )
    if config.smtp_in.relay_ips.has_zero:
        out.append(
            '[smtp_in] relay_ips contains "0": everyone may relay through this engine '
            "(keep it behind a firewall)"
        )
    bounce_host = config.smtp_out.bounce_host.lower()
    local = config.server.local_domains
    if bounce_host and not ({"@", "."} & set(local)) and bounce_host not in local:
        out.append(
            f"[smtp_out] bounce_host = {bounce_host!r} is not one of "
            "[server] local_domains: returning bounces will be refused as relay"
        )
    return out
