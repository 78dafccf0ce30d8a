"""Every setting the manual lists exists with the manual's default and limits (manual §6).

The defaults below are copied from the manual (the Japanese original's settings
chapter, ``設定``), not from the schema, so a changed default fails here.
"""

from __future__ import annotations

import pytest

from mailengine.config.kinds import Invalid
from mailengine.config.schema import BY_NAME, SETTINGS, setting

# (section, key) -> (the manual's name, the manual's default)
MANUAL: dict[tuple[str, str], tuple[str, object]] = {
    # 基本設定 Basic
    ("dns", "bypass"): ("DNS バイパス (DNS サーバ設定)", []),
    ("dns", "preload_domains"): ("ドメインのプリロード", []),
    ("server", "local_domains"): ("ローカルドメイン名", []),
    ("server", "admin_email"): ("管理用メールアドレス", ""),
    # TCP/IP とポート設定
    ("server", "helo_text"): ("HELO テキスト", ""),
    ("smtp_in", "listen_ips"): ("SMTP 受信 IP アドレス", []),
    ("smtp_in", "port"): ("SMTP 受信ポート", 25),
    ("smtp_out", "outbound_ip"): ("SMTP 送信用 TCP/IP アドレス", ""),
    ("web", "port"): ("Web インタフェースポート番号", 81),
    # 許可と制限設定 Permissions
    ("smtp_in", "relay_domains"): ("RCPT TO 中継", []),
    ("smtp_in", "relay_ips"): ("中継許可対象 IP アドレス", ["127.0.0.1"]),
    ("smtp_in", "reject_mail_from"): ("拒否対象 MAIL FROM", []),
    ("smtp_out", "reject_mail_servers"): ("拒否対象 メールサーバ", []),
    # メールキュー設定 Queue
    ("queue", "use_dsn"): ("DSN メールの使用", False),
    ("queue", "check_interval_seconds"): ("キューのチェック間隔", 600),
    ("smtp_out", "paused"): ("メール送信中止", False),
    ("queue", "use_disk_for_relay"): ("中継時にディスクを使用", False),
    ("queue", "save_done"): ("処理済みメールの保存", False),
    ("queue", "done_retention_minutes"): ("処理済みメールの保存時間", 60),
    ("queue", "save_incoming"): ("受信メールの保存", False),
    ("queue", "incoming_retention_minutes"): ("受信メールの保存時間", 60),
    ("queue", "retry_intervals_minutes"): ("送信リトライ間隔", [30, 120, 240, 480, 960]),
    # ログ管理設定 Logs
    ("smtp_out", "bounce_host"): ("バウンスメールの受信", ""),
    ("logs", "retention_days"): ("ログを保存する日数", 10),
    ("logs", "log_undeliverable"): ("配送不可能なメールをログ", True),
    ("logs", "stats_interval_seconds"): ("配送速度統計の間隔", 10),
    # 上限設定 Limits
    ("smtp_in", "timeout_seconds"): ("SMTP 受信タイムアウト", 600),
    ("smtp_out", "connect_timeout_seconds"): ("SMTP 接続タイムアウト", 240),
    ("smtp_out", "write_timeout_seconds"): ("SMTP 書き込みタイムアウト", 240),
    ("smtp_out", "body_timeout_seconds"): ("SMTP 本文タイムアウト", 600),
    ("smtp_out", "read_timeout_seconds"): ("SMTP 読み込みタイムアウト", 240),
    ("server", "max_threads"): ("システムスレッド数の上限", 500),
    ("smtp_out", "max_connections_per_host"): ("ホストごとの最大接続数", 10),
    ("queue", "max_messages_in_memory"): ("メモリ内のメッセージ", 500000),
    ("smtp_out", "max_messages_per_hour"): ("メール送信速度の上限", 0),
    ("smtp_in", "priority_ips"): ("受信メールの優先順位", []),
    ("smtp_in", "max_message_size_bytes"): ("受信メールサイズ上限", 10485760),
    ("smtp_out", "max_connections"): ("送信接続数の上限 (UNIX)", 500),
    ("queue", "max_memory_kb"): ("最大キューメモリ", 2000000),
    ("smtp_out", "max_bandwidth_bytes_per_minute"): ("最大送信帯域幅", 0),
    # トラブルシューティング設定 Troubleshooting
    ("logs", "debug_dns"): ("DNS デバッグ情報表示", False),
    ("logs", "debug_smtp_out"): ("SMTP 送信情報の表示", False),
    ("logs", "debug_smtp_in"): ("SMTP 受信情報", False),
    ("logs", "log_queue_size"): ("キューのサイズ", True),
    ("logs", "log_queue_memory"): ("キューのメモリの使用", True),
    ("logs", "debug_program"): ("プログラムデバッグ情報表示", False),
    ("logs", "debug_send_loop"): ("送信ループ表示", False),
    ("reports", "type"): ("配送レポートの使用", ""),
    ("reports", "recipients"): ("配送レポート受信者", []),
    ("reports", "domains"): ("配送レポート対象ドメイン", []),
}

