"""Every setting, declared once: section, key, kind, default, help, manual group (pure).

The shipped ``config/mailengine.toml`` is rendered from this table (see
``template.py``), the loader validates against it, and the web admin shows it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from mailengine.config import kinds as k


@attrs.frozen
class Setting:
    section: str
    key: str
    kind: k.Kind
    default: Any
    help: str
    group: str  # the manual's settings page: Basic, TCP/IP, Permissions, Queue, Logs, ...
    live: bool = True  # False: "applies after restart"

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"


SECONDS_MIN_5 = k.Int(minimum=5, unit="seconds")
MANUAL_GROUPS = (
    "Basic",
    "TCP/IP",
    "Permissions",
    "Queue",
    "Logs",
    "Limits",
    "Troubleshooting",
    "Reports",
    "DKIM",
    "Web admin",
)


def _s(
    section: str, key: str, kind: k.Kind, default: Any, group: str, help: str, live: bool = True
) -> Setting:
    return Setting(section, key, kind, default, " ".join(help.split()), group, live)


SETTINGS: tuple[Setting, ...] = (
    # [server]
    _s(
        "server",
        "admin_email",
        k.Email(),
        "",
        "Basic",
        """One address notified of problems such as low free disk space under mailq/ or
       running out of file descriptors (at most once an hour each).""",
    ),
    _s(
        "server",
        "low_disk_space_mb",
        k.Int(minimum=0, unit="MB"),
        100,
        "Basic",
        """Free space on the file system of mailq/ below which admin_email is told (checked
       at start and every minute). 0: never.""",
    ),
    _s(
        "server",
        "helo_text",
        k.Hostname(),
        "",
        "TCP/IP",
        """Name sent in EHLO/HELO on outbound connections and shown in the SMTP greeting,
       Received lines and DSNs. Blank: the host name of the machine's primary IP address.
       An invalid name may get outbound mail refused by anti-spam filters. A change applies
       to the next session; message ids keep the name of the start.""",
    ),
    _s(
        "server",
        "local_domains",
        k.DomainList(allow_everything=True),
        [],
        "Basic",
        """Domains this engine receives mail for (not relay domains). Mail whose RCPT TO is
       at a local domain is "incoming": stored in mailq/incoming/ when save_incoming is on,
       otherwise accepted and dropped. "@" or "." makes every address local (speed tests).""",
    ),
    _s(
        "server",
        "max_threads",
        k.Int(minimum=1, maximum=10000),
        500,
        "Limits",
        """Largest size of the worker thread pool for blocking work: queue writes and
       fsyncs, password checks (SMTP AUTH, web login), the web admin's queue and log pages.
       The original used one thread per connection; an event loop needs few.""",
        live=False,
    ),
    _s(
        "server",
        "workers",
        k.CountOrAuto(minimum=1, maximum=256),
        1,
        "Limits",
        """Processes that receive and send mail, sharing the SMTP port and mailq/. 1: one
       process, as always. More: twistd becomes a supervisor that starts this many workers,
       restarts one that dies and serves the web admin for all; "auto": one per core.
       Caps ([smtp_out] and [shaping] limits) are the box's: the supervisor grants them
       to the workers (or Redis, with [cluster] redis_url); the bandwidth cap is split
       evenly among them.""",
        live=False,
    ),
    _s(
        "server",
        "stop_timeout_seconds",
        k.Int(minimum=1, maximum=3600, unit="seconds"),
        20,
        "Limits",
        """Graceful stop (SIGTERM, Ctrl-C, mailq/retry/shutdown.txt): how long SMTP
       transactions in flight, received and sent, may take to finish. Then sending
       connections are cut (those recipients are retried later) and every message held
       in memory is written to mailq/retry/. Keep it well under your service manager's
       stop timeout (systemd: TimeoutStopSec, 90 s by default).""",
    ),
    # [smtp_in]
    _s(
        "smtp_in",
        "listen_ips",
        k.ListenList(),
        [],
        "TCP/IP",
        """Addresses to receive SMTP on; ranges like 10.0.0.1-10.0.0.9 expand to each
       address. Blank: every address of the machine.""",
        live=False,
    ),
    _s(
        "smtp_in",
        "port",
        k.Int(minimum=1, maximum=65535),
        25,
        "TCP/IP",
        """TCP port to receive SMTP on. 1 turns receiving off.""",
        live=False,
    ),
    _s(
        "smtp_in",
        "relay_ips",
        k.IPList(zero_means="everyone may relay"),
        ["127.0.0.1"],
        "Permissions",
        """Peers allowed to relay through this engine: single addresses, ranges or CIDR.
       "0" lets everyone relay (only behind a firewall!). Default: this machine only.""",
    ),
    _s(
        "smtp_in",
        "relay_domains",
        k.DomainList(),
        [],
        "Permissions",
        """RCPT TO relay domains: recipients at these domains are accepted from anyone and
       forwarded to the domain's MX (backup-MX use). Exact names, no subdomains; a local
       part with routing characters (% ! " :) is refused to peers outside relay_ips. Add
       your own and the primary's addresses to smtp_out.reject_mail_servers to avoid mail
       loops.""",
    ),
    _s(
        "smtp_in",
        "reject_mail_from",
        k.TextList(what="substrings"),
        [],
        "Permissions",
        """MAIL FROM addresses containing any of these substrings (any case) are refused
       with 550 5.7.1 (e.g. "spammer.com", "makemoneyfast").""",
    ),
    _s(
        "smtp_in",
        "priority_ips",
        k.IPList(zero_means="every peer is a priority peer"),
        [],
        "Limits",
        """Peers always admitted, even beyond max_connections and max_connections_per_ip.
       "0" exempts everyone.""",
    ),
    _s(
        "smtp_in",
        "max_connections",
        k.Int(minimum=1),
        500,
        "Limits",
        """Most simultaneous inbound SMTP sessions; further peers get 421 and are closed,
       except priority_ips.""",
    ),
    _s(
        "smtp_in",
        "max_connections_per_ip",
        k.Int(minimum=0),
        0,
        "Limits",
        """Most simultaneous inbound sessions from one peer address; further sessions get
       421 and are closed, except priority_ips. 0: no limit.""",
    ),
    _s(
        "smtp_in",
        "timeout_seconds",
        SECONDS_MIN_5,
        600,
        "Limits",
        """SMTP inbound timeout: a session silent this long gets 421 and is closed, and so
       does one whose command line is not complete this long after its first byte (a
       client dripping bytes). Minimum 5.""",
    ),
    _s(
        "smtp_in",
        "data_timeout_seconds",
        k.Int(minimum=5, maximum=86400, unit="seconds"),
        1800,
        "Limits",
        """The longest a DATA transfer may take, from the 354 reply to the final dot,
       however steadily bytes arrive; then 421, the message is not accepted (the client
       keeps it) and the session is closed.""",
    ),
    _s(
        "smtp_in",
        "max_message_size_bytes",
        k.Int(minimum=1024, also=(0,), unit="bytes"),
        10485760,
        "Limits",
        """Largest message accepted, advertised in EHLO as SIZE; larger mail gets 552 5.3.4
       (at MAIL FROM when the client declares SIZE=, otherwise after the whole DATA was
       read, without storing it). 0: no limit, EHLO says plain SIZE. Minimum 1024.""",
    ),
    _s(
        "smtp_in",
        "tls_certificate",
        k.Path(),
        "",
        "TCP/IP",
        """PEM certificate for STARTTLS, optionally followed by its chain; a relative path
       is relative to the config directory. A file that cannot be used stops the start
       with one line saying why. Blank: STARTTLS is not offered.""",
        live=False,
    ),
    _s(
        "smtp_in",
        "tls_private_key",
        k.Path(),
        "",
        "TCP/IP",
        """PEM private key for tls_certificate (may be the same file).""",
        live=False,
    ),
    _s(
        "smtp_in",
        "auth_mechanisms",
        k.SubsetList(choices=("PLAIN", "LOGIN", "CRAM-MD5")),
        ["PLAIN", "LOGIN", "CRAM-MD5"],
        "Permissions",
        """SMTP AUTH mechanisms offered against the users in config/smtp-users.txt (set them
       with `mailengine passwd --smtp USER`); AUTH is advertised only while that file has
       users. Authenticated sessions may relay. A line is user:scrypt-hash:cram-md5$...;
       the scrypt hash checks PLAIN and LOGIN, the CRAM-MD5 field holds the two HMAC-MD5
       midstates of the password (not the password, but enough to answer CRAM-MD5: keep
       the file private). Empty: no AUTH.""",
        live=False,
    ),
    _s(
        "smtp_in",
        "allow_plain_auth_without_tls",
        k.Bool(),
        False,
        "Permissions",
        """Offer PLAIN and LOGIN before STARTTLS (passwords in clear text on the wire).
       Off: they are offered only inside TLS and refused before it with 538; CRAM-MD5
       is offered either way.""",
    ),
    _s(
        "smtp_in",
        "auth_max_failures",
        k.Int(minimum=0, maximum=1000),
        10,
        "Permissions",
        """Failed SMTP AUTH attempts one client address may make within
       auth_lockout_seconds; then it is locked out for auth_lockout_seconds: every AUTH
       from it gets 454 4.7.0 without a password being checked, over any connection.
       Every failure and every lock-out is logged with the address. 0: no lock-out
       (failures are still logged).""",
    ),
    _s(
        "smtp_in",
        "auth_lockout_seconds",
        k.Int(minimum=1, maximum=86400, unit="seconds"),
        600,
        "Permissions",
        """The window auth_max_failures counts in, and how long an address that reached
       it is locked out of SMTP AUTH (from its last failure).""",
    ),
    # [smtp_out]
    _s(
        "smtp_out",
        "outbound_ip",
        k.IPAddress(),
        "",
        "TCP/IP",
        """Local address outbound connections are made from. Blank: the system chooses.""",
    ),
    _s(
        "smtp_out",
        "remote_port",
        k.Int(minimum=1, maximum=65535),
        25,
        "TCP/IP",
        """Port dialled on MX hosts. Only labs and tests change it.""",
    ),
    _s(
        "smtp_out",
        "reject_mail_servers",
        k.IPList(zero_means="never deliver anywhere"),
        [],
        "Permissions",
        """Never connect to these addresses (prevents loops, e.g. as backup MX: list your
       own and the primary's addresses).""",
    ),
    _s(
        "smtp_out",
        "max_connections",
        k.Int(minimum=1),
        500,
        "Limits",
        """Most simultaneous outbound SMTP connections in total (300-2,000 is sensible,
       about 1,000 is often best; mind the open-file limit).""",
    ),
    _s(
        "smtp_out",
        "max_connections_per_host",
        k.Int(minimum=1),
        10,
        "Limits",
        """Most simultaneous connections to one receiving server, so none is
       overloaded.""",
    ),
    _s(
        "smtp_out",
        "connect_timeout_seconds",
        SECONDS_MIN_5,
        240,
        "Limits",
        """SMTP connect timeout: how long to wait for a TCP connection to a remote server.
       Minimum 5.""",
    ),
    _s(
        "smtp_out",
        "write_timeout_seconds",
        SECONDS_MIN_5,
        240,
        "Limits",
        """SMTP write timeout: how long a write to a remote server may stay blocked.
       Minimum 5.""",
    ),
    _s(
        "smtp_out",
        "read_timeout_seconds",
        SECONDS_MIN_5,
        240,
        "Limits",
        """SMTP read timeout: how long to wait for each reply of a remote server.
       Minimum 5.""",
    ),
    _s(
        "smtp_out",
        "body_timeout_seconds",
        SECONDS_MIN_5,
        600,
        "Limits",
        """SMTP body timeout: how long to wait for the reply after the message body (the
       end-of-data "."). Minimum 5.""",
    ),
    _s(
        "smtp_out",
        "max_messages_per_hour",
        k.Int(minimum=0),
        0,
        "Limits",
        """Max hourly send rate: most messages sent in any hour; sending is held when it is
       reached. 0: no cap.""",
    ),
    _s(
        "smtp_out",
        "max_bandwidth_bytes_per_minute",
        k.Int(minimum=0, unit="bytes/minute"),
        0,
        "Limits",
        """Max outbound bandwidth, shared by all connections. 0: no cap.""",
    ),
    _s(
        "smtp_out",
        "paused",
        k.Bool(),
        False,
        "Queue",
        """Pause sending: no outbound SMTP; mail accumulates in mailq/retry/. On resume
       everything is sent at full speed (to release a large batch at one time).""",
    ),
    _s(
        "smtp_out",
        "bounce_host",
        k.Hostname(blank="no rewriting"),
        "",
        "Logs",
        """When set, outbound MAIL FROM becomes mailengine-bounce-USER%DOMAIN@<bounce_host>
       (VERP) so returning bounces are logged to hard-bounces.txt / soft-bounces.txt. The
       bounce host must be one of local_domains.""",
    ),
    _s(
        "smtp_out",
        "tls_verify_domains",
        k.DomainList(),
        [],
        "Permissions",
        """Recipient domains whose MX certificates must verify (STARTTLS required, name
       checked); otherwise the delivery is a soft failure. Other domains get opportunistic
       STARTTLS without checks (RFC 7435).""",
    ),
    # [dns]
    _s(
        "dns",
        "servers",
        k.ServerList(),
        [],
        "Basic",
        """DNS servers for MX lookups, "ip" or "ip:port". Empty: the nameservers of
       /etc/resolv.conf.""",
        live=False,
    ),
    _s(
        "dns",
        "bypass",
        k.BypassList(),
        [],
        "Basic",
        """DNS bypass lines "domain,host,MX|NS,ip[:port]". MX sends the domain's mail to that
       host and address without DNS (several MX lines = several hosts, in order); NS asks
       that server about the domain and its subdomains. Example:
       "foo.example.com,mail1.example.com,MX,192.168.0.27".""",
    ),
    _s(
        "dns",
        "preload_domains",
        k.DomainList(),
        [],
        "Basic",
        """Domains looked up at start-up and kept warm in the cache (e.g. the big mailbox
       providers).""",
    ),
    # [queue]
    _s(
        "queue",
        "check_interval_seconds",
        k.Int(minimum=1, unit="seconds"),
        600,
        "Queue",
        """How often mailq/retry/ is scanned for files written by other programs (and for
       shutdown.txt). Keep it at or below the shortest retry interval; known future retry
       times are honoured regardless.""",
    ),
    _s(
        "queue",
        "retry_intervals_minutes",
        k.IntervalList(),
        [30, 120, 240, 480, 960],
        "Queue",
        """Minutes to wait before each retry after a soft failure (fractions allowed); after
       the last one the recipient has finally failed. [0]: never retry.""",
    ),
    _s(
        "queue",
        "use_disk_for_relay",
        k.Bool(),
        False,
        "Queue",
        """Write relay mail to mailq/working/ and fsync it before answering 250, so it
       survives a crash or power cut. Otherwise first attempts run from memory.""",
    ),
    _s(
        "queue",
        "save_done",
        k.Bool(),
        False,
        "Queue",
        """Keep finished messages in mailq/done/ (status=done).""",
    ),
    _s(
        "queue",
        "done_retention_minutes",
        k.Int(minimum=0, unit="minutes"),
        60,
        "Queue",
        """How long files stay in mailq/done/. 0: keep forever.""",
    ),
    _s(
        "queue",
        "save_incoming",
        k.Bool(),
        False,
        "Queue",
        """Store mail for local domains in mailq/incoming/ (otherwise accepted and
       dropped).""",
    ),
    _s(
        "queue",
        "incoming_retention_minutes",
        k.Int(minimum=0, unit="minutes"),
        60,
        "Queue",
        """How long files stay in mailq/incoming/. 0: keep forever.""",
    ),
    _s(
        "queue",
        "max_messages_in_memory",
        k.Int(minimum=1),
        500000,
        "Limits",
        """Messages kept in memory for sending; beyond it new mail is offloaded to
       mailq/retry/ on disk.""",
    ),
    _s(
        "queue",
        "max_memory_kb",
        k.Int(minimum=1000, unit="KB"),
        2000000,
        "Limits",
        """Max queue memory: KB of message data kept in memory; beyond it new mail is
       offloaded to disk. Minimum 1000.""",
    ),
    _s(
        "queue",
        "use_dsn",
        k.Bool(),
        False,
        "Queue",
        """Send a delivery status notification (with the session transcript) to MAIL FROM
       when a recipient finally fails. Off by default: feeding programs track failures
       themselves.""",
    ),
    # [logs]
    _s(
        "logs",
        "retention_days",
        k.Int(minimum=0, unit="days"),
        10,
        "Logs",
        """Days daily log files under log/ are kept (older ones are removed at start and
       when a new day's file opens). 0: no log files.""",
    ),
    _s(
        "logs",
        "log_undeliverable",
        k.Bool(),
        True,
        "Logs",
        """Append each finally failed address to hard-undeliverable.txt (5xx) or
       soft-undeliverable.txt (4xx after all retries), one per line.""",
    ),
    _s(
        "logs",
        "undeliverable_reasons",
        k.Bool(),
        True,
        "Logs",
        """Write the reply that failed each address beside it in the undeliverable files
       ("address<TAB>reply"); false: the bare address only, as older versions did.""",
    ),
    _s(
        "logs",
        "stats_interval_seconds",
        k.Int(minimum=0, unit="seconds"),
        10,
        "Logs",
        """How often the recv/sent statistics lines are logged (only when mail moved).
       0: off.""",
    ),
    _s(
        "logs",
        "log_queue_size",
        k.Bool(),
        True,
        "Troubleshooting",
        """Log how many messages are held in memory with each stats line.""",
    ),
    _s(
        "logs",
        "log_queue_memory",
        k.Bool(),
        True,
        "Troubleshooting",
        """Log how many KB of message data are held in memory with each stats line.""",
    ),
    _s(
        "logs",
        "debug_dns",
        k.Bool(),
        False,
        "Troubleshooting",
        """Log every DNS query and answer.""",
    ),
    _s(
        "logs",
        "debug_smtp_out",
        k.Bool(),
        False,
        "Troubleshooting",
        """Log every line of every outbound SMTP session (very verbose).""",
    ),
    _s(
        "logs",
        "debug_smtp_in",
        k.Bool(),
        False,
        "Troubleshooting",
        """Log every line of every inbound SMTP session (very verbose).""",
    ),
    _s(
        "logs",
        "debug_program",
        k.Bool(),
        False,
        "Troubleshooting",
        """Log the engine's internal decisions (queue moves, scans, offloads).""",
    ),
    _s(
        "logs",
        "debug_send_loop",
        k.Bool(),
        False,
        "Troubleshooting",
        """Log the send loop as it runs: which message goes to which host, and why sending
       waits.""",
    ),
    # [events]
    _s(
        "events",
        "enabled",
        k.Bool(),
        True,
        "Logs",
        """Write one JSON line per recipient event (received, delivered, deferred, failed,
       expired, bounce_received, suppressed, dsn_sent and operator actions) to
       log/events-YYYY-MM-DD.jsonl, kept as long as the other logs (retention_days).""",
    ),
    _s(
        "events",
        "webhook_url",
        k.HttpUrl(),
        "",
        "Logs",
        """POST the event log, in batches of JSON lines, to this URL; a 2xx answer
       acknowledges a batch, anything else is retried with growing pauses. What was
       acknowledged is kept in log/events-webhook.cursor, so nothing is skipped while the
       endpoint is down (as long as the files are kept). Blank: no webhook.""",
    ),
    # [suppression]
    _s(
        "suppression",
        "enabled",
        k.Bool(),
        True,
        "Permissions",
        """Check relay recipients against the suppression list (mailq/suppression.sqlite),
       which final hard failures of bad mailboxes and domains and returning hard bounces
       feed, and the operator manages with `mailengine suppress` or the web admin.""",
    ),
    _s(
        "suppression",
        "action",
        k.Choice(choices=("refuse", "drop")),
        "refuse",
        "Permissions",
        """What RCPT TO a suppressed address gets: "refuse" answers 550 5.1.1 with the
       reason and date; "drop" accepts it and drops it with a "suppressed" event.""",
    ),
    # [reports]
    _s(
        "reports",
        "type",
        k.Choice(choices=("", "e", "f", "l", "x")),
        "",
        "Reports",
        """Delivery report type: "" none; "e" after every send attempt; "f" after the first;
       "l" after the last; "x" after the first and the last.""",
    ),
    _s(
        "reports",
        "recipients",
        k.AddressList(),
        [],
        "Reports",
        """Addresses that receive delivery reports.""",
    ),
    _s(
        "reports",
        "domains",
        k.TextList(what="patterns like aol.com, .cn or bob@aol.com"),
        [],
        "Reports",
        """Only undelivered addresses containing one of these patterns are reported.
       Empty: all.""",
    ),
    # [web]
    _s(
        "web",
        "port",
        k.Int(minimum=0, maximum=65535),
        81,
        "Web admin",
        """Port of the web admin (http://host:81/gui/admin). 0 turns it off.""",
        live=False,
    ),
    _s(
        "web",
        "listen_ips",
        k.ListenList(),
        [],
        "Web admin",
        """Addresses the web admin listens on. Blank: every address.""",
        live=False,
    ),
    _s(
        "web",
        "allowed_ips",
        k.IPList(zero_means="web admin off"),
        ["127.0.0.1"],
        "Web admin",
        """Client addresses allowed to use the web admin and /metrics; others get 403.
       Blank: everyone. "0" in the list turns the web admin off.""",
    ),
    _s(
        "web",
        "api_token",
        k.Token(),
        "",
        "Web admin",
        """Bearer token for the JSON API under /api/ (header "Authorization: Bearer ...");
       it works even before a web admin password is set (the pages do not). The web admin
       never shows it. Blank: the API takes only a logged-in session. Make one with
       `python3 -c "import secrets; print(secrets.token_urlsafe(32))"`.""",
    ),
)

