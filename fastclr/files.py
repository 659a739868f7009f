"""How fastclr writes: each file whole or not at all, each output folder by one writer at a time.

`write_atomic`: every file fastclr writes goes through it. A reader (a resumed run, an evaluation,
`fastclr report`) then sees the old content or the new, never a half-written file, whatever kills
the writer; a full disk is an OSError naming the file the user knows, never the temporary one,
which is removed.

`FolderLock`: every command that writes an output folder holds its lock while it writes. Two
writers in one folder interleave their files, remove each other's temporary ones and publish a
mixture; the second is refused at once, naming the first. `write_advice` says what to do about a
failed write, by its cause.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import itertools
import json
import os
import socket
import sys
from pathlib import Path

LOCK = ".lock"
# flock's answers on a filesystem without locks (NFS without a lock manager, Lustre mounted noflock)
NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)
FULL = (errno.ENOSPC, errno.EDQUOT)
DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write `data` to a hidden temporary file beside `path`, fsync it, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_advice(err: OSError, folder: str | Path = "the folder") -> str:
    """What to do about a write in `folder` that failed with `err`: free space only when the disk or
    the quota is full (a file removed under the writer, say by another process, is no full disk)."""
    if err.errno in FULL:
        return "free space"
    if err.errno in DENIED:
        return f"make {folder} writable"
    if err.errno == errno.ENOENT:
        return "make sure no other process writes or tidies that folder"
    return "fix the cause"


class FolderInUse(Exception):
    """Another process holds the folder's lock; the message names it and says what to do."""


class FolderLock:
    """One writer per folder: `acquire()` takes `fcntl.flock` on a lock file, or raises `error`
    naming the holder (pid, host, since, command); `release()` removes the file, and the folders
    `acquire` made if nothing was written in them.

    The kernel frees the lock when its holder dies however it dies, and over NFS the lock manager
    spans hosts. On a filesystem without locks the file alone decides: a holder on this host whose
    pid is gone is stale and taken over; one on another host cannot be checked, and the message
    says how to remove it.

    The lock file is `folder/.lock`; with `beside=True` it is `.NAME.lock` beside the folder, for an
    output written elsewhere and renamed into place whole (a shard folder, built in its hidden
    partial folder): the lock then covers both.
    """

    error: type[Exception] = FolderInUse

    def __init__(self, folder: str | Path, what: str = "folder", beside: bool = False):
        self.folder, self.what = Path(folder), what
        if beside:
            absolute = Path(os.path.abspath(folder))  # `.` and `x/..` have a name only as absolute paths
            self.path = absolute.with_name(f".{absolute.name}.lock")
        else:
            self.path = self.folder / LOCK
        self.fd: int | None = None
        self.made: list[Path] = []

    def acquire(self) -> dict | None:
        """Take the lock; returns the stale holder taken over, if the file named one."""
        home = self.path.parent
        self.made = list(itertools.takewhile(lambda p: not p.exists(), (home, *home.parents)))
        home.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                previous = self._lock(fd)
            except BaseException:
                os.close(fd)
                self._remove_made()
                raise
            try:  # released (and unlinked) between our open and our lock: lock the new file instead
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self.fd = fd
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "command": " ".join(["fastclr", *sys.argv[1:]]) if sys.argv else "fastclr",
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        return previous

    def _busy(self, holder: dict | None) -> Exception:
        return self.error(
            f"{self.what} {self.folder} is in use by another run ({holder_text(holder)}); "
            f"wait for it to end or stop it, or give this run another {self.what}"
        )

    def _lock(self, fd: int) -> dict | None:
        holder = _read(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._busy(_read(fd)) from None
        except OSError as err:
            if err.errno not in NO_LOCKS:
                raise
            return self._without_locks(holder)
        return holder  # the kernel held no lock for it: its process has ended

    def _without_locks(self, holder: dict | None) -> dict | None:
        """This filesystem has no flock: only a holder on this host can be checked."""
        if not holder:
            return None
        if holder.get("host") == socket.gethostname():
            if holder.get("pid") == os.getpid() or not _alive(int(holder.get("pid", 0))):
                return holder
            raise self._busy(holder)
        raise self.error(
            f"{self.what} {self.folder} was taken by {holder_text(holder)}, and this filesystem has no "
            f"locks to tell whether that run still goes on; if it has ended, delete {self.path} and "
            "run again"
        )

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)  # unlink before unlocking: a waiter then sees another inode
        os.close(self.fd)
        self.fd = None
        self._remove_made()

    def _remove_made(self) -> None:
        """Remove the folders acquire made, innermost first, while they are empty: a run refused
        before it wrote anything leaves nothing behind."""
        for folder in self.made:
            try:
                folder.rmdir()
            except OSError:
                break
        self.made = []


def holder_text(holder: dict | None) -> str:
    """The lock holder as the refusal names it: pid, host, since when, its command line."""
    if not holder:
        return "a process that has not yet written its name"
    return (
        f"pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('started')}: "
        f"{holder.get('command', '?')}"
    )


def _read(fd: int) -> dict | None:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"null")
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
