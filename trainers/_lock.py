"""One run per run directory: a lock held by rank 0, and a refusal of launches that formed no process group.

Two writers in one run_dir interleave metrics.jsonl, and each one's start tidies
away the other's unfinished checkpoint. `RunDirLock` takes `fcntl.flock` on
`run_dir/.lock`: the kernel frees it when its holder dies however it dies, and
over NFS the lock manager spans hosts. The file names its holder (host, pid,
start, command) for the refusal. On a filesystem without locks the file alone
decides: a holder on this host whose pid is gone is stale and taken over; one on
another host cannot be checked, and the message says how to remove it.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import functools
import inspect
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

LOCK = ".lock"
NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)
# where launchers write the process count and rank (torchrun and accelerate; MPI and Slurm's PMI)
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")


class RunDirError(Exception):
    """The run_dir is in use, or the launch would run several separate jobs in it."""


def launched_processes() -> int:
    """How many processes the launcher says it started (1 without a launcher)."""
    return max((int(os.environ.get(name) or 1) for name in WORLD_SIZE_VARIABLES), default=1)


def check_process_group(num_processes: int, cpu: bool, cuda: bool) -> None:
    """Refuse a launch that started several processes which did not join one process group.

    Accelerate joins a launcher's processes into a group on GPUs, or on CPUs when asked (`cpu`, which
    `new_accelerator` sets itself for torchrun on a machine without GPUs); otherwise each runs as a
    one-process job, and they all write the same run_dir.
    """
    launched = launched_processes()
    if launched <= num_processes:
        return
    if not (cpu or cuda):
        fix = "torch sees no GPU here, and Accelerate joins CPU processes only when asked: add cpu=true"
    else:
        fix = "check the launcher's settings (accelerate config, --nproc_per_node, --nnodes)"
    raise RunDirError(
        f"the launcher started {launched} processes but this one runs alone ({num_processes} in its "
        f"process group), so each would train separately in the same run_dir; {fix}"
    )


def _holder_text(holder: dict | None) -> str:
    if not holder:
        return "a process that has not yet written its name"
    return (
        f"pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('started')}: "
        f"{holder.get('command', '?')}"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class RunDirLock:
    """`acquire()` or RunDirError naming the holder; `release()` removes the lock file (and the
    run_dir, if acquire made it and nothing was written there). Rank 0 holds it for the whole run."""

    def __init__(self, run_dir: Path, what: str = "run_dir"):
        self.run_dir, self.path, self.what = Path(run_dir), Path(run_dir) / LOCK, what
        self.fd: int | None = None
        self.made_dir = False

    def acquire(self) -> dict | None:
        """Take the lock; returns the stale holder taken over, if the file named one."""
        self.made_dir = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                previous = self._lock(fd)
            except BaseException:
                os.close(fd)
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

    def _lock(self, fd: int) -> dict | None:
        holder = self._read(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(
                f"{self.what} {self.run_dir} is in use by another run ({_holder_text(self._read(fd))}); "
                f"wait for it to end or stop it, or give this run another {self.what}"
            ) from None
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
            raise RunDirError(
                f"{self.what} {self.run_dir} is in use by another run ({_holder_text(holder)}); "
                f"wait for it to end or stop it, or give this run another {self.what}"
            )
        raise RunDirError(
            f"{self.what} {self.run_dir} was taken by {_holder_text(holder)}, and this filesystem has no "
            f"locks to tell whether that run still goes on; if it has ended, delete {self.path} and "
            "run again"
        )

    @staticmethod
    def _read(fd: int) -> dict | None:
        try:
            holder = json.loads(os.pread(fd, 4096, 0) or b"null")
        except ValueError:
            return None
        return holder if isinstance(holder, dict) else None

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)  # unlink before unlocking: a waiter then sees another inode
        os.close(self.fd)
        self.fd = None
        if self.made_dir:
            try:
                self.run_dir.rmdir()  # made here and still empty: the run was refused before writing
            except OSError:
                pass


def holds_folder(argument: str, check: Callable[[Path], None] | None = None):
    """Decorate a trainer whose `argument` names its output folder: the launch's rank 0 (by the
    launcher's variables, before any process group exists) holds that folder's lock throughout.
    `check` vets the folder first, so a bad one is named by what is wrong with it, not by the lock."""

    def decorate(train):
        signature = inspect.signature(train)

        @functools.wraps(train)
        def locked(*args, **kwargs):
            if any(int(os.environ.get(name) or 0) for name in RANK_VARIABLES):
                return train(*args, **kwargs)
            folder = Path(signature.bind(*args, **kwargs).arguments[argument])
            if check is not None:
                check(folder)
            lock = RunDirLock(folder, what=f"--{argument}")
            try:
                lock.acquire()
            except OSError as err:
                raise RunDirError(
                    f"--{argument} {folder}: cannot write there ({err.strerror or err})"
                ) from None
            try:
                return train(*args, **kwargs)
            finally:
                lock.release()

        return locked

    return decorate
