"""Recording for ``infosam experiment``: a finished cell copied into the grid's results record as it finishes, and
``--record-only``: every finished cell and teacher evaluation of an experiment folder recorded, and the records
already there sealed (the record format is :mod:`infosam.experiment.records`)."""

from __future__ import annotations

import logging
from pathlib import Path

from . import records
from .grid import Cell, Grid, GridError
from .hashing import config_hash
from .layout import RUN_DIR, TRAIN_LOG_FILE, ExperimentDir, scored
from .plan import cell_config
from .scoring import evaluations_complete

log = logging.getLogger(__name__)


def record(grid: Grid, cell: Cell, folder: Path, info: dict, config) -> None:
    """Copy a finished cell into the grid's results record (when it has one)."""
    from ..runs import RunDir

    if not records.has_records(grid):
        return
    curve = RunDir(folder / RUN_DIR).evaluations()
    records.record_cell(grid, cell, folder, info, epochs=config.train.epochs, test_curve=curve)
    log.info("cell %s: recorded in %s", cell.name, records.cell_record_dir(grid, cell))


def record_finished(grid: Grid, todo: list[Cell], exp_dir: Path) -> None:
    """Record every finished cell of ``todo`` and every teacher evaluation in ``exp_dir`` (nothing runs), and seal
    the records already there: a legacy record (no checksum list) gets one; a record that fails verification
    (changed on purpose) is recorded again from ``exp_dir`` when it holds the finished cell, else its checksum list
    is written over its files as they are (once they parse strictly)."""
    layout = ExperimentDir(exp_dir)
    recorded = ExperimentDir(grid.results)
    for folder in layout.teacher_evaluations():
        dataset, split = folder.parent.name, folder.name
        if dataset in grid.datasets:
            records.record_teacher(grid, folder, dataset, split)
    for folder in recorded.teacher_evaluations():
        rel = folder.relative_to(recorded.teachers)
        if not scored(layout.teachers / rel):
            _seal_if_needed(folder, f"teacher {rel.as_posix()}")
    for cell in todo:
        _record_finished_cell(grid, cell, exp_dir)


def _record_finished_cell(grid: Grid, cell: Cell, exp_dir: Path) -> None:
    """:func:`record_finished` for one cell: record it when finished and not recorded yet; else seal its record
    (again from ``exp_dir`` when the record fails verification and the cell is finished here)."""
    layout = ExperimentDir(exp_dir)
    folder, info = layout.cell(cell), layout.cell_info(cell)
    config = cell_config(grid, cell, layout.splits, layout.run(cell))
    digest = config_hash(config, exp_dir)
    if info and info.get("config_hash") != digest:
        raise GridError(f"cell {cell.name} in {exp_dir} was run with another config than the grid gives now")
    finished = info.get("status") == "done" and evaluations_complete(grid, cell, layout)
    if records.recorded_cell(grid, cell, digest, verify=False) is None:
        if finished:
            record(grid, cell, folder, info, config)
        return
    target = records.cell_record_dir(grid, cell)
    try:
        sealed = records.verify_record(target)
    except records.RecordError as err:
        if not finished:
            _seal(target, f"cell {cell.name}", changed=str(err))
            return
        log.warning("cell %s: %s; recorded again from %s", cell.name, err, folder)
        record(grid, cell, folder, info, config)
        return
    added = False
    if finished and not (target / TRAIN_LOG_FILE).is_file():
        # recorded before records kept the training log: add it from this run (same config hash)
        added = records.copy_train_log(folder, target)
        if added:
            log.info("cell %s: training log added to its record", cell.name)
    if added or not sealed:
        _seal(target, f"cell {cell.name}")


def _seal(folder: Path, what: str, *, changed: str | None = None) -> None:
    """Write a record folder's checksum list over its files as they are (they must read strictly)."""
    records.seal(folder)
    if changed is None:
        log.info("%s: checksum list written", what)
    else:
        log.warning("%s: %s; its checksum list is rewritten over its files as they are now", what, changed)


def _seal_if_needed(folder: Path, what: str) -> None:
    """Seal a legacy record, and re-seal one whose files changed on purpose; leave a verified one alone."""
    try:
        if records.verify_record(folder):
            return
    except records.RecordError as err:
        _seal(folder, what, changed=str(err))
        return
    _seal(folder, what)
