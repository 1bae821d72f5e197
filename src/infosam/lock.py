"""The run folder's writer lock: one process writes a run (or a scored evaluation folder) at a time.

:class:`RunLock` is the exclusive ``flock`` on a folder's ``.lock`` file (pid and host inside), held for the whole
run; the kernel releases it when the holder dies, so a killed run never leaves a lock that blocks.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from .errors import RunError


class RunLockedError(RunError):
    """Another process holds the run folder's lock; the message names it (pid, host, since when), and so does
    :attr:`holder`."""

    def __init__(self, message: str, holder: str = "another process") -> None:
        super().__init__(message)
        self.holder = holder


LOCK_FILE = ".lock"


class RunLock:
    """Exclusive lock on a run folder for one writer: ``fcntl.flock`` on ``<folder>/.lock``, which records the
    holder's pid, host and start time. Use as a context manager, or :meth:`acquire` / :meth:`release`.

    The kernel drops a ``flock`` when its holder exits however it exits (kill -9 included), so a lock file left
    behind by a dead process never blocks: only a living holder does. Forked children share the lock: when the
    recorded holder is dead on this host but the lock is still held (its data-loader workers have not noticed
    yet), acquiring waits up to :attr:`stale_wait_s` for them to exit, then refuses saying so.

    Raises:
        RunLockedError: another process holds the lock.
    """

    stale_wait_s = 15.0
    """How long to wait for a dead holder's children (data-loader workers notice their parent's death within
    ~5 s) to release the lock it passed on to them."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock (a no-op when this object holds it already) and record this process in the lock file."""
        if self._fd is not None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _flock(fd, self.stale_wait_s)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"run folder {self.folder} is in use by {holder}; one process writes a run at a time: wait for it "
                f"to end or stop it, then `infosam train --resume {self.folder}`",
                holder,
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.write(fd, f"pid {os.getpid()}\nhost {socket.gethostname()}\nsince {stamp}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self, *, remove: bool = False) -> None:
        """Drop the lock (``remove``: also delete the lock file, while still holding it)."""
        import fcntl

        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _flock(fd: int, stale_wait_s: float) -> None:
    """Take the exclusive flock on ``fd``; BlockingIOError when a living holder (or its children, after
    ``stale_wait_s``) keeps it."""
    import fcntl

    deadline = time.monotonic() + stale_wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pid, host = _holder_fields(fd)[:2]
            dead_here = host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))
            if not dead_here or time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def _holder_fields(fd: int) -> tuple[str, str, str]:
    """(pid, host, since) as recorded in a lock file ('?' when unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace")
    except OSError:
        text = ""
    fields = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    return fields.get("pid", "?"), fields.get("host", "?"), fields.get("since", "?")


def _read_holder(fd: int) -> str:
    """'pid P on host H (since T)' from a lock file's content, with a note when P is dead on this host."""
    pid, host, since = _holder_fields(fd)
    note = ""
    if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
        note = " (that process has exited, but a process it started still holds the lock)"
    return f"pid {pid} on host {host} (since {since}){note}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def held_by_other(folder: str | Path) -> bool:
    """Whether the lock file of ``folder`` names another living process on this host as its holder: read only,
    the lock itself is not probed (probing could make the holder's own attempt to take it fail). A lock file left
    by an exited process, or naming another host, reads as free."""
    try:
        text = (Path(folder) / LOCK_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    fields = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    pid, host = fields.get("pid", ""), fields.get("host", "")
    return host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid))
