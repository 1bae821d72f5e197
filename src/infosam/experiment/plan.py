"""The plan of a grid: its cells in run order (arms grouped with their baselines, phases), and the resolved config
of each cell, of the teacher and of scoring a dataset. The grid file format is :mod:`infosam.experiment.grid`.
"""

from __future__ import annotations

import copy
from pathlib import Path

from ..config import Config, apply_overrides, config_from_dict, deep_merge, read_yaml_tree, validate_config
from .grid import Arm, Cell, DatasetEntry, Grid, GridError
from .layout import split_path
from .splits import HELDOUT, parts

TEST = "test"
"""The scored set of a cell's own test split."""
RETENTION = "retention-"
"""The scored sets of other datasets' held-out images: ``retention-<dataset>``."""


def scored_sets(grid: Grid, cell: Cell) -> list[tuple[str, str, str]]:
    """``(set, dataset, split)`` of every set ``cell`` is scored on: its test split, then its retention sets."""
    retention = grid.datasets[cell.dataset].retention
    return [(TEST, cell.dataset, f"{cell.part}-test")] + [(f"{RETENTION}{o}", o, HELDOUT) for o in retention]


def pairs(grid: Grid) -> list[list[str]]:
    """The arms grouped into pairs: each arm without a baseline, followed by the arms naming it as their baseline,
    in the order the arms are listed (an arm whose baseline is itself paired elsewhere joins that group)."""

    def root(name: str) -> str:
        seen = set()
        while grid.arms[name].baseline is not None and name not in seen:
            seen.add(name)
            name = grid.arms[name].baseline
        return name

    groups: dict[str, list[str]] = {}
    for name in grid.arms:
        groups.setdefault(root(name), []).append(name)
    return list(groups.values())


def cells(grid: Grid) -> list[Cell]:
    """Every cell of the grid: seed by seed, then (``order: pairs``) pair by pair, then dataset by dataset, part
    by part, arm by arm. The arms of one part finish together (paired comparisons become available early), and a
    grid stopped part-way holds whole seeds (``seeds``; with k folds, one finished seed has scored every image of
    the dataset once) or whole pairs of a seed (``pairs``). Arms of a later ``phase`` follow, in the same order;
    an arm has cells only on its ``datasets`` and ``seeds``."""
    out = []
    for phase in sorted({arm.phase for arm in grid.arms.values()}):
        in_phase = {name for name, arm in grid.arms.items() if arm.phase == phase}
        groups = pairs(grid) if grid.order == "pairs" else [list(grid.arms)]
        groups = [[a for a in g if a in in_phase] for g in groups]
        for seed in grid.seeds:
            for group in groups:
                for d in grid.datasets.values():
                    if not d.target or (d.seeds is not None and seed not in d.seeds):
                        continue
                    for part in parts(d):
                        for arm in group:
                            if grid.arms[arm].runs_on(d.name, seed):
                                out.append(Cell(d.name, part, arm, seed))
    return out


def _tree(grid: Grid, arm: Arm | None, d: DatasetEntry) -> dict:
    data: dict = read_yaml_tree(grid.base) if grid.base is not None else {}
    data = apply_overrides(data, grid.overrides)
    if arm is not None and arm.config is not None:
        data = deep_merge(data, read_yaml_tree(arm.config))
    data = apply_overrides(data, d.overrides)
    if arm is not None:
        data = apply_overrides(data, arm.overrides)
    return data


def cell_config(grid: Grid, cell: Cell, splits_dir: Path, run_dir: Path) -> Config:
    """The resolved config of ``cell``: base, grid overrides, arm file, dataset overrides, arm overrides, then the
    cell's own data, seed and output. Raises :class:`GridError` naming the cell when it is invalid."""
    d = grid.datasets[cell.dataset]
    data = _tree(grid, grid.arms[cell.arm], d)
    data = copy.deepcopy(data)
    data.setdefault("data", {})
    data["data"].update(
        path=str(d.path),
        train_split=str(split_path(splits_dir, d.name, f"{cell.part}-train")),
        test_split=str(split_path(splits_dir, d.name, f"{cell.part}-test")),
    )
    data.setdefault("train", {})["seed"] = cell.seed
    data["output"] = str(run_dir)
    try:
        config = config_from_dict(data)
        validate_config(config)
    except ValueError as err:
        raise GridError(f"cell {cell.name}: {err}") from err
    return config


def eval_config(grid: Grid, dataset: str):
    """The ``eval`` settings used to score any model on ``dataset`` (base, grid and dataset overrides: arms do not
    change how a dataset is scored, so every arm and the teacher are scored alike)."""
    data = _tree(grid, None, grid.datasets[dataset])
    data = {"eval": data.get("eval") or {}, "data": {"path": "-"}}
    return config_from_dict(data).eval


def model_config(grid: Grid, cell: Cell):
    """The model section of a cell (the teacher it is taught by)."""
    data = _tree(grid, grid.arms[cell.arm], grid.datasets[cell.dataset])
    return config_from_dict({"model": data.get("model") or {}}).model
