"""``infosam experiment``: run every cell of a grid as an ordinary training run, then score it.

Layout of an experiment folder::

    grid.yaml                             copy of the grid file last run here
    experiment.json                       where the original grid file was (its relative paths start there)
    splits/<dataset>/<part>-train.csv     the exact images of every split (image,label relative to the dataset)
    splits/<dataset>/<part>-test.csv
    splits/<dataset>/heldout.csv          the dataset's held-out images (its retention set for other datasets)
    teacher/<dataset>/<split>/            zero-shot teacher: per_image.csv + summary.json, once per split
    cells/<dataset>/<part>/<arm>/seed-<s>/
        .lock                             held by the process running the cell (others leave the cell to it)
        cell.json                         the cell, its config hash, status and timings
        run/                              the training run folder (infosam train)
        eval/test/                        the final student on the cell's test split
        eval/retention-<dataset>/         ... on another dataset's held-out images
        eval/retention-<dataset>/epoch-NNN/   ... after each evaluated epoch (forgetting curves)

Re-running a grid skips finished cells, resumes a half-finished one from its newest checkpoint, and computes any
evaluation that is missing (e.g. after a retention dataset was added). A cell's name never holds results of two
configs: its resolved config is hashed, and a changed config under an existing name is refused.

Several processes (one per GPU or CPU core) may run the same grid on one folder at once: each holds the lock of the
cell it is on and skips cells another process holds, so they share the cells as they go (``shard`` splits them in
fixed shares instead). A process killed mid-cell drops its lock with it; the next run resumes the cell.

This module prepares the folder and walks the cells; :mod:`~infosam.experiment.sharing` claims a cell (its
lock) and shares the cells between processes, :mod:`~infosam.experiment.cellrun` trains one,
:mod:`~infosam.experiment.scoring` scores it and the teacher, :mod:`~infosam.experiment.recorder` records it, and
:mod:`~infosam.experiment.timing` times its training attempts. Every path is :mod:`~infosam.experiment.layout`'s.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from ..files import atomic_write_text, write_json
from . import records
from .cellrun import BUSY, RAN
from .grid import Cell, Grid, GridError, load_grid
from .layout import ExperimentDir
from .plan import cell_config, cells, model_config
from .recorder import record_finished
from .scoring import teacher_evaluations
from .sharing import queue_left, run_cell, shard_cells
from .splits import make_splits, split_text

log = logging.getLogger(__name__)


def load_experiment_grid(exp_dir: str | Path) -> Grid:
    """The grid an experiment folder (or a results record) was last run with (its copy, relative paths as in the
    original; an unset $VARIABLE in a dataset path is kept as written, for reports made where the data is not)."""
    layout = ExperimentDir(exp_dir)
    root = Path(layout.info()["grid_root"])  # a results record names it relative to itself
    return load_grid(
        layout.grid_copy, root=root if root.is_absolute() else layout.root / root, lenient_vars=True
    )


@dataclass
class Progress:
    """Where a grid stands, passed to the progress callback after each cell."""

    done: int
    """Cells finished (including those skipped as already finished)."""
    total: int
    cell: Cell
    seconds: float
    """Time this cell took in this call (0 when skipped)."""
    eta_seconds: float | None
    """Estimated time left: mean time of the cells run in this call x the cells left in this process's queue
    (:func:`~infosam.experiment.sharing.queue_left`: not finished, not held by another process); None before
    the first."""
    skipped: bool
    """Nothing was done for this cell in this call: finished already, or (``busy``) being run by another process."""
    busy: bool = False
    """Another process sharing the experiment folder holds this cell (its lock): left to it, not finished here."""


def run_experiment(
    grid_path: str | Path,
    out: str | Path | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    train_progress: bool = False,
    shard: tuple[int, int] | None = None,
    record_only: bool = False,
) -> Path:
    """Run (or continue) the grid ``grid_path`` in the experiment folder ``out``; returns the folder.

    Args:
        grid_path: the grid file (see :mod:`infosam.experiment.grid`).
        out: experiment folder (default ``runs/experiments/<grid file stem>``).
        on_progress: called after each cell with a :class:`Progress`.
        train_progress: show each run's step progress bar.
        shard: ``(k, n)``, 1 <= k <= n: run only this process's share of the cells (:func:`~infosam.experiment.sharing.shard_cells`), so n
            processes (one per GPU or CPU core) share one experiment folder without touching the same cell; each
            scores the zero-shot teacher on what its cells need (a split scored already is skipped).
        record_only: train and score nothing: copy what is finished in ``out`` into the grid's ``results``
            record (:mod:`infosam.experiment.records`), e.g. from a folder run by an older version; a cell
            recorded before records kept the training log gets it from ``out`` (same config hash); a legacy
            record gets its checksum list, and a record that fails verification is recorded again
            (:func:`~infosam.experiment.recorder.record_finished`).

    With a ``results`` folder in the grid, every finished cell and teacher evaluation is also recorded there, and
    a cell already recorded (on any machine) counts as finished.
    """
    if shard is not None:
        k, n = shard
        if not (isinstance(k, int) and isinstance(n, int) and 1 <= k <= n):
            raise ValueError(f"shard must be K/N with 1 <= K <= N, got {k}/{n}")
    grid = load_grid(grid_path)
    exp_dir = Path(out if out is not None else Path("runs") / "experiments" / grid.path.stem).expanduser()
    exp_dir = exp_dir.resolve()
    todo = _prepare(grid, exp_dir, shard)
    if record_only:
        if not records.has_records(grid):
            raise GridError(f"{grid.path} has no results folder: nothing to record into")
        record_finished(grid, todo, exp_dir)
        return exp_dir
    layout = ExperimentDir(exp_dir)
    _check_batches(grid, todo, layout)
    teacher_evaluations(grid, todo, exp_dir)

    spent: list[float] = []
    busy: list[str] = []
    for index, cell in enumerate(todo, start=1):
        start = time.perf_counter()
        outcome = run_cell(grid, cell, exp_dir, train_progress)
        seconds = time.perf_counter() - start
        if outcome == RAN:
            spent.append(seconds)
        elif outcome == BUSY:
            busy.append(cell.name)
        # time left: the mean time of the cells run in this call x the cells left in this process's queue
        eta = sum(spent) / len(spent) * queue_left(grid, todo[index:], layout) if spent else None
        if on_progress is not None:
            ran = outcome == RAN
            on_progress(
                Progress(index, len(todo), cell, seconds if ran else 0.0, eta, not ran, outcome == BUSY)
            )
    if busy:
        log.info(
            "%d cell(s) were being run by other processes and were left to them: %s",
            len(busy),
            ", ".join(busy),
        )
    return exp_dir


def _prepare(grid: Grid, exp_dir: Path, shard: tuple[int, int] | None) -> list[Cell]:
    """Make the experiment folder (the grid's copy, ``experiment.json``, the split lists) and the record's common
    files; returns the cells this process is to run (its shard)."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    layout = ExperimentDir(exp_dir)
    _write_grid_copy(grid, layout.grid_copy)
    write_json(layout.experiment_file, {"grid": str(grid.path), "grid_root": str(grid.path.parent)})
    _write_splits(grid, layout)
    if records.has_records(grid):
        records.write_common(grid, layout.splits)
    todo = cells(grid)
    _check_one_teacher(grid, todo)
    if shard is not None:
        todo = shard_cells(todo, *shard, grid=grid)
    return todo


# --------------------------------------------------------------------------------------------- the folder


def _write_grid_copy(grid: Grid, path: Path) -> None:
    """The grid file as run, with every path made absolute (and variables expanded), so the report reads the
    same datasets and configs wherever it is started."""
    data = yaml.safe_load(grid.path.read_text(encoding="utf-8"))
    if grid.base is not None:
        data["base"] = str(grid.base.resolve())
    for name, d in grid.datasets.items():
        data["datasets"][name]["path"] = str(d.path.resolve())
        if d.split_files is not None:
            data["datasets"][name]["split_files"] = {k: str(v.resolve()) for k, v in d.split_files.items()}
    for name, arm in grid.arms.items():
        if arm.config is not None:
            data["arms"][name]["config"] = str(arm.config.resolve())
    header = f"# copy of {grid.path} as run here, paths made absolute\n"
    atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False))


