"""Where everything lives in an experiment folder, and in a results record, which has the same layout.

An experiment folder (``infosam experiment GRID --out DIR``) and a grid's committed results record
(``results:`` in the grid file) are both::

    experiment.json                 which grid file, and the root its relative paths are read from
    grid.yaml                       the grid as it was last run
    splits/<dataset>/<split>.csv    the image lists every cell trained and was scored on
    teacher/<dataset>/<split>/      the zero-shot teacher's evaluation of a split
    cells/<dataset>/<part>/<arm>/seed-<n>/
        cell.json                   status, config hash, timings, device
        run/                        the training run (experiment folders only: records keep no weights)
        train-log.csv               the run's metrics.csv: loss terms per logged step (results records only)
        eval/<set>/                 final evaluation per scored set (test, retention-<dataset>), epoch-* inside

This module is the only one that spells those names; the runner, the records and the report ask it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .grid import Cell

CELL_FILE = "cell.json"
GRID_COPY = "grid.yaml"
EXPERIMENT_FILE = "experiment.json"
EVAL_DIR = "eval"
RUN_DIR = "run"
TRAIN_LOG_FILE = "train-log.csv"
KILLED_ATTEMPTS_TIMED = "killed attempts counted"
"""``cell.json``'s ``timing`` when every training attempt of the cell was timed as it ran (a killed one up to its
last minute); a cell without it was started by older code, which lost the time of an attempt that was killed."""

__all__ = ["CELL_FILE", "EVAL_DIR", "EXPERIMENT_FILE", "GRID_COPY", "ExperimentDir"]


@dataclass(frozen=True)
class ExperimentDir:
    """The paths of one experiment folder or results record (nothing is created or read until asked)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def experiment_file(self) -> Path:
        return self.root / EXPERIMENT_FILE

    @property
    def grid_copy(self) -> Path:
        return self.root / GRID_COPY

    @property
    def splits(self) -> Path:
        return self.root / "splits"

    @property
    def teachers(self) -> Path:
        return self.root / "teacher"

    @property
    def cells(self) -> Path:
        return self.root / "cells"

    def split_file(self, dataset: str, split: str) -> Path:
        """The image list of ``split`` (e.g. ``fold1of5-test``, ``heldout``) of ``dataset``."""
        return self.splits / dataset / f"{split}.csv"

    def teacher(self, dataset: str, split: str) -> Path:
        """The zero-shot teacher's evaluation folder for a split."""
        return self.teachers / dataset / split

    def cell(self, cell: Cell) -> Path:
        """The folder of one cell (one arm trained on one part with one seed)."""
        return self.cells / cell.dataset / cell.part / cell.arm / f"seed-{cell.seed}"

    def cell_file(self, cell: Cell) -> Path:
        return self.cell(cell) / CELL_FILE

    def run(self, cell: Cell) -> Path:
        """The cell's training run folder (absent in a results record)."""
        return self.cell(cell) / RUN_DIR

    def train_log(self, cell: Cell) -> Path | None:
        """The cell's training log (loss terms per logged step): a record's ``train-log.csv``, else the run's
        ``metrics.csv``; None when neither exists (a record made before records kept it)."""
        from ..runs import METRICS_FILE

        for path in (self.cell(cell) / TRAIN_LOG_FILE, self.run(cell) / METRICS_FILE):
            if path.is_file():
                return path
        return None

    def evaluation(self, cell: Cell, name: str) -> Path:
        """The cell's final evaluation of one scored set (``test`` or ``retention-<dataset>``)."""
        return self.cell(cell) / EVAL_DIR / name

    def cell_info(self, cell: Cell) -> dict:
        """The cell's ``cell.json``, or ``{}`` when the cell has none yet."""
        path = self.cell_file(cell)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def info(self) -> dict:
        """``experiment.json``: the grid file it was started with and the root of the grid's relative paths."""
        if not self.experiment_file.is_file():
            raise FileNotFoundError(
                f"{self.root} is not an experiment folder: {self.experiment_file} is missing"
            )
        return json.loads(self.experiment_file.read_text(encoding="utf-8"))