DKIM_HEADERS = [
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-id",
]

SETTINGS += (
    # [dkim] (issue 11)
    _s(
        "dkim",
        "headers",
        k.HeaderNameList(
            required=("from",),
            # RFC 6376 §5.4: fields that relays add or change are not signed.
            refused=("received", "return-path", "dkim-signature", "bcc", "resent-bcc"),
        ),
        DKIM_HEADERS,
        "DKIM",
        """Header fields covered by the DKIM signature, each as often as it appears; From
       is signed once more than it appears, so a From added later breaks the signature.
       Fields the message lacks are left out.""",
    ),
    _s(
        "dkim",
        "canonicalization",
        k.Choice(choices=("relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple")),
        "relaxed/relaxed",
        "DKIM",
        """DKIM canonicalization, header/body (RFC 6376 §3.4): "relaxed" survives the
       whitespace and header-case changes some relays make; "simple" survives none.""",
    ),
    _s(
        "dkim",
        "separate_process",
        k.Bool(),
        True,
        "DKIM",
        """Make the DKIM signatures in a helper process of the engine's (one Python
       process more), so a second core signs while the engine receives and delivers: an
       RSA-2048 signature costs about a third of a millisecond of CPU per message. Off:
       the engine signs on its own thread. Should the helper fail, mail is signed by the
       engine (logged, counted in /metrics) and a new helper starts a minute later. With
       [server] workers above 1, each worker has its own helper.""",
        live=False,
    ),
    _s(
        "dkim",
        "rsa_multi_buffer",
        k.Bool(),
        True,
        "DKIM",
        """In the signing process, make the RSA signatures of the messages waiting
       together in groups of eight with Intel's multi-buffer RSA (crypto_mb), about a
       third of OpenSSL's CPU per signature. Only where it is installed (pip install
       'mailengine[intel-rsa]', under Intel's own licence) and the CPU has AVX-512 IFMA
       or AVX-IFMA; the start-up log says which is used. The signatures are the same
       bytes OpenSSL makes, each checked with the public key before use. Off: OpenSSL
       makes every signature; so does the next helper after one crashes with it on.""",
        live=False,
    ),
    _s(
        "dkim",
        "key",
        k.TableList(
            fields=(
                k.Field("domain", k.DomainName(), "example.com"),
                k.Field(
                    "selector",
                    k.DomainName(what="a DKIM selector like s2026 (letters, digits, - and .)"),
                    "s2026",
                ),
                k.Field("key_file", k.Path(), "dkim/example.com.s2026.key"),
            ),
            unique=("domain", "selector"),
        ),
        [],
        "DKIM",
        """DKIM signing keys, one [[dkim.key]] table each: relay mail is signed with the
       keys of its From: domain, or of the closest parent domain that has keys
       (news.example.com uses example.com's). An RSA (2048 bits or more) and an Ed25519
       key for one domain give two signatures. key_file is a PEM private key (relative
       paths: from the config directory); make one with `mailengine dkim keygen DOMAIN
       SELECTOR`, which prints the DNS TXT record to publish at
       SELECTOR._domainkey.DOMAIN. A key file that cannot be read stops the start.
       Mail for local domains is never signed.""",
        live=False,
    ),
)

