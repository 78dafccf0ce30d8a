"""Files of the queue: ``ID.dat`` then ``ID.inf``, temp + rename, fsync when asked (manual §5).

State changes are renames between the mailq/ directories. Ids are checked
before they touch a path, so no caller can name a file outside mailq/.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
from collections.abc import Iterator
from typing import Any

from mailengine.queue.envelope import Envelope, parse_envelope
from mailengine.queue.inf import InfError, decode_inf, is_valid_message_id

DIRS = ("incoming", "retry", "working", "done", "hold")
SHUTDOWN_FILE = "shutdown.txt"
# An .inf is a few hundred bytes plus one log entry per attempt; anything near
# this is not one (and must not be read into memory whole).
MAX_INF_BYTES = 1024 * 1024
# No-follow: a symlinked .dat must not mail its target. Non-blocking: opening a
# FIFO for reading would wait for a writer for ever (the reactor with it).
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class NotARegularFile(OSError):
    """A queue file that is a symlink, FIFO, device or directory: never read."""


def open_regular(path: str) -> int:
    """A descriptor for ``path`` when it is a regular file (not through a symlink).

    FileNotFoundError when it is gone; NotARegularFile for anything else.
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise NotARegularFile(f"{os.path.basename(path)} is a symbolic link") from None
        if exc.errno == errno.ENXIO:  # a socket
            raise NotARegularFile(f"{os.path.basename(path)} is not a regular file") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(f"{os.path.basename(path)} is not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str, limit: int | None = None) -> bytes:
    """The bytes of a regular file (see ``open_regular``); InfError past ``limit`` bytes."""
    fd = open_regular(path)
    try:
        with os.fdopen(fd, "rb") as fh:
            fd = -1  # the file object owns it now
            data = fh.read() if limit is None else fh.read(limit + 1)
    finally:
        if fd >= 0:
            os.close(fd)
    if limit is not None and len(data) > limit:
        raise InfError(f"{os.path.basename(path)} is over {limit} bytes")
    return data


class BadMessageId(ValueError):
    """An id that could not be a queue file name (path tricks included)."""


def _load_syncfs() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_SYNCFS = _load_syncfs()


WORKER_DIR_PREFIX = "w"  # working/w1/, working/w2/, ...: each worker process's own working/


def worker_working_dirs(root: str) -> list[str]:
    """The names of the worker working directories under ``ROOT/working/`` (``w1``, ...)."""
    try:
        with os.scandir(os.path.join(root, "working")) as entries:
            return sorted(
                e.name
                for e in entries
                if e.name.startswith(WORKER_DIR_PREFIX)
                and e.name[len(WORKER_DIR_PREFIX) :].isdigit()
                and e.is_dir(follow_symlinks=False)
            )
    except FileNotFoundError:
        return []


class QueueStore:
    """The mailq/ tree: incoming/, retry/, working/, done/ and hold/.

    A worker process (``[server] workers`` > 1) has its own ``working/wN/`` (``worker=N``):
    what is in it belongs to that worker alone, so the worker that replaces a crashed one
    puts it back into the shared retry/ without touching the other workers' messages.
    """

    def __init__(self, root: str, *, worker: int = 0) -> None:
        self.root = os.path.abspath(root)
        self.worker = worker
        self._dirs = {name: os.path.join(self.root, name) for name in DIRS}
        if worker:
            self._dirs["working"] = os.path.join(
                self.root, "working", f"{WORKER_DIR_PREFIX}{worker}"
            )
        self._dir_fds: dict[str, int] = {}

    def for_worker(self, worker: int) -> QueueStore:
        """The same mailq/ as worker ``worker`` sees it (its own working/ directory)."""
        return QueueStore(self.root, worker=worker)

    def ensure_dirs(self) -> None:
        for path in self._dirs.values():
            os.makedirs(path, exist_ok=True)

    def check_writable(self) -> None:
        """OSError naming the first queue directory a file cannot be created in."""
        for path in (self.root, *self._dirs.values()):
            probe = os.path.join(path, f".write-check-{os.getpid()}.tmp")
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            os.unlink(probe)

    def dir(self, name: str) -> str:
        try:
            return self._dirs[name]
        except KeyError:
            raise ValueError(f"no queue directory {name!r}") from None

    def path(self, dirname: str, message_id: str, ext: str) -> str:
        if not is_valid_message_id(message_id):
            raise BadMessageId(message_id)
        return os.path.join(self.dir(dirname), message_id + ext)

    # -- writing -----------------------------------------------------------

    def _write_file(self, path: str, data: bytes, durable: bool, tag: str = "") -> None:
        tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}{tag}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if durable:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
        except OSError:
            _remove_quietly(tmp)  # a full disk must not fill up with half-written files
            raise

    def write_file(self, name: str, data: bytes) -> None:
        """A file of the queue itself (``mailq/NAME``, e.g. books.txt), replaced whole.

        Its temporary file is named for the process: two writers (worker processes, a
        ``mailengine`` command) never write into one temporary file.
        """
        if os.sep in name or name.startswith("."):
            raise ValueError(f"not a queue file name: {name!r}")
        self._write_file(os.path.join(self.root, name), data, durable=False, tag=f".{os.getpid()}")

    def remove_file(self, name: str) -> None:
        """Remove a file of the queue itself (``mailq/NAME``) if it is there."""
        if os.sep in name or name.startswith("."):
            raise ValueError(f"not a queue file name: {name!r}")
        _remove_quietly(os.path.join(self.root, name))

    def write_message(
        self, dirname: str, envelope: Envelope, data: bytes, *, durable: bool = False
    ) -> None:
        """``.dat`` first, then ``.inf``; with ``durable``, each file and the directory fsynced."""
        self.write_data_and_inf(
            dirname, envelope.message_id, data, envelope.to_inf().encode(), durable=durable
        )

    def write_data_and_inf(
        self, dirname: str, message_id: str, data: bytes, inf_bytes: bytes, *, durable: bool = False
    ) -> None:
        """``.dat`` first, then ``.inf`` (the engine looks for the ``.inf``; manual §5).

        Without ``durable`` the caller makes it durable later (``sync_all``).
        """
        dat = self.path(dirname, message_id, ".dat")
        self._write_file(dat, data, durable)
        try:
            self.replace_inf(dirname, message_id, inf_bytes, durable=durable)
        except OSError:
            _remove_quietly(dat)  # no .dat without its .inf
            raise

    def replace_inf(
        self, dirname: str, message_id: str, inf_bytes: bytes, *, durable: bool = False
    ) -> None:
        self._write_file(self.path(dirname, message_id, ".inf"), inf_bytes, durable)
        if durable:
            self.sync_dir(dirname)

    def date_inf(self, dirname: str, message_id: str, when: float) -> None:
        """Set ``ID.inf``'s times to ``when`` (a deferred message's retry time: a scan then
        knows when it is due from the listing alone, as Postfix's deferred queue does)."""
        os.utime(self.path(dirname, message_id, ".inf"), (when, when), follow_symlinks=False)

    def sync_dir(self, dirname: str) -> None:
        fd = os.open(self.dir(dirname), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def sync_all(self) -> None:
        """Make every write so far durable: one syncfs(2) covers many files (group commit)."""
        if _SYNCFS is not None:
            fd = os.open(self.root, os.O_RDONLY)
            try:
                if _SYNCFS(fd) == 0:
                    return
            finally:
                os.close(fd)
        os.sync()

    # -- moving and removing -----------------------------------------------

    def move(self, message_id: str, src: str, dst: str) -> None:
        """Rename ``.dat`` then ``.inf`` from ``src`` to ``dst``; FileNotFoundError if gone.

        The ``.inf`` goes last so a reader of ``dst`` never sees it without its
        ``.dat``. Claiming a message is this rename: whoever renames first owns it.
        """
        os.rename(self.path(src, message_id, ".inf"), self.path(src, message_id, ".inf-moving"))
        try:
            os.rename(self.path(src, message_id, ".dat"), self.path(dst, message_id, ".dat"))
        except OSError:
            os.rename(self.path(src, message_id, ".inf-moving"), self.path(src, message_id, ".inf"))
            raise
        os.rename(self.path(src, message_id, ".inf-moving"), self.path(dst, message_id, ".inf"))

    def delete(self, dirname: str, message_id: str) -> bool:
        """Remove ``.inf`` then ``.dat``; False when the message was not there."""
        found = False
        for ext in (".inf", ".dat"):
            try:
                os.unlink(self.path(dirname, message_id, ext))
                found = True
            except FileNotFoundError:
                pass
        return found

    # -- reading -----------------------------------------------------------

    def read_data(self, dirname: str, message_id: str) -> bytes:
        """``ID.dat``'s bytes; NotARegularFile for a symlink, FIFO or the like."""
        return read_regular(self.path(dirname, message_id, ".dat"))

    def read_inf(self, dirname: str, message_id: str) -> bytes:
        """``ID.inf``'s bytes; InfError when it is no regular file or far too big."""
        try:
            return read_regular(self.path(dirname, message_id, ".inf"), MAX_INF_BYTES)
        except NotARegularFile as exc:
            raise InfError(str(exc)) from None

    def check_data_file(self, dirname: str, message_id: str) -> None:
        """InfError unless ``ID.dat`` is a regular file (lstat: a symlink is not)."""
        try:
            mode = os.lstat(self.path(dirname, message_id, ".dat")).st_mode
        except FileNotFoundError:
            raise InfError("its .dat file is missing") from None
        if not stat.S_ISREG(mode):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise InfError(f"its .dat file is {kind}")

    def read_envelope(
        self, dirname: str, message_id: str, *, now: float, require_recipients: bool = True
    ) -> Envelope:
        """Parse ``ID.inf``; InfError when invalid, or when its ``.dat`` is missing or
        is no regular file. Safe on files of any kind dropped by anyone (issue 9)."""
        text = decode_inf(self.read_inf(dirname, message_id))
        envelope = parse_envelope(text, message_id, now=now, require_recipients=require_recipients)
        self.check_data_file(dirname, message_id)  # after: what is wrong with the .inf first
        return envelope

    def scan(self, dirname: str) -> Iterator[tuple[str, int, float]]:
        """(id, inode, mtime) for every ``.inf`` in ``dirname`` (inode from getdents: cheap)."""
        with os.scandir(self.dir(dirname)) as entries:
            for entry in entries:
                name = entry.name
                if not name.endswith(".inf") or name.startswith("."):
                    continue
                message_id = name[:-4]
                if not is_valid_message_id(message_id):
                    continue
                try:
                    mtime = entry.stat().st_mtime
                except FileNotFoundError:
                    continue
                yield message_id, entry.inode(), mtime

    def inode(self, dirname: str, message_id: str) -> int:
        """The inode of ``ID.inf`` (0 when it is gone): a rewrite by another program changes it."""
        try:
            return os.stat(self.path(dirname, message_id, ".inf")).st_ino
        except FileNotFoundError:
            return 0

    def count(self, dirname: str) -> int:
        return sum(1 for _ in self.scan(dirname))

    # -- start-up, shutdown.txt, retention ---------------------------------

    def recover_working(self) -> list[str]:
        """Move everything left in working/ to retry/ (manual §5: at start-up)."""
        moved = []
        for message_id, _, _ in list(self.scan("working")):
            try:
                self.move(message_id, "working", "retry")
                moved.append(message_id)
            except FileNotFoundError:
                continue
        for name in os.listdir(self.dir("working")):
            if name.endswith(".dat") and not name.startswith("."):
                # A .dat whose .inf never arrived: move it too, the scan warns about it.
                try:
                    os.rename(
                        os.path.join(self.dir("working"), name),
                        os.path.join(self.dir("retry"), name),
                    )
                except OSError:
                    pass
        return moved

    def repair_interrupted_moves(
        self, dirs: tuple[str, ...] = DIRS, *, settled_before: float | None = None
    ) -> list[str]:
        """Finish moves cut short by a crash: put each ``.inf-moving`` beside its ``.dat``.

        With ``settled_before``, only those renamed before then (ctime): while other
        worker processes run, a young one may be a move in progress.
        """
        repaired = []
        for dirname in dirs:
            with os.scandir(self.dir(dirname)) as entries:  # retry/ may hold millions
                names = [e.name for e in entries if e.name.endswith(".inf-moving")]
            for name in names:
                if settled_before is not None and not _changed_before(
                    os.path.join(self.dir(dirname), name), settled_before
                ):
                    continue
                message_id = name[: -len(".inf-moving")]
                if not is_valid_message_id(message_id):
                    continue
                home = next(
                    (
                        d
                        for d in (dirname, *DIRS)
                        if os.path.exists(self.path(d, message_id, ".dat"))
                    ),
                    dirname,
                )
                os.rename(
                    os.path.join(self.dir(dirname), name), self.path(home, message_id, ".inf")
                )
                repaired.append(message_id)
        return repaired

    def remove_stale_temp_files(self, older_than: float) -> int:
        """Remove ``.ID.*.tmp`` files a crash left behind (older than ``older_than``: a
        writer in another process may be busy with a young one right now)."""
        removed = 0
        for dirname in DIRS:
            with os.scandir(self.dir(dirname)) as entries:
                for entry in entries:
                    if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                        continue
                    try:
                        if entry.stat().st_mtime < older_than:
                            os.unlink(entry.path)
                            removed += 1
                    except FileNotFoundError:
                        continue
        return removed

    def take_shutdown_request(self) -> bool:
        """True (and the file is removed) when retry/shutdown.txt exists."""
        try:
            os.unlink(os.path.join(self.dir("retry"), SHUTDOWN_FILE))
            return True
        except FileNotFoundError:
            return False

    def remove_older_than(self, dirname: str, cutoff: float) -> int:
        """Delete messages whose ``.inf`` was last written before ``cutoff``; count them."""
        removed = 0
        for message_id, _, mtime in list(self.scan(dirname)):
            if mtime < cutoff and self.delete(dirname, message_id):
                removed += 1
        return removed

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize


def _changed_before(path: str, when: float) -> bool:
    try:
        return os.lstat(path).st_ctime < when
    except FileNotFoundError:
        return False


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)