# Where the project chose another default than the manual, and why (the foundation issue).
DEVIATIONS: dict[tuple[str, str], tuple[str, object, object, str]] = {
    ("dns", "servers"): (
        "DNS サーバ設定",
        "the root name servers",
        [],
        "empty means the system's resolv.conf: a relay behind a resolver, not a root walker",
    ),
    ("web", "allowed_ips"): (
        "Web インタフェース IP アドレス",
        [],
        ["127.0.0.1"],
        "blank meant every client; the admin now starts reachable from this machine only",
    ),
}

# Settings the manual does not have; each was asked for by an issue.
ADDITIONS = {
    ("smtp_in", "max_connections"): "the manual's 受信接続数の上限, named but without a default",
    ("smtp_in", "max_connections_per_ip"): "inbound issue: per-address cap",
    ("smtp_in", "tls_certificate"): "inbound issue: STARTTLS",
    ("smtp_in", "tls_private_key"): "inbound issue: STARTTLS",
    ("smtp_in", "auth_mechanisms"): "inbound issue: SMTP AUTH",
    ("smtp_in", "allow_plain_auth_without_tls"): "inbound issue: SMTP AUTH",
    ("smtp_in", "data_timeout_seconds"): "issue 9: a DATA dripped a byte at a time ends",
    ("smtp_in", "auth_max_failures"): "issue 9: AUTH guessing locked out per address",
    ("smtp_in", "auth_lockout_seconds"): "issue 9: AUTH guessing locked out per address",
    ("smtp_out", "remote_port"): "foundation issue: labs and tests",
    ("smtp_out", "tls_verify_domains"): "outbound issue: TLS",
    ("web", "listen_ips"): "web issue: where the admin listens",
    ("web", "api_token"): "web issue: JSON API",
    ("server", "low_disk_space_mb"): "outbound issue: the low-disk admin notice's threshold",
    ("server", "stop_timeout_seconds"): "foundation issue: the bound of a graceful stop",
    ("server", "workers"): "issue 13: worker processes on one box",
    ("dkim", "key"): "issue 11: DKIM signing keys",
    ("dkim", "headers"): "issue 11: DKIM signed header fields",
    ("dkim", "canonicalization"): "issue 11: DKIM canonicalization",
    ("dkim", "separate_process"): "issue 11: DKIM signatures made on another core",
    ("dkim", "rsa_multi_buffer"): "issue 11: RSA signatures eight at a time (Intel crypto_mb)",
    ("events", "enabled"): "issue 12: the per-recipient event log",
    ("events", "webhook_url"): "issue 12: the event log's webhook",
    ("logs", "undeliverable_reasons"): "issue 12: the reply beside the address",
    ("suppression", "enabled"): "issue 12: the suppression list",
    ("suppression", "action"): "issue 12: refuse or drop suppressed recipients",
    ("shaping", "rule"): "issue 10: traffic shaping rules",
    ("shaping", "reaction"): "issue 10: reactions to deferrals",
    ("egress", "pool"): "issue 10: egress pools of source addresses",
    ("cluster", "redis_url"): "issue 13: caps shared between nodes through Redis",
    ("cluster", "node_name"): "issue 13: a node's name among the others",
}


def test_every_setting_is_the_manuals_a_documented_deviation_or_a_documented_addition():
    names = set(BY_NAME)
    listed = set(MANUAL) | set(DEVIATIONS) | set(ADDITIONS)
    assert names - listed == set(), "a setting neither in the manual nor documented here"
    assert listed - names == set(), "a setting of the manual (or listed here) is missing"
    assert not set(MANUAL) & set(DEVIATIONS) and not set(ADDITIONS) & (
        set(MANUAL) | set(DEVIATIONS)
    )


@pytest.mark.parametrize("name", sorted(MANUAL), ids=".".join)
def test_the_default_is_the_manuals(name):
    _, default = MANUAL[name]
    assert BY_NAME[name].default == default


