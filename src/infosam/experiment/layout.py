"""Where everything lives in an experiment folder, and in a results record, which has the same layout.

An experiment folder (``infosam experiment GRID --out DIR``) and a grid's committed results record
(``results:`` in the grid file) are both::

    experiment.json                 which grid file, and the root its relative paths are read from
    grid.yaml                       the grid as it was last run
    splits/<dataset>/<split>.csv    the image lists every cell trained and was scored on
    teacher/<dataset>/<split>/      the zero-shot teacher's evaluation of a split (a scored set, below)
    cells/<dataset>/<part>/<arm>/seed-<n>/
        cell.json                   status, config hash, timings, device
        run/                        the training run (experiment folders only: records keep no weights)
        train-log.csv               the run's metrics.csv: loss terms per logged step (results records only)
        curve-test.json             the run's own test evaluations per epoch (results records only)
        eval/<set>/                 final evaluation per scored set (test, retention-<dataset>), epoch-NNN/ inside
    report/                         ``infosam report``'s default output: report.md and its tables

A scored set's folder holds ``per_image.csv`` and ``summary.json`` (as :func:`infosam.evaluate.write_evaluation`
writes them); every cell and teacher folder of a record also holds ``SHA256SUMS``, the digests of its other files.

This module is the only one that spells those names (tests/test_experiment_layout.py holds it to that); the runner,
the records and the report ask it. Run folders are :class:`infosam.runs.RunDir`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .grid import Cell

EXPERIMENT_FILE = "experiment.json"
GRID_COPY = "grid.yaml"
SPLITS_DIR = "splits"
SPLIT_SUFFIX = ".csv"
TEACHER_DIR = "teacher"
CELLS_DIR = "cells"
CELL_FILE = "cell.json"
RUN_DIR = "run"
EVAL_DIR = "eval"
EPOCH_PREFIX = "epoch-"
TRAIN_LOG_FILE = "train-log.csv"
CURVE_FILE = "curve-test.json"
CHECKSUM_FILE = "SHA256SUMS"
"""A record folder's checksum list (``sha256sum`` format); a dataset folder's list has the same name."""
PER_IMAGE_FILE = "per_image.csv"
SUMMARY_FILE = "summary.json"
"""A scored set's files: the same names :mod:`infosam.evaluate` writes."""

REPORT_DIR = "report"
REPORT_FILE = "report.md"
REPORT_FIGURES = "figures"
REPORT_TABLES = {
    "scores": "scores.csv",
    "summary": "summary.csv",
    "paired": "paired.csv",
    "retention": "retention.csv",
    "loss_terms": "loss_terms.csv",
    "per_image": PER_IMAGE_FILE,
}
"""The report's tables, beside its Markdown (its per-image table has a scored set's file name)."""

KILLED_ATTEMPTS_TIMED = "killed attempts counted"
"""``cell.json``'s ``timing`` when every training attempt of the cell was timed as it ran (a killed one up to its
last minute); a cell without it was started by older code, which lost the time of an attempt that was killed."""

__all__ = [
    "CELL_FILE",
    "CHECKSUM_FILE",
    "CURVE_FILE",
    "EVAL_DIR",
    "EXPERIMENT_FILE",
    "GRID_COPY",
    "PER_IMAGE_FILE",
    "REPORT_TABLES",
    "SUMMARY_FILE",
    "ExperimentDir",
]


def split_path(splits: Path, dataset: str, split: str) -> Path:
    """The image list of ``split`` of ``dataset`` in the split folder ``splits``."""
    return Path(splits) / dataset / f"{split}{SPLIT_SUFFIX}"


def split_name(dataset: str, split: str) -> str:
    """The image list of ``split`` of ``dataset`` relative to an experiment folder (as summaries name it)."""
    return split_path(Path(SPLITS_DIR), dataset, split).as_posix()


def epoch_folder(epoch: int) -> str:
    """The folder of a scored set's evaluation after ``epoch`` (``epoch-NNN``)."""
    return f"{EPOCH_PREFIX}{epoch:03d}"


def epoch_of(folder: Path) -> int:
    """The epoch of an :func:`epoch_folder`."""
    return int(Path(folder).name.split("-")[1])


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
        return self.root / SPLITS_DIR

    @property
    def teachers(self) -> Path:
        return self.root / TEACHER_DIR

    @property
    def cells(self) -> Path:
        return self.root / CELLS_DIR

    @property
    def report(self) -> Path:
        """``infosam report``'s default output folder."""
        return self.root / REPORT_DIR

    def split_file(self, dataset: str, split: str) -> Path:
        """The image list of ``split`` (e.g. ``fold1of5-test``, ``heldout``) of ``dataset``."""
        return split_path(self.splits, dataset, split)

    def split_files(self) -> list[Path]:
        """Every image list of the folder, sorted."""
        return sorted(self.splits.glob(f"*/*{SPLIT_SUFFIX}"))

    def teacher(self, dataset: str, split: str) -> Path:
        """The zero-shot teacher's evaluation folder for a split."""
        return self.teachers / dataset / split

    def teacher_evaluations(self) -> list[Path]:
        """Every finished teacher evaluation folder (one with a summary), sorted."""
        return [path.parent for path in sorted(self.teachers.glob(f"*/*/{SUMMARY_FILE}"))]

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
        from ..runs import RunDir

        for path in (self.cell(cell) / TRAIN_LOG_FILE, RunDir(self.run(cell)).metrics_file):
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


def scored(folder: Path) -> bool:
    """Whether ``folder`` holds a finished evaluation of a scored set (its summary is written last)."""
    return (Path(folder) / SUMMARY_FILE).is_file()
