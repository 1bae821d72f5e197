"""Several processes on one experiment folder: each runs a cell holding the cell's lock and leaves a cell another
process holds to it, so they share the cells as they go; ``--shard K/N`` splits them in fixed shares instead.

A process killed mid-cell drops its lock with it; the next run resumes the cell.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..lock import RunLock, RunLockedError, held_by_other
from . import records
from .cellrun import BUSY, FINISHED, run_locked_cell
from .grid import Cell, Grid
from .hashing import config_hash
from .layout import ExperimentDir
from .plan import cell_config, pairs
from .scoring import evaluations_complete

log = logging.getLogger(__name__)


def run_cell(grid: Grid, cell: Cell, exp_dir: Path, train_progress: bool) -> str:
    """Train (or resume) and score one cell, holding its folder's lock; returns :data:`~.cellrun.RAN`,
    :data:`~.cellrun.FINISHED` (nothing left to do) or :data:`~.cellrun.BUSY` (another process sharing the folder
    is on it: left to that process)."""
    layout = ExperimentDir(exp_dir)
    config = cell_config(grid, cell, layout.splits, layout.run(cell))
    digest = config_hash(config, exp_dir)
    if records.recorded_cell(grid, cell, digest) is not None:
        return FINISHED  # recorded (here or on another machine)
    folder = layout.cell(cell)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock(folder).acquire()
    except RunLockedError as e:
        log.info("cell %s: %s is running it; left to that process", cell.name, e.holder)
        return BUSY
    try:
        if records.recorded_cell(grid, cell, digest) is not None:
            return FINISHED  # the process that held the lock has just finished it
        return run_locked_cell(grid, cell, exp_dir, config, digest, train_progress)
    finally:
        lock.release()


def queue_left(grid: Grid, rest: list[Cell], layout: ExperimentDir) -> int:
    """How many of the cells ``rest`` this process will run: those neither finished (recorded, or done in the
    experiment folder) nor held by another living process on this host (its lock file names it; the lock is
    not probed, which could make that process's own attempt to take it fail). A holder on another host cannot be
    told from a dead one and counts as this process's."""
    left = 0
    for cell in rest:
        if records.has_records(grid) and ExperimentDir(grid.results).cell_file(cell).is_file():
            continue
        if layout.cell_info(cell).get("status") == "done" and evaluations_complete(grid, cell, layout):
            continue
        if held_by_other(layout.cell(cell)):
            continue
        left += 1
    return left


def shard_cells(todo: list[Cell], k: int, n: int, grid: Grid | None = None) -> list[Cell]:
    """Shard ``k`` of ``n`` of the cells ``todo``: every n-th (seed, dataset, part[, pair]) group from the k-th,
    with all the arms of a group, so a baseline and its InfoSAM arm finish together in one process (their paired
    comparison is available as soon as possible) and every shard gets the same mix of cheap and costly arms.
    With a ``grid`` ordered by pairs (``order: pairs``) a group is one pair's arms, so the shards work through the
    pairs in the grid's order side by side."""
    pair_of = {}
    if grid is not None and grid.order == "pairs":
        pair_of = {arm: i for i, group in enumerate(pairs(grid)) for arm in group}

    def key(c: Cell) -> tuple:
        return (c.seed, pair_of.get(c.arm, 0), c.dataset, c.part)

    groups: dict[tuple, int] = {}
    for cell in todo:
        groups.setdefault(key(cell), len(groups))
    return [c for c in todo if groups[key(c)] % n == k - 1]
