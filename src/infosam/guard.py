"""What keeps a run honest when something goes wrong around it: non-finite losses and weights, Ctrl-C / SIGTERM,
and a second process on the same run folder.

- :class:`NonFiniteGuard` looks at every batch's loss and, before each optimizer step, at the gradients; a
  non-finite value stops the run (:class:`NonFiniteError`, naming the step) before the optimizer touches the
  weights, or (``train.nonfinite: skip``) drops that step as AMP's gradient scaler does, up to
  ``train.nonfinite_max_skips`` in a row.
- :func:`check_finite` refuses non-finite tensors, on every save and every load of trained weights.
- :class:`StopSignals` turns SIGINT / SIGTERM into a request that the loop honours at the next step boundary
  (checkpoint, then :class:`RunInterrupted`); a second signal stops at once.
- :class:`RunLock` is the exclusive ``flock`` on a run folder's ``.lock`` file (pid and host inside), held for the
  whole run; the kernel releases it when the holder dies, so a killed run never leaves a lock that blocks.

Every error here derives from :class:`RunError`: one line for the user, no traceback (the CLI prints it and exits
with its ``exit_code``).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

NONFINITE_POLICIES = ("stop", "skip")


class RunError(RuntimeError):
    """A run stopped for a reason the user must hear in one line (no traceback); ``exit_code`` for the CLI."""

    exit_code = 2


class NonFiniteError(RunError):
    """A loss, gradient or weight is NaN or infinite; the message names the step and what was kept."""


class RunInterrupted(RunError):
    """SIGINT / SIGTERM stopped the run; the message says what was saved and how to resume."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM


class RunLockedError(RunError):
    """Another process holds the run folder's lock; the message names it (pid, host, since when)."""


class NoSpaceError(RunError):
    """The disk filled up during a write; the message names the folder (temporaries are already removed)."""


# --------------------------------------------------------------------------------------------- finite checks


def nonfinite_names(tensors: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    return [
        name
        for name, t in items
        if isinstance(t, Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


def check_finite(
    tensors: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]],
    where: str,
    *,
    error: type[Exception] = ValueError,
    hint: str = "",
) -> None:
    """Raise ``error`` naming ``where`` and the first bad tensors when any tensor is NaN or infinite."""
    bad = nonfinite_names(tensors)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise error(f"{where}: non-finite values (NaN or inf) in {len(bad)} tensor(s): {shown}{hint}")


def nested_tensors(obj: object, prefix: str = "") -> list[tuple[str, Tensor]]:
    """Every tensor in nested dicts / lists / tuples (e.g. an optimizer state dict), with a dotted name."""
    if isinstance(obj, Tensor):
        return [(prefix, obj)]
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, list | tuple):
        items = enumerate(obj)
    else:
        return []
    out: list[tuple[str, Tensor]] = []
    for key, value in items:
        out += nested_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    return out