@pytest.mark.parametrize("name", sorted(DEVIATIONS), ids=".".join)
def test_a_deviation_from_the_manuals_default_is_the_documented_one(name):
    _, manual_default, ours, _ = DEVIATIONS[name]
    assert BY_NAME[name].default == ours != manual_default


@pytest.mark.parametrize(
    ("section", "key", "too_small", "smallest"),
    [
        ("smtp_in", "timeout_seconds", 4, 5),
        ("smtp_out", "connect_timeout_seconds", 4, 5),
        ("smtp_out", "write_timeout_seconds", 4, 5),
        ("smtp_out", "body_timeout_seconds", 4, 5),
        ("smtp_out", "read_timeout_seconds", 4, 5),
        ("smtp_in", "max_message_size_bytes", 1023, 1024),
        ("queue", "max_memory_kb", 999, 1000),
    ],
)
def test_the_manuals_minimums_are_enforced(section, key, too_small, smallest):
    kind = setting(section, key).kind
    with pytest.raises(Invalid):
        kind.parse(too_small)
    assert kind.parse(smallest) == smallest


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("smtp_in", "max_message_size_bytes", 0),  # no limit
        ("smtp_in", "port", 1),  # receiving off
        ("web", "port", 0),  # web admin off
        ("queue", "done_retention_minutes", 0),  # keep forever
        ("queue", "incoming_retention_minutes", 0),
        ("logs", "retention_days", 0),  # no log files
        ("logs", "stats_interval_seconds", 0),  # no stats lines
        ("smtp_out", "max_messages_per_hour", 0),  # no cap
        ("smtp_out", "max_bandwidth_bytes_per_minute", 0),
    ],
)
def test_the_manuals_special_values_are_accepted(section, key, value):
    assert setting(section, key).kind.parse(value) == value


def test_zero_in_ip_lists_and_a_single_zero_retry_interval_mean_what_the_manual_says():
    assert setting("smtp_in", "relay_ips").kind.parse(["0"]).has_zero  # everyone may relay
    assert setting("smtp_in", "priority_ips").kind.parse(["0"]).has_zero
    assert setting("web", "allowed_ips").kind.parse(["0"]).has_zero  # web admin off
    assert setting("queue", "retry_intervals_minutes").kind.parse([0]) == ()  # never retry


def test_only_listening_and_start_up_resources_wait_for_a_restart():
    restart_only = {s.name for s in SETTINGS if not s.live}
    assert restart_only == {
        "server.max_threads",
        "server.workers",
        "smtp_in.listen_ips",
        "smtp_in.port",
        "smtp_in.tls_certificate",
        "smtp_in.tls_private_key",
        "smtp_in.auth_mechanisms",
        "dns.servers",
        "web.port",
        "web.listen_ips",
        "dkim.key",
        "dkim.separate_process",
        "dkim.rsa_multi_buffer",  # the signing process gets it with the keys, at start
        "cluster.redis_url",  # the link to Redis is made at start
        "cluster.node_name",
    }