def _write_splits(grid: Grid, layout: ExperimentDir) -> None:
    """Write every split list; refuse when an existing one differs (the data or the split settings changed)."""
    for d in grid.datasets.values():
        for name, images in make_splits(d).items():
            path = layout.split_file(d.name, name)
            text = split_text(images)
            if path.is_file():
                if path.read_text(encoding="utf-8") != text:
                    raise GridError(
                        f"{path} differs from the split the grid gives now (the dataset folder or datasets."
                        f"{d.name}'s split settings changed); results would mix two splits: use another --out"
                    )
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)


def _check_batches(grid: Grid, todo: list[Cell], layout: ExperimentDir) -> None:
    """Refuse, before any cell runs, a cell whose training set is smaller than one batch of its config."""
    seen = set()
    for cell in todo:
        if (cell.dataset, cell.part, cell.arm) in seen:
            continue
        seen.add((cell.dataset, cell.part, cell.arm))
        config = cell_config(grid, cell, layout.splits, layout.run(cell))
        path = layout.split_file(cell.dataset, f"{cell.part}-train")
        n = len(path.read_text(encoding="utf-8").splitlines()) - 1  # header, then one image per line
        if n < config.train.batch_size:
            raise GridError(
                f"{grid.path}: datasets.{cell.dataset}: part {cell.part} trains on {n} image(s) ({path}), fewer "
                f"than one batch (train.batch_size={config.train.batch_size} in arm {cell.arm}): give more "
                "training images or a smaller batch"
            )


def _check_one_teacher(grid: Grid, todo: list[Cell]) -> None:
    models = {json.dumps(asdict(model_config(grid, c)), sort_keys=True) for c in todo}
    if len(models) > 1:
        raise GridError(
            f"{grid.path}: the arms and datasets of one grid must share the model section (it is the teacher every "
            f"arm is compared with); found {len(models)} different ones"
        )