class NonFiniteGuard:
    """Decides, before each optimizer step, whether the step may touch the weights.

    Args:
        policy: ``stop`` (raise :class:`NonFiniteError`) or ``skip`` (drop the step: no weight update, gradients
            cleared; the scheduler still advances so the schedule keeps its length).
        max_skips: with ``skip``, stop anyway after this many skipped steps in a row.
        check_gradients: look at the gradients too (off under fp16, whose gradient scaler skips its own
            overflowing steps; the loss is still checked).
        accelerator: with several processes the verdict is all-reduced, so every process decides the same.
    """

    def __init__(
        self,
        policy: str = "stop",
        max_skips: int = 5,
        *,
        check_gradients: bool = True,
        accelerator=None,
    ) -> None:
        if policy not in NONFINITE_POLICIES:
            raise ValueError(f"train.nonfinite must be one of {NONFINITE_POLICIES}, got {policy!r}")
        self.policy = policy
        self.max_skips = max_skips
        self.check_gradients = check_gradients
        self.accelerator = accelerator
        self.has_checkpoint: Callable[[], bool] = lambda: True
        """Whether the run has written a checkpoint yet (set by the training loop); named in the stop message."""
        self.skipped = 0
        """Steps skipped by this process (all of them, not only in a row)."""
        self.in_a_row = 0
        self._losses: list[tuple[list[str], Tensor]] = []

    def observe(self, terms: Mapping[str, Tensor]) -> None:
        """Record one batch's loss terms (every batch of the accumulation window); checked in :meth:`allow_step`."""
        self._losses.append(
            (list(terms), torch.stack([v.detach().float().reshape(()) for v in terms.values()]))
        )

    def _kept(self) -> str:
        if self.has_checkpoint():
            return "The newest checkpoint is the last finite one"
        return "No checkpoint was written before it (--resume would start the run over)"

    def allow_step(self, parameters: Iterable[torch.nn.Parameter], step: int) -> bool:
        """True when optimizer step ``step`` (1-based) may run; False to skip it; :class:`NonFiniteError` to stop.

        One device synchronisation: the window's loss terms and the gradients' norms are checked together.
        Resets the window's loss record either way."""
        losses, self._losses = self._losses, []
        parts = [values for _, values in losses]
        grads = [p.grad for p in parameters if p.grad is not None] if self.check_gradients else []
        if grads:
            # A NaN or inf anywhere makes the norm non-finite (finite gradients overflow it only beyond ~1e19).
            parts.append(torch.nn.utils.get_total_norm(grads).float().reshape(1))
        if not parts:
            return True
        device = parts[-1].device
        ok = torch.isfinite(torch.cat([x.to(device) for x in parts])).all()
        verdict = (~ok).float()
        acc = self.accelerator
        if acc is not None and acc.num_processes > 1:
            verdict = acc.reduce(verdict.to(acc.device), reduction="sum")
        if float(verdict) == 0:
            self.in_a_row = 0
            return True
        bad_loss = [
            f"{name} {float(value):g}"
            for names, values in losses
            for name, value in zip(names, values.cpu(), strict=True)
            if not math.isfinite(float(value))
        ]
        bad_grads = sum(1 for g in grads if not bool(torch.isfinite(g).all()))
        what = []
        if bad_loss:
            what.append(f"loss ({', '.join(dict.fromkeys(bad_loss))})")
        if bad_grads:
            what.append(f"gradients ({bad_grads} tensors)")
        reason = f"non-finite {' and '.join(what) or 'loss or gradients on another process'} at step {step}"
        if self.policy == "stop":
            raise NonFiniteError(
                f"{reason}; stopped before the weights were updated (train.nonfinite=stop). "
                f"{self._kept()}; a lower train.lr or train.grad_clip usually helps"
            )
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row > self.max_skips:
            raise NonFiniteError(
                f"{reason}: {self.in_a_row} steps in a row were non-finite (train.nonfinite_max_skips="
                f"{self.max_skips}); stopped. {self._kept()}"
            )
        log.warning(
            "%s: step skipped (%d in a row, %d in all; train.nonfinite=skip)",
            reason,
            self.in_a_row,
            self.skipped,
        )
        return False


# --------------------------------------------------------------------------------------------- signals


class StopSignals:
    """While active, SIGINT and SIGTERM set :attr:`signum` instead of killing the process; the training loop
    polls :meth:`requested` at step boundaries. A second signal raises :class:`RunInterrupted` at once.

    Outside the main thread (where Python cannot install handlers) this does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, resume_hint: str) -> None:
        self.resume_hint = resume_hint
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        try:
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread
            self._restore()
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise RunInterrupted(
                f"stopped by a second {signal.Signals(signum).name} without writing a checkpoint; "
                f"{self.resume_hint}",
                signum,
            )
        self.signum = signum
        log.warning(
            "%s received: stopping after this step (checkpoint first); send it again to stop at once",
            signal.Signals(signum).name,
        )

    def requested(self, accelerator=None) -> bool:
        """Whether a stop was asked for (on any process, when ``accelerator`` runs several)."""
        asked = self.signum is not None
        if accelerator is not None and accelerator.num_processes > 1:
            flag = torch.tensor(float(asked), device=accelerator.device)
            asked = float(accelerator.reduce(flag, reduction="sum")) > 0
            if asked and self.signum is None:
                self.signum = signal.SIGTERM
        return asked

    def interrupted(self, what: str) -> RunInterrupted:
        """The error to raise once the loop has stopped (``what``: what was saved)."""
        name = signal.Signals(self.signum or signal.SIGTERM).name
        return RunInterrupted(f"stopped by {name}: {what}; {self.resume_hint}", self.signum or signal.SIGTERM)


# --------------------------------------------------------------------------------------------- run lock


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
                f"to end or stop it, then `infosam train --resume {self.folder}`"
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
