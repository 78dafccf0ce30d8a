"""``mailengine dkim keygen`` and ``mailengine dkim check``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from mailengine.signing.keys import (
    ALGORITHMS,
    MIN_RSA_BITS,
    generate_key,
    txt_record,
    write_key_file,
)


class SigningError(Exception):
    """The configuration or a key file cannot be used; the text says why."""


def signing_with_config(config_path: str) -> Callable[[bytes], bytes] | None:
    """For ``mailengine send``: sign as the engine would, with the keys of the config file
    (None when there is no config file or it has no keys). A message that cannot be
    signed is queued unsigned with a warning on stderr, as the engine does."""
    import time

    from mailengine.config.loader import ConfigError, load_config
    from mailengine.signing.keys import load_keys
    from mailengine.signing.signer import Signer

    if not os.path.exists(config_path):
        return None
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise SigningError("; ".join(exc.problems)) from None
    keys, problems = load_keys(config.dkim.key, os.path.dirname(os.path.abspath(config_path)))
    if problems:
        raise SigningError("; ".join(problems))
    signer = Signer(keys)
    if not signer:
        return None

    def sign(content: bytes) -> bytes:
        dkim = config.dkim
        signed = signer.sign(content, time.time(), dkim.headers, dkim.canonicalization)
        if signed.problem:
            print(f"mailengine: warning: not DKIM-signed: {signed.problem}", file=sys.stderr)
        return signed.header + content

    return sign


def add_dkim_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dkim_command", metavar="ACTION", required=True)
    keygen = sub.add_parser(
        "keygen",
        help="write a new key file (mode 0600) and print the DNS TXT record to publish",
        description="Write a new DKIM key to config/dkim/DOMAIN.SELECTOR.key (mode 0600) and "
        "print its DNS TXT record and the [[dkim.key]] table to add to the configuration.",
    )
    keygen.add_argument("domain")
    keygen.add_argument("selector")
    keygen.add_argument("--algorithm", choices=ALGORITHMS, default="rsa")
    keygen.add_argument("--bits", type=int, default=MIN_RSA_BITS, help="RSA key size (2048+)")
    keygen.add_argument("--out", default=None, help="the key file (default: config/dkim/...)")
    check = sub.add_parser(
        "check",
        help="look the domain's selectors up in DNS; say whether they publish the key files",
        description="For every [[dkim.key]] of DOMAIN, look up SELECTOR._domainkey.DOMAIN TXT "
        "through [dns] servers (else resolv.conf) and compare it with the key file.",
    )
    check.add_argument("domain")
    for action in (keygen, check):  # also after the action: mailengine dkim check D --root R
        action.add_argument("--root", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        action.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def run(args: argparse.Namespace, config_path: str) -> int:
    if args.dkim_command == "keygen":
        return keygen(args, config_path)
    return check(args, config_path)


def dns_zone_line(name: str, record: str) -> str:
    """A zone-file line; the text split into quoted strings of at most 255 characters."""
    parts = " ".join(f'"{record[i : i + 255]}"' for i in range(0, len(record), 255))
    return f"{name}. IN TXT ( {parts} )"


def keygen(args: argparse.Namespace, config_path: str) -> int:
    from mailengine.config.kinds import DomainName, Invalid, toml_literal

    try:
        domain = DomainName().parse(args.domain)
        selector = DomainName().parse(args.selector)
        private = generate_key(args.algorithm, args.bits)
    except (Invalid, ValueError) as exc:
        print(f"mailengine: {exc}", file=sys.stderr)
        return 1
    config_dir = os.path.dirname(os.path.abspath(config_path))
    relative = os.path.join("dkim", f"{domain}.{selector}.key")
    path = os.path.abspath(args.out) if args.out else os.path.join(config_dir, relative)
    try:
        write_key_file(path, private)
    except FileExistsError:
        print(f"mailengine: {path} exists; not overwritten", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"mailengine: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 1
    shown = os.path.relpath(path, config_dir) if not args.out else path
    name = f"{selector}._domainkey.{domain}"
    print(f"wrote {path} (mode 0600)")
    print(f"\nPublish this TXT record at {name}:\n")
    print(f"  {txt_record(private)}\n")
    print(f"As a zone-file line:\n\n  {dns_zone_line(name, txt_record(private))}\n")
    print(f"Then add to {config_path} and restart:\n")
    print("[[dkim.key]]")
    print(f"domain = {toml_literal(domain)}")
    print(f"selector = {toml_literal(selector)}")
    print(f"key_file = {toml_literal(shown)}")
    return 0


def check(args: argparse.Namespace, config_path: str) -> int:
    from mailengine.config.kinds import normalise_domain
    from mailengine.config.loader import ConfigError, load_config
    from mailengine.dns.bypass import BypassTable
    from mailengine.dns.nameservers import system_nameservers
    from mailengine.dns.resolvconf import DNS_PORT
    from mailengine.signing.keys import load_keys
    from mailengine.signing.published import compare, lookup_txt

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    domain = normalise_domain(args.domain)
    rows = [row for row in config.dkim.key if row.domain == domain]
    if not rows:
        print(f"mailengine: {config_path} has no [[dkim.key]] for {domain}", file=sys.stderr)
        return 1
    keys, problems = load_keys(rows, os.path.dirname(os.path.abspath(config_path)))
    for problem in problems:
        print(f"mailengine: {problem}", file=sys.stderr)
    servers = list(config.dns.servers) or system_nameservers()
    bypass = BypassTable.from_entries(config.dns.bypass)
    matched = 0
    for key in keys:
        # As the engine's resolver asks: an NS bypass line for the name or a parent wins.
        pinned = bypass.nameserver_for(key.dns_name)
        asked = [(pinned.ip, pinned.port or DNS_PORT)] if pinned else servers
        verdict = compare(key, lookup_txt(key.dns_name, asked))
        print(("OK    " if verdict.is_match else "WRONG ") + verdict.text)
        matched += verdict.is_match
    return 0 if matched == len(rows) else 1