SETTINGS += (
    # [shaping], [egress] (issue 10): arrays of tables
    _s(
        "shaping",
        "rule",
        k.TableList(
            fields=(
                k.Field("name", k.Name(), "google"),
                k.Field("domains", k.DomainList(), ["gmail.com", "googlemail.com"], False, ()),
                k.Field("mx_suffixes", k.HostSuffixList(), [".google.com"], False, ()),
                k.Field("max_connections", k.Int(minimum=0), 20, False, 0),
                k.Field("max_messages_per_connection", k.Int(minimum=0), 100, False, 0),
                k.Field("max_messages_per_minute", k.Int(minimum=0), 0, False, 0),
                k.Field("pool", k.Text(), "", False, ""),
            ),
            unique=("name",),
        ),
        [],
        "Limits",
        """Traffic shaping rules, one [[shaping.rule]] table each; the first rule that lists
       a recipient domain in domains applies to it, else the first whose mx_suffixes
       match one of the domain's MX host names. max_connections: connections at once per
       MX site (the set of MX hosts; domains of one provider share it), 0 = [smtp_out]
       max_connections_per_host. max_messages_per_connection: then QUIT and connect
       again (0: no limit). max_messages_per_minute: for each matching domain (0: no
       limit). pool: the [[egress.pool]] whose source addresses the connections use ("":
       [smtp_out] outbound_ip). Domains without a rule are sent as before, each on its
       own: a slow one never holds back another.""",
    ),
    _s(
        "shaping",
        "reaction",
        k.TableList(
            fields=(
                k.Field("pattern", k.Pattern(), "TSS04|4\\.7\\.28|rate limit"),
                k.Field("action", k.Choice(choices=("suspend", "throttle")), "suspend"),
                k.Field("minutes", k.Minutes(), 30),
            ),
        ),
        [],
        "Limits",
        """Reactions to deferrals, one [[shaping.reaction]] table each; the first whose
       pattern (a regular expression, any case) is found in a failure reply "<code>
       <enhanced code> <text>" applies to that recipient domain. suspend: no new
       connection for the domain for minutes (its mail waits, shown with the reply).
       throttle: the domain's rate is halved (at least 1 a minute), then grows back by
       10 % every minutes without another such reply.""",
    ),
    _s(
        "egress",
        "pool",
        k.TableList(
            fields=(
                k.Field("name", k.Name(), "bulk"),
                k.Field("source_ips", k.AddressIPList(), ["192.0.2.10", "192.0.2.11"]),
                k.Field(
                    "helo_names",
                    k.HostnameList(),
                    ["mta1.example.com", "mta2.example.com"],
                    False,
                    (),
                ),
            ),
            unique=("name",),
        ),
        [],
        "TCP/IP",
        """Egress pools, one [[egress.pool]] table each: the local source addresses a
       [[shaping.rule]] with pool = name sends from, each new connection from the next
       address in turn. helo_names (optional): the name each address says in EHLO/HELO,
       in the order of source_ips (one per address; left out: [server] helo_text).""",
    ),
)

