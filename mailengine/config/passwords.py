"""``user:hash`` files (config/password.txt): scrypt hashes; plain lines get hashed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable

import attrs

SCHEME = "scrypt"
N, R, P = 2**14, 8, 1


def hash_password(secret: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    b64 = base64.b64encode
    return f"{SCHEME}${N}${R}${P}${b64(salt).decode()}${b64(digest).decode()}"


def is_hashed(stored: str) -> bool:
    return stored.startswith(SCHEME + "$") and stored.count("$") == 5


def verify_password(stored: str, secret: str) -> bool:
    """True when ``secret`` matches ``stored`` (constant-time compare)."""
    if not is_hashed(stored):
        return False
    try:
        _, n, r, p, salt, digest = stored.split("$")
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            secret.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


@attrs.define
class PasswordFile:
    """The users of one file; ``warnings`` says what loading had to fix."""

    path: str
    users: dict[str, str] = attrs.field(factory=dict)
    extra: dict[str, list[str]] = attrs.field(factory=dict)  # fields after the hash
    warnings: list[str] = attrs.field(factory=list)
    # The file's lines as read, a user's line replaced by its name: comments, blank
    # lines and lines we could not read survive a rewrite where the operator put them.
    layout: list[str | tuple[str]] = attrs.field(factory=list)

    def verify(self, user: str, secret: str) -> bool:
        stored = self.users.get(user)
        if stored is None:
            # Spend the same time as a real check so user names do not leak.
            verify_password(hash_password("x", salt=b"0" * 16), secret)
            return False
        return verify_password(stored, secret)


def load_password_file(
    path: str,
    *,
    rewrite_plain: bool = True,
    extra_for_plain: Callable[[str], list[str]] | None = None,
) -> PasswordFile:
    """Read ``path`` (missing = no users); plain ``user:secret`` lines are hashed in place.

    ``extra_for_plain(secret)`` gives the fields stored after the hash of a plain
    line (smtp-users.txt keeps a CRAM-MD5 secret there).
    """
    result = PasswordFile(path)
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return result
    plain = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            result.layout.append(line)
            continue
        user, sep, rest = line.partition(":")
        user = user.strip()
        if not sep or not user:
            result.warnings.append(f"{path}:{number}: not a user:password line, ignored")
            result.layout.append(line)
            continue
        if user not in result.users:
            result.layout.append((user,))
        stored, *extra = rest.split(":") if is_hashed(rest.split(":")[0]) else [rest]
        if not is_hashed(stored):
            plain.append(user)
            if extra_for_plain is not None:
                extra = extra_for_plain(stored)
            stored = hash_password(stored)
        result.users[user] = stored
        result.extra[user] = extra
    if plain and rewrite_plain:
        try:
            _write(result)
        except OSError as exc:
            result.warnings.append(
                f"{path}: plain-text password for {', '.join(plain)} accepted, but the file "
                f"cannot be rewritten with a hash ({exc.strerror}); fix its permissions"
            )
        else:
            result.warnings.append(
                f"{path}: plain-text password for {', '.join(plain)} replaced by a scrypt hash"
            )
    return result


def _write(pw: PasswordFile) -> None:
    """Replace the file atomically, private to its owner, every other line kept in place."""
    out: list[str] = []
    written: set[str] = set()
    for entry in pw.layout:
        if isinstance(entry, str):
            out.append(entry)
        elif entry[0] in pw.users:
            out.append(_line(pw, entry[0]))
            written.add(entry[0])
    out.extend(_line(pw, user) for user in pw.users if user not in written)
    tmp = f"{pw.path}.tmp{os.getpid()}"
    old_umask = os.umask(0o077)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in out))
        os.replace(tmp, pw.path)
    except OSError:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        os.umask(old_umask)


def _line(pw: PasswordFile, user: str) -> str:
    return ":".join([user, pw.users[user], *pw.extra.get(user, [])])


def set_password(path: str, user: str, secret: str, extra: list[str] | None = None) -> None:
    """Add or replace ``user`` in the file at ``path`` with a hash of ``secret``."""
    if not user or ":" in user or user.strip() != user:
        raise ValueError("a user name may not be empty or contain ':' or spaces")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pw = load_password_file(path)
    pw.users[user] = hash_password(secret)
    pw.extra[user] = list(extra or [])
    _write(pw)
