"""Scoring for ``infosam experiment``: a cell's final weights (and its earlier epochs' on retention sets) on every
set it is scored on, and the zero-shot teacher on every split a cell is scored on.

A cell is scored on its test split (``test``) and on the held-out images of each of its dataset's retention
datasets (``retention-<dataset>``), with the dataset's ``eval`` settings (:func:`~infosam.experiment.plan.eval_config`:
every arm and the teacher scored alike). A set scored before (its summary written) is never scored again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import torch

from ..lock import RunLock, RunLockedError
from . import records
from .grid import Cell, Grid
from .layout import ExperimentDir, epoch_folder, scored, split_name
from .plan import TEST, cell_config, eval_config, scored_sets

log = logging.getLogger(__name__)


def evaluations_complete(grid: Grid, cell: Cell, layout: ExperimentDir) -> bool:
    """Whether every set of ``cell`` has its final evaluation in ``layout``."""
    return all(scored(layout.evaluation(cell, name)) for name, _, _ in scored_sets(grid, cell))


def device_for(cpu: bool) -> str:
    """The device a cell trains and is scored on: CUDA when there is one, unless its config says ``train.cpu``."""
    return "cuda" if torch.cuda.is_available() and not cpu else "cpu"


def cached_scoring(config) -> bool:
    """Score through the caches the cells train with (the teacher cache, the student's frozen prefix) when the
    grid caches and computes in float32: scoring runs in float32, so its entries are those training stores."""
    return config.cache.enabled and config.train.precision == "no"


def score(
    grid: Grid,
    source,
    dataset: str,
    split: str,
    out: Path,
    exp_dir: Path,
    *,
    weights: Path | None = None,
    device: str = "cpu",
    cache=None,
) -> None:
    """Score ``source`` (a run folder, or the config whose base model is the teacher) on ``split`` of ``dataset``
    with the dataset's eval settings, into ``out``; ``cache`` as :func:`infosam.evaluate.evaluate_run` (a cell
    whose config caches is scored through its cached frozen encoder prefix, as its training evaluations were)."""
    from ..evaluate import evaluate_run, write_evaluation
    from ..runtime import release_memory

    release_memory()  # what training (or the previous scoring) freed goes back to the system first
    rows, summary = evaluate_run(
        source,
        grid.datasets[dataset].path,
        str(ExperimentDir(exp_dir).split_file(dataset, split)),
        settings=eval_config(grid, dataset),
        weights=weights,
        device=device,
        cache=cache,
    )
    summary.update(dataset=dataset, split_file=split_name(dataset, split))
    write_evaluation(out, rows, summary, overwrite=True)


def teacher_evaluations(grid: Grid, todo: list[Cell], exp_dir: Path) -> None:
    """The zero-shot teacher on every split a student is scored on, once per (dataset, split)."""
    if not todo:
        return
    # The teacher is the base model of the first seed's config: its train.seed draws what no checkpoint covers
    # (random test models), as that run's own teacher was drawn.
    layout = ExperimentDir(exp_dir)
    probe_dir = exp_dir / "probe"  # the output of a config that is never run
    teacher = cell_config(grid, replace(todo[0], seed=grid.seeds[0]), layout.splits, probe_dir)
    wanted: dict[tuple[str, str], None] = {}
    for cell in todo:
        for _, dataset, split in scored_sets(grid, cell):
            wanted[(dataset, split)] = None
    probe = cell_config(grid, todo[0], layout.splits, probe_dir)
    cpu = probe.train.cpu
    cache = probe.cache if cached_scoring(probe) else None
    for dataset, split in wanted:
        out = layout.teacher(dataset, split)
        if records.recorded_teacher(grid, dataset, split):
            continue
        if scored(out):
            records.record_teacher(grid, out, dataset, split)
            continue
        out.mkdir(parents=True, exist_ok=True)
        try:
            # Shards share the teacher's splits: the first to take a split scores it, the others go on to their
            # cells (the teacher's scores are needed by the report, not by training).
            with RunLock(out):
                if not scored(out):
                    log.info("zero-shot teacher on %s/%s", dataset, split)
                    score(grid, teacher, dataset, split, out, exp_dir, device=device_for(cpu), cache=cache)
        except RunLockedError:
            log.info("zero-shot teacher on %s/%s: another process is scoring it", dataset, split)
            continue
        records.record_teacher(grid, out, dataset, split)


def score_cell(grid: Grid, cell: Cell, exp_dir: Path, config, run) -> None:
    """Score the trained cell (its run folder ``run``) on every set not scored yet: the final weights on each
    set (the test score taken from training's own last evaluation when it is the same scoring), and on retention
    sets also each earlier evaluated epoch's weights (forgetting curves)."""
    layout = ExperimentDir(exp_dir)
    where = device_for(config.train.cpu)
    for name, dataset, split in scored_sets(grid, cell):
        jobs = [(layout.evaluation(cell, name), None)]
        if name != TEST:  # forgetting curves (target curves are in the run's own eval files)
            jobs += [
                (layout.evaluation(cell, name) / epoch_folder(epoch), weights)
                for epoch, weights in run.epoch_weights().items()
                if epoch != config.train.epochs
            ]
        for out, weights in jobs:
            if scored(out):
                continue  # scored before
            if name == TEST and weights is None:
                if reuse_final_evaluation(grid, cell, config, run, layout, split, out):
                    continue
            score(
                grid,
                layout.run(cell),
                dataset,
                split,
                out,
                exp_dir,
                weights=weights,
                device=where,
                cache=cached_scoring(config),
            )


def reuse_final_evaluation(
    grid: Grid, cell: Cell, config, run, layout: ExperimentDir, split: str, out: Path
) -> bool:
    """Write the run's own test evaluation after its last epoch as the cell's final test score, when it is the
    scoring :func:`score` would do (same final weights, split, eval settings and cache use, float32), so the test
    split is not scored twice (the run's config names that split: ``cell_config``); returns False (score it)
    otherwise."""
    from ..evaluate import write_evaluation
    from ..load import run_description

    path = run.evaluation_file(config.train.epochs)
    if not path.is_file() or not run.is_finished():
        return False
    if config.train.precision != "no" or config.eval != eval_config(grid, cell.dataset):
        return False  # training evaluated under autocast, or with settings other than the grid's scoring
    saved = json.loads(path.read_text(encoding="utf-8"))
    rows, summary = saved.get("rows"), dict(saved.get("summary") or {})
    if not rows or summary.get("n_images") != len(rows) or "cached_features" not in summary:
        return False  # written by a version that kept no rows or did not say whether it read cached features
    cached = summary.pop("cached_features")
    summary.update(
        run_description(run, run.student_weights(require_final=True), config),
        data=str(grid.datasets[cell.dataset].path),
        split=str(layout.split_file(cell.dataset, split)),
        cached_features=cached,
    )
    summary.update(dataset=cell.dataset, split_file=split_name(cell.dataset, split))
    write_evaluation(out, rows, summary, overwrite=True)
    log.info(
        "cell %s: final test score taken from the run's epoch-%d evaluation", cell.name, config.train.epochs
    )
    return True
