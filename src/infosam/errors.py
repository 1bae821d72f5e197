"""The base of the errors that stop a run for a reason the user must hear in one line.

The CLI catches :class:`RunError`, prints its message without a traceback and exits with its ``exit_code``. Each
error is defined beside what raises it: :class:`infosam.guard.NonFiniteError` (a NaN or an infinity),
:class:`infosam.signals.RunInterrupted` (SIGINT / SIGTERM), :class:`infosam.lock.RunLockedError` (another process
on the run folder) and :class:`infosam.files.NoSpaceError` (a full disk).
"""

from __future__ import annotations


class RunError(RuntimeError):
    """A run stopped for a reason the user must hear in one line (no traceback); ``exit_code`` for the CLI."""

    exit_code = 2