SETTINGS += (
    # [cluster] (issue 13 item 3): caps shared between nodes through Redis
    _s(
        "cluster",
        "redis_url",
        k.RedisUrl(),
        "",
        "Limits",
        """Share the caps with other MailEngine nodes through this Redis server:
       connections in total, per MX host and per [[shaping.rule]] (leases that expire
       when a node dies), messages per minute of rules and throttles, the hourly cap and
       suspensions by [[shaping.reaction]]. Every node of the cluster names the same
       server and keeps its own mailq/. While Redis cannot be reached each node keeps to
       its share (a cap divided by the nodes last seen) and says so in the log, on the
       dashboard and in /metrics. "": this node's caps are its own.""",
        live=False,
    ),
    _s(
        "cluster",
        "node_name",
        k.Name(),
        "",
        "Limits",
        """This node's name among the others (shown in every node's web admin); each node
       needs its own. "": the machine's host name.""",
        live=False,
    ),
)

SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(s.section for s in SETTINGS))
BY_NAME: dict[tuple[str, str], Setting] = {(s.section, s.key): s for s in SETTINGS}


def cross_problems(get: Callable[[str, str], Any]) -> list[str]:
    """Problems between settings (``get(section, key)`` gives a parsed value): a shaping
    rule naming an egress pool that is not defined; a pool whose helo_names do not pair
    with its source_ips."""
    pools = {row["name"] for row in get("egress", "pool")}
    return [
        f"[[shaping.rule]] entry {number}: pool = {rule['pool']!r}: no [[egress.pool]] has "
        f"that name (pools: {', '.join(sorted(pools)) or 'none'})"
        for number, rule in enumerate(get("shaping", "rule"), 1)
        if rule["pool"] and rule["pool"] not in pools
    ] + [
        f"[[egress.pool]] entry {number}: helo_names = {k.shown(list(pool['helo_names']))}: "
        f"{len(pool['helo_names'])} names for {len(pool['source_ips'])} source_ips; must "
        "be one host name per source address, in the same order (or left out)"
        for number, pool in enumerate(get("egress", "pool"), 1)
        if pool["helo_names"] and len(pool["helo_names"]) != len(pool["source_ips"])
    ]


def setting(section: str, key: str) -> Setting:
    return BY_NAME[(section, key)]
