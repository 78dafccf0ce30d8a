"""SMTP AUTH against config/smtp-users.txt: PLAIN, LOGIN and CRAM-MD5 (RFC 4954, 2195).

A line is ``user:scrypt$...:cram-md5$...``: the scrypt hash checks PLAIN and
LOGIN passwords (in a worker thread: scrypt is deliberately slow), the
CRAM-MD5 midstates answer CRAM-MD5 (``config.crammd5``). ``mailengine passwd
--smtp USER`` writes both; a plain ``user:secret`` line is rewritten into
that form when the file is read. The file is re-read when it changes.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import Any

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.mail._cred import LOGINCredentials, PLAINCredentials
from zope.interface import implementer

from mailengine.config.crammd5 import cram_md5_secret, is_cram_md5_secret, verify_cram_md5
from mailengine.config.passwords import PasswordFile, load_password_file

USERS_FILE = "smtp-users.txt"
# Mechanisms that send the password itself: only inside TLS unless allowed.
PLAIN_TEXT_MECHANISMS = (b"PLAIN", b"LOGIN")

RunInThread = Callable[[Callable[[], Any]], defer.Deferred]


class CramMD5Challenge(credentials.CramMD5Credentials):
    """Twisted's CRAM-MD5 exchange with an unguessable challenge (it uses ``random``)."""

    def getChallenge(self) -> bytes:
        if not self.challenge:
            host = self.host.decode("ascii", "replace") if self.host else "localhost"
            self.challenge = f"<{secrets.randbelow(2**62)}.{secrets.token_hex(4)}@{host}>".encode()
        return self.challenge


def challengers(mechanisms: tuple[str, ...], host: bytes) -> dict[bytes, Callable[[], Any]]:
    """ESMTP's ``chal`` map for the configured ``auth_mechanisms``, in their order."""
    makers: dict[str, Callable[[], Any]] = {
        "PLAIN": PLAINCredentials,
        "LOGIN": LOGINCredentials,
        "CRAM-MD5": lambda: CramMD5Challenge(host),
    }
    return {name.encode(): makers[name] for name in mechanisms if name in makers}


def cram_md5_fields(secret: str) -> list[str]:
    """What smtp-users.txt keeps after the scrypt hash of ``secret``."""
    return [cram_md5_secret(secret)]


@implementer(ICredentialsChecker)
class SmtpUsers:
    """The users of smtp-users.txt; re-read when the file's mtime or size changes."""

    credentialInterfaces = (credentials.IUsernamePassword, credentials.IUsernameHashedPassword)

    RECHECK_SECONDS = 1.0

    def __init__(self, path: str, run_in_thread: RunInThread, now: Callable[[], float]) -> None:
        self.path = path
        self._run_in_thread = run_in_thread
        self._now = now
        self._checked_at = float("-inf")
        self._stamp: tuple[float, int] | None = None
        self._file = PasswordFile(path)
        self.warnings: list[str] = []

    def users(self) -> PasswordFile:
        now = self._now()
        if now - self._checked_at < self.RECHECK_SECONDS:
            return self._file
        self._checked_at = now
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime, st.st_size)
        except FileNotFoundError:
            stamp = (0.0, -1)
        if stamp != self._stamp:
            self._file = load_password_file(self.path, extra_for_plain=cram_md5_fields)
            self.warnings = list(self._file.warnings)
            try:
                st = os.stat(self.path)
                self._stamp = (st.st_mtime, st.st_size)
            except FileNotFoundError:
                self._stamp = stamp
        return self._file

    @property
    def has_users(self) -> bool:
        return bool(self.users().users)

    def requestAvatarId(self, creds: Any) -> defer.Deferred:
        try:
            user = (creds.username or b"").decode("utf-8")
        except (UnicodeDecodeError, AttributeError):
            return defer.fail(error.UnauthorizedLogin())
        pw = self.users()
        if isinstance(creds, credentials.CramMD5Credentials):
            stored = next((f for f in pw.extra.get(user, []) if is_cram_md5_secret(f)), "")
            if stored and verify_cram_md5(stored, creds.challenge, creds.response or b""):
                return defer.succeed(user)
            return defer.fail(error.UnauthorizedLogin())
        try:
            secret = (creds.password or b"").decode("utf-8")
        except (UnicodeDecodeError, AttributeError):
            return defer.fail(error.UnauthorizedLogin())

        def check() -> bool:
            return pw.verify(user, secret)

        def decide(ok: bool) -> str:
            if not ok:
                raise error.UnauthorizedLogin()
            return user

        return self._run_in_thread(check).addCallback(decide)


@implementer(IRealm)
class SmtpRealm:
    """The avatar of an authenticated session is just the user name."""

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:
        name = avatar_id.decode() if isinstance(avatar_id, bytes) else str(avatar_id)
        return interfaces[0], name, lambda: None


def make_portal(users: SmtpUsers) -> Portal:
    return Portal(SmtpRealm(), [users])
