"""Timing for ``infosam experiment``: each training attempt's wall and CPU time in ``cell.json`` (a killed attempt
counted up to its last minute)."""

from __future__ import annotations

import time
from pathlib import Path

from ..files import write_json

TIMING_WRITE_SECONDS = 60.0
"""How often a training attempt writes its time so far into ``cell.json``, so that an attempt killed without warning
(out of memory, a machine taken back) still counts in the cell's ``train_seconds``."""


class AttemptClock:
    """Adds one training attempt's wall and CPU time to a cell's ``info`` (``train_seconds``,
    ``train_cpu_seconds``): written every :data:`TIMING_WRITE_SECONDS` from the step callback and once at the end."""

    def __init__(self, info: dict, path: Path):
        self.info, self.path = info, path
        self.wall0, self.cpu0 = info.get("train_seconds", 0.0), info.get("train_cpu_seconds", 0.0)
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        self.written = self.started

    def write(self) -> None:
        self.info["train_seconds"] = self.wall0 + time.perf_counter() - self.started
        self.info["train_cpu_seconds"] = self.cpu0 + time.process_time() - self.cpu_started
        write_json(self.path, self.info)
        self.written = time.perf_counter()

    def on_step(self, step: int) -> None:
        if time.perf_counter() - self.written >= TIMING_WRITE_SECONDS:
            self.write()