# Which test fails when the engine ignores a setting (each was checked by running the
# suite with the setting forced to its default; see the settings audit report).
S = "system/test_settings.py::"
SH = "system/test_shaping.py::"
CL = "system/test_cluster.py::"
PROOFS: dict[str, tuple[str, ...]] = {
    "server.admin_email": (
        S + "test_admin_email_set_through_the_api_is_told_when_descriptors_run_out",
    ),
    "server.helo_text": (
        S + "test_outbound_identity_changed_through_the_api_is_used_by_the_next_session",
        S + "test_helo_text_from_the_file_names_the_engine_in_its_smtp_greeting",
    ),
    "server.local_domains": (
        S + "test_relay_rules_changed_through_the_api_apply_to_the_next_rcpt_of_an_open_session",
    ),
    "server.max_threads": (
        "unit/test_settings_engine.py::test_max_threads_sizes_the_thread_pool_for_disk_and_password_work",
    ),
    "smtp_in.listen_ips": (
        S + "test_listen_ips_bind_only_the_listed_addresses_and_web_port_0_turns_the_admin_off",
    ),
    "smtp_in.port": (
        "system/test_inbound.py::test_listens_on_each_address_of_a_range_and_port_1_turns_receiving_off",
    ),
    "smtp_in.relay_ips": (
        S + "test_relay_rules_changed_through_the_api_apply_to_the_next_rcpt_of_an_open_session",
    ),
    "smtp_in.relay_domains": (
        S + "test_relay_rules_changed_through_the_api_apply_to_the_next_rcpt_of_an_open_session",
    ),
    "smtp_in.reject_mail_from": (
        S + "test_sender_and_size_rules_changed_through_the_api_apply_to_the_next_command",
    ),
    "smtp_in.priority_ips": (
        S + "test_connection_limits_and_idle_timeout_changed_through_the_api_apply_to_new_sessions",
    ),
    "smtp_in.max_connections": (
        S + "test_connection_limits_and_idle_timeout_changed_through_the_api_apply_to_new_sessions",
    ),
    "smtp_in.max_connections_per_ip": (
        S + "test_connection_limits_and_idle_timeout_changed_through_the_api_apply_to_new_sessions",
    ),
    "smtp_in.timeout_seconds": (
        S + "test_connection_limits_and_idle_timeout_changed_through_the_api_apply_to_new_sessions",
    ),
    "smtp_in.data_timeout_seconds": (
        S + "test_a_client_dripping_bytes_is_cut_at_timeout_seconds_and_data_timeout_seconds",
        "twisted/test_inbound_limits.py::"
        "test_data_dripped_a_byte_at_a_time_is_cut_at_data_timeout_seconds",
    ),
    "smtp_in.max_message_size_bytes": (
        S + "test_sender_and_size_rules_changed_through_the_api_apply_to_the_next_command",
    ),
    "smtp_in.tls_certificate": (
        "system/test_inbound.py::test_starttls_then_auth_lets_a_stranger_relay",
    ),
    "smtp_in.tls_private_key": (
        "system/test_inbound.py::test_starttls_then_auth_lets_a_stranger_relay",
    ),
    "smtp_in.auth_mechanisms": (
        S + "test_only_configured_auth_mechanisms_are_offered_and_plain_auth_follows_the_api",
    ),
    "smtp_in.allow_plain_auth_without_tls": (
        S + "test_only_configured_auth_mechanisms_are_offered_and_plain_auth_follows_the_api",
    ),
    "smtp_in.auth_max_failures": (
        S + "test_auth_lockout_changed_through_the_api_locks_a_guessing_address_out",
        "twisted/test_inbound_limits.py::test_auth_max_failures_0_logs_failures_but_never_locks_out",
    ),
    "smtp_in.auth_lockout_seconds": (
        S + "test_auth_lockout_changed_through_the_api_locks_a_guessing_address_out",
        "twisted/test_inbound_limits.py::"
        "test_password_guessing_from_one_address_is_locked_out_across_connections",
    ),
    "smtp_out.outbound_ip": (
        S + "test_outbound_identity_changed_through_the_api_is_used_by_the_next_session",
    ),
    "smtp_out.remote_port": (
        S
        + "test_remote_port_and_reject_mail_servers_changed_through_the_api_route_the_next_message",
    ),
    "smtp_out.reject_mail_servers": (
        S
        + "test_remote_port_and_reject_mail_servers_changed_through_the_api_route_the_next_message",
    ),
    "smtp_out.max_connections": (
        S + "test_a_lower_total_connection_cap_set_through_the_api_holds_every_host",
    ),
    "smtp_out.max_connections_per_host": (
        S + "test_a_lower_total_connection_cap_set_through_the_api_holds_every_host",
    ),
    "smtp_out.connect_timeout_seconds": (
        S + "test_the_four_outbound_timeouts_changed_through_the_api_end_stuck_sessions",
    ),
    "smtp_out.write_timeout_seconds": (
        S + "test_the_four_outbound_timeouts_changed_through_the_api_end_stuck_sessions",
    ),
    "smtp_out.read_timeout_seconds": (
        S + "test_the_four_outbound_timeouts_changed_through_the_api_end_stuck_sessions",
    ),
    "smtp_out.body_timeout_seconds": (
        S + "test_the_four_outbound_timeouts_changed_through_the_api_end_stuck_sessions",
    ),
    "smtp_out.max_messages_per_hour": (S + "test_an_hourly_cap_set_through_the_api_holds_sending",),
    "smtp_out.max_bandwidth_bytes_per_minute": (
        S + "test_a_bandwidth_cap_set_through_the_api_holds_sending",
    ),
    "smtp_out.paused": (
        "system/test_delivery.py::test_paused_sending_keeps_mail_in_retry_and_resume_sends_it_all",
        "twisted/test_delivery_engine.py::"
        "test_pausing_at_run_time_sends_new_mail_to_retry_and_resuming_sends_it",
    ),
    "smtp_out.bounce_host": (
        S + "test_outbound_identity_changed_through_the_api_is_used_by_the_next_session",
    ),
    "smtp_out.tls_verify_domains": (
        S + "test_tls_verify_domains_changed_through_the_api_make_an_unverified_mx_fail_soft",
    ),
    "dns.servers": (S + "test_dns_settings_changed_through_the_api_apply_to_the_next_lookup",),
    "dns.bypass": (S + "test_dns_settings_changed_through_the_api_apply_to_the_next_lookup",),
    "dns.preload_domains": (
        S + "test_dns_settings_changed_through_the_api_apply_to_the_next_lookup",
    ),
    "queue.check_interval_seconds": (
        "twisted/test_queue_checker.py::"
        "test_shutdown_file_stops_the_engine_without_a_scan_and_checks_follow_the_live_interval",
        S + "test_a_shorter_check_interval_set_through_the_api_applies_to_the_next_scan",
    ),
    "queue.retry_intervals_minutes": (
        S + "test_retry_intervals_changed_through_the_api_time_the_next_retries",
    ),
    "queue.use_disk_for_relay": (
        S + "test_use_disk_for_relay_switched_on_through_the_api_keeps_mail_through_a_crash",
    ),
    "queue.save_done": (
        S + "test_save_done_and_use_dsn_switched_on_through_the_api_apply_to_the_next_attempt",
    ),
    "queue.done_retention_minutes": (
        S + "test_retention_minutes_changed_through_the_api_decide_what_the_next_check_removes",
    ),
    "queue.save_incoming": (
        S + "test_relay_rules_changed_through_the_api_apply_to_the_next_rcpt_of_an_open_session",
    ),
    "queue.incoming_retention_minutes": (
        S + "test_retention_minutes_changed_through_the_api_decide_what_the_next_check_removes",
    ),
    "queue.max_messages_in_memory": (
        S + "test_memory_limits_changed_through_the_api_offload_new_mail_to_retry",
    ),
    "queue.max_memory_kb": (
        S + "test_memory_limits_changed_through_the_api_offload_new_mail_to_retry",
    ),
    "queue.use_dsn": (
        S + "test_save_done_and_use_dsn_switched_on_through_the_api_apply_to_the_next_attempt",
    ),
    "logs.retention_days": (
        S + "test_log_retention_days_prune_old_files_and_0_set_through_the_api_stops_writing_them",
    ),
    "logs.log_undeliverable": (
        S + "test_log_undeliverable_switched_off_through_the_api_stops_the_undeliverable_file",
    ),
    "logs.stats_interval_seconds": (
        S + "test_stats_lines_follow_the_logs_settings_changed_through_the_api",
    ),
    "logs.log_queue_size": (
        S + "test_stats_lines_follow_the_logs_settings_changed_through_the_api",
    ),
    "logs.log_queue_memory": (
        S + "test_stats_lines_follow_the_logs_settings_changed_through_the_api",
    ),
    "logs.debug_dns": (S + "test_dns_settings_changed_through_the_api_apply_to_the_next_lookup",),
    "logs.debug_smtp_out": (S + "test_debug_flags_switched_on_through_the_api_log_what_they_name",),
    "logs.debug_smtp_in": (S + "test_debug_flags_switched_on_through_the_api_log_what_they_name",),
    "logs.debug_program": (S + "test_debug_flags_switched_on_through_the_api_log_what_they_name",),
    "logs.debug_send_loop": (
        S + "test_debug_flags_switched_on_through_the_api_log_what_they_name",
    ),
    "reports.type": (
        S
        + "test_delivery_reports_set_through_the_api_go_to_their_recipients_for_the_listed_domains",
    ),
    "reports.recipients": (
        S
        + "test_delivery_reports_set_through_the_api_go_to_their_recipients_for_the_listed_domains",
    ),
    "reports.domains": (
        S
        + "test_delivery_reports_set_through_the_api_go_to_their_recipients_for_the_listed_domains",
    ),
    "web.port": (
        "system/test_foundation.py::test_starts_answers_smtp_and_http_and_stops_on_shutdown_file",
        S + "test_listen_ips_bind_only_the_listed_addresses_and_web_port_0_turns_the_admin_off",
    ),
    "web.listen_ips": (
        S + "test_listen_ips_bind_only_the_listed_addresses_and_web_port_0_turns_the_admin_off",
    ),
    "web.allowed_ips": (
        S + "test_allowed_ips_and_api_token_changed_through_the_api_apply_to_the_next_request",
    ),
    "web.api_token": (
        S + "test_allowed_ips_and_api_token_changed_through_the_api_apply_to_the_next_request",
    ),
    "server.low_disk_space_mb": (
        "system/test_delivery_reports.py::"
        "test_low_free_disk_space_is_mailed_to_the_admin_through_the_engine",
        "twisted/test_delivery_engine.py::"
        "test_low_disk_space_is_told_at_start_and_again_only_after_an_hour",
    ),
    "events.enabled": ("system/test_events.py::test_events_enabled_false_writes_no_event_file",),
    "events.webhook_url": (
        "system/test_events.py::"
        "test_the_webhook_gets_every_event_once_in_order_and_catches_up_after_being_down",
    ),
    "logs.undeliverable_reasons": (
        "twisted/test_delivery_engine.py::"
        "test_undeliverable_files_hold_the_reply_or_with_the_setting_off_the_bare_address",
    ),
    "suppression.enabled": (
        "system/test_suppression.py::"
        "test_a_hard_bounced_address_is_refused_at_the_next_rcpt_and_removing_it_lets_it_through",
        "system/test_suppression.py::test_with_suppression_disabled_a_listed_address_is_relayed",
    ),
    "suppression.action": (
        "system/test_suppression.py::"
        "test_drop_accepts_a_suppressed_recipient_and_records_a_suppressed_event",
    ),
    "server.stop_timeout_seconds": (
        "system/test_foundation.py::"
        "test_a_stop_with_a_stalled_receiver_writes_all_mail_held_in_memory_to_retry",
    ),
    "server.workers": (
        "system/test_workers.py::"
        "test_two_workers_share_the_port_and_deliver_every_message_exactly_once",
    ),
    "dkim.key": (
        "system/test_dkim.py::test_relay_mail_is_signed_with_rsa_and_ed25519_and_verifies_at_the_sink",
        "system/test_dkim.py::test_a_missing_or_unusable_key_file_stops_the_start_naming_the_file",
    ),
    "dkim.headers": (
        "system/test_dkim.py::"
        "test_headers_and_canonicalization_changed_through_the_api_sign_the_next_message",
    ),
    "dkim.canonicalization": (
        "system/test_dkim.py::"
        "test_headers_and_canonicalization_changed_through_the_api_sign_the_next_message",
    ),
    "dkim.separate_process": (
        "system/test_dkim.py::test_relay_mail_is_signed_with_rsa_and_ed25519_and_verifies_at_the_sink",
        "system/test_dkim.py::test_without_a_separate_process_the_engine_signs_itself",
    ),
    "dkim.rsa_multi_buffer": (
        "system/test_dkim.py::"
        "test_messages_waiting_together_are_signed_eight_at_a_time_and_all_verify",
        "system/test_dkim.py::test_with_multi_buffer_off_the_log_says_openssl",
    ),
    "shaping.rule": (
        SH + "test_max_messages_per_minute_holds_while_another_domain_runs_free",
        SH + "test_max_messages_per_connection_makes_new_sessions",
        SH + "test_an_mx_suffix_rule_caps_connections_across_domains_sharing_one_mx",
    ),
    "shaping.reaction": (
        SH + "test_a_tss04_deferral_suspends_only_its_destination_then_it_resumes_by_itself",
        SH + "test_a_throttle_reaction_halves_the_rate_then_ramps_back",
    ),
    "egress.pool": (SH + "test_an_egress_pool_uses_each_source_address_in_turn",),
    "cluster.redis_url": (
        CL + "test_two_nodes_never_open_more_than_max_connections_per_host_to_one_host_together",
        CL + "test_an_hourly_cap_of_100_delivers_100_across_two_nodes",
    ),
    "cluster.node_name": (
        CL + "test_a_suspension_by_reaction_on_one_node_stops_the_other_nodes_connections",
        CL + "test_redis_killed_mid_load_loses_no_mail_falls_back_visibly_and_shares_again",
    ),
}


def test_every_setting_names_a_test_that_fails_when_the_engine_ignores_it():
    import os

    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert set(PROOFS) == {s.name for s in SETTINGS}
    for name, proofs in PROOFS.items():
        for proof in proofs:
            path, test = proof.split("::")
            with open(os.path.join(tests_dir, path), encoding="utf-8") as fh:
                assert f"\ndef {test}(" in fh.read(), f"{name}: {proof} does not exist"
