"""Gathering an experiment's numbers: the finished cells' per-image scores and curves, and the teacher's.

Reads an experiment folder or a results record (the same layout, :mod:`infosam.experiment.layout`); computes
nothing but what the files hold. The tables are :mod:`infosam.experiment.tables`, the page
:mod:`infosam.experiment.report`.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .grid import Cell, Grid
from .layout import EPOCH_PREFIX, SUMMARY_FILE, ExperimentDir, epoch_of, scored
from .plan import RETENTION, TEST, cells, scored_sets
from .records import read_scores, read_test_curve
from .splits import HELDOUT

TEACHER = "teacher (zero-shot)"
"""The arm name the zero-shot teacher's rows carry in every table."""


@dataclass
class CellResult:
    cell: Cell
    sets: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """Per scored set (``test``, ``retention-<dataset>``): ``{image id: {metric: value}}``."""
    curves: dict[str, dict[int, tuple[dict, int]]] = field(default_factory=dict)
    """Per set: ``{epoch: (summary, n_images)}``."""
    info: dict = field(default_factory=dict)
    """The cell's ``cell.json`` (status, ``train_seconds``, ``eval_seconds``, ``device``)."""
    train_log: list[dict] = field(default_factory=list)
    """The run's training log, one dict per logged step (``epoch`` and every loss term that was logged; a term
    the run did not have is absent); empty when the record has none."""


def collect(exp_dir: Path, grid: Grid) -> tuple[list[CellResult], int]:
    """The finished cells' per-image scores and curves, and the number of cells in the grid."""
    from ..runs import RunDir

    layout = ExperimentDir(exp_dir)
    todo = cells(grid)
    results = []
    for cell in todo:
        folder, info = layout.cell(cell), layout.cell_info(cell)
        if info.get("status") != "done":
            continue
        result = CellResult(cell, info=info, train_log=read_train_log(layout.train_log(cell)))
        names = [name for name, _, _ in scored_sets(grid, cell)]
        test_curve = read_test_curve(folder)  # a results record; an experiment folder has the run itself
        if test_curve is None:
            run = RunDir(layout.run(cell))
            test_curve, epochs = run.evaluations(), run.read_config().train.epochs
        else:
            epochs = int(info["epochs"])
        for name in names:
            evaluation = layout.evaluation(cell, name)
            if not scored(evaluation):
                continue
            result.sets[name] = read_scores(evaluation)
            curve: dict[int, tuple[dict, int]] = {}
            if name == TEST:
                for epoch, summary in test_curve.items():
                    curve[epoch] = (summary, int(summary.get("n_images", 0)))
            else:
                for path in sorted(evaluation.glob(f"{EPOCH_PREFIX}*/{SUMMARY_FILE}")):
                    summary = json.loads(path.read_text(encoding="utf-8"))
                    curve[epoch_of(path.parent)] = (summary, int(summary["n_images"]))
                final = json.loads((evaluation / SUMMARY_FILE).read_text(encoding="utf-8"))
                curve[epochs] = (final, int(final["n_images"]))
            result.curves[name] = curve
        results.append(result)
    return results, len(todo)


def read_train_log(path: Path | None) -> list[dict]:
    """A run's ``metrics.csv`` (or a record's ``train-log.csv``) as numbers: one dict per logged step, empty
    cells left out; [] for None."""
    if path is None:
        return []
    with open(path, encoding="utf-8", newline="") as f:
        return [
            {k: float(v) for k, v in row.items() if k and v not in (None, "")} for row in csv.DictReader(f)
        ]


def teacher_rows(exp_dir: Path, dataset: str, split: str) -> dict[str, dict[str, float]] | None:
    """The zero-shot teacher's per-image scores on ``dataset``/``split`` (``{id: {metric: value}}``), or None."""
    path = ExperimentDir(exp_dir).teacher(dataset, split)
    return read_scores(path) if scored(path) else None


def set_source(cell: Cell, name: str) -> tuple[str, str]:
    """(dataset, split) a scored set of a cell comes from."""
    if name == TEST:
        return cell.dataset, f"{cell.part}-test"
    return name.removeprefix(RETENTION), HELDOUT


def complete_seeds(results: list[CellResult], grid: Grid) -> list[CellResult]:
    """The results whose (dataset, regime, seed) is whole: every fold or part of the regime finished for every arm,
    so each arm's mean over that seed covers the same images. Arms of a later ``phase`` (which run
    only after every cell of the earlier phases) join when their own cells have finished: the earlier phases' arms
    of a seed count as whole without them, so a grid paused before its last phase still reports its main arms."""
    phase = {name: arm.phase for name, arm in grid.arms.items()}
    wanted: dict[tuple, set] = defaultdict(set)
    for cell in cells(grid):
        wanted[(cell.dataset, cell.regime, cell.seed)].add((cell.part, cell.arm))
    have: dict[tuple, set] = defaultdict(set)
    for r in results:
        have[(r.cell.dataset, r.cell.regime, r.cell.seed)].add((r.cell.part, r.cell.arm))

    def whole(key: tuple, arm: str) -> bool:
        upto = {(part, a) for part, a in wanted[key] if phase[a] <= phase[arm]}
        return have[key] >= upto

    return [r for r in results if whole((r.cell.dataset, r.cell.regime, r.cell.seed), r.cell.arm)]


def per_image_rows(exp_dir: Path, results: list[CellResult], metrics: list[str]) -> list[dict]:
    """One row per (finished cell, scored set, image): the final weights' score in every metric; then the zero-shot
    teacher's rows (``arm`` = ``teacher (zero-shot)``, ``seed`` empty) for every (dataset, part, set) those cells
    were scored on, so teacher and student rows join on (dataset, part, set, id)."""
    rows = []
    sources: dict[tuple[str, str, str], tuple[str, str]] = {}
    for r in results:
        for name, images in r.sets.items():
            where = {"dataset": r.cell.dataset, "part": r.cell.part, "arm": r.cell.arm, "seed": r.cell.seed}
            for image_id, values in images.items():
                rows.append({**where, "set": name, "id": image_id, **{m: values[m] for m in metrics}})
            sources.setdefault((r.cell.dataset, r.cell.part, name), set_source(r.cell, name))
    teacher: dict[tuple[str, str], dict[str, dict[str, float]] | None] = {}
    for (dataset, part, name), source in sources.items():
        if source not in teacher:
            teacher[source] = teacher_rows(exp_dir, *source)
        where = {"dataset": dataset, "part": part, "arm": TEACHER, "seed": ""}
        for image_id, values in (teacher[source] or {}).items():
            rows.append({**where, "set": name, "id": image_id, **{m: values[m] for m in metrics}})
    return rows
