"""Ctrl-C and SIGTERM during a run: :class:`StopSignals` turns SIGINT / SIGTERM into a request that the training
loop honours at the next step boundary (checkpoint, then :class:`RunInterrupted`); a second signal stops at once.
"""

from __future__ import annotations

import logging
import signal

import torch

from .errors import RunError

log = logging.getLogger(__name__)


class RunInterrupted(RunError):
    """SIGINT / SIGTERM stopped the run; the message says what was saved and how to resume."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM


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
