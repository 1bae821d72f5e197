"""The grid file of ``infosam experiment``: which runs make an experiment, and the splits they train and test on.

A grid is YAML (paths relative to the grid file)::

    base: ../../configs/base.yaml    # optional: the config every cell starts from
    set: [train.epochs=10]           # optional: overrides for every cell
    seeds: [0, 1, 2]                 # train.seed of the cells
    order: seeds                     # optional: seeds (default) or pairs (module doc)
    results: results/my-grid         # optional: the committable record of every finished cell (module doc)
    datasets:
      leaf:
        path: /data/leaf-disease     # a dataset folder (images/ + masks/ or Conv-LoRA CSVs); $VARS expand
        source_split: null           # optional: the split listing its images (CSV layouts: e.g. train.csv)
        folds: 5                     # k-fold: every image is tested once per seed ...
        split_seed: 0                # ... the shuffle of the images before splitting (fixed)
        retention: [kvasir]          # after training, also score the held-out images of these datasets
        seeds: [0]                   # optional: this dataset's cells use only these of the grid's seeds
        set: [eval.metrics=[IoU, Dice]]   # optional: overrides for this dataset's cells and evaluations
      kvasir:
        path: /data/kvasir-seg
        test: 200                    # a fixed held-out test part (count, or a fraction < 1) ...
        train: [50, 200]             # ... and training sets drawn from the rest (nested: 50 is a prefix of 200);
        retention: [leaf]            #     without train: one training set, every image not in the test part
      fixed:
        path: /data/fixed
        split_files: {train: lists/train.csv, test: lists/test.csv}   # a fixed split (image lists as for
                                     # `infosam data check --split`, relative to the grid file): one part, fixed
      extra:
        path: /data/other
        target: false                # evaluation only: a retention set, never trained on
    arms:
      adapter: {config: arms/adapter.yaml, set: [infosam.enabled=false]}
      adapter-infosam: {config: arms/adapter.yaml, baseline: adapter}   # paired with its plain baseline
      adapter-vid: {config: arms/vid.yaml, baseline: adapter, datasets: [leaf], seeds: [0], phase: 2}

One cell per (target dataset, split part, arm, seed): the part is a fold (``fold1of5``), a training size
(``train50``), every image not in the test part (``trainall``: a ``test`` without ``train``) or the fixed split of
``split_files`` (``fixed``). A dataset's held-out images (its retention set for others) are all its images for
k-fold and evaluation-only sets, its test part (or test list) otherwise. A training set smaller than one batch of
its cell's ``train.batch_size`` is refused before any cell runs. Every split is written as a CSV list (``image``, ``label``
relative to the dataset folder) into the experiment folder, so the exact images of every run stay on record.

Order of the cells (``order``): ``seeds`` runs seed by seed, then dataset, part and arm (a grid stopped part-way
holds whole seeds); ``pairs`` runs seed by seed, then *pair* by pair (a baseline arm with the arms that name it as
their baseline, in the order the arms are listed), then dataset, part and the pair's arms, so a grid stopped
anywhere holds whole paired comparisons, the first-listed pair's first. An arm may run on some target datasets or seeds only (``datasets``, ``seeds``),
and in a later ``phase`` (an integer, default 1): every cell of phase 1 runs before any cell of phase 2, so an arm
added to a pre-registered grid as an afterthought can never delay the cells registered first.

``results`` (a folder, relative to the grid file) is where :mod:`infosam.experiment.records` keeps a small record
of every finished cell and of the zero-shot teacher (config hash, code version, per-image scores, per-epoch
summaries, times; never weights or images): meant to be committed beside the grid file, so a grid's results
survive the machine that ran it. A cell with a record counts as finished anywhere, and ``infosam report`` reads
the records alone.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..config import (
    Config,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    deep_merge,
    read_yaml_tree,
    validate_config,
)


class GridError(ValueError):
    """An invalid grid file, or an experiment folder that does not match its grid; the message says which."""


@dataclass
class DatasetEntry:
    name: str
    path: Path
    source_split: str | None = None
    folds: int | None = None
    test: float | None = None
    train: list[float] = field(default_factory=list)
    """Training-set sizes drawn from the images not in ``test``; empty: one set of every such image (``trainall``)."""
    split_files: dict[str, Path] | None = None
    """``{"train": file, "test": file}``: a fixed split given as image lists (part ``fixed``)."""
    split_seed: int = 0
    retention: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    target: bool = True
    seeds: list[int] | None = None
    """The grid seeds this dataset's cells use (None: all of them)."""


@dataclass
class Arm:
    name: str
    config: Path | None = None
    overrides: list[str] = field(default_factory=list)
    baseline: str | None = None
    datasets: list[str] | None = None
    """The target datasets this arm trains on (None: every target)."""
    seeds: list[int] | None = None
    """The grid seeds this arm uses (None: all of them)."""
    phase: int = 1
    """Cells of a lower phase run first (module doc)."""

    def runs_on(self, dataset: str, seed: int) -> bool:
        """Whether this arm has a cell for ``dataset`` at ``seed``."""
        return (self.datasets is None or dataset in self.datasets) and (
            self.seeds is None or seed in self.seeds
        )


@dataclass
class Grid:
    path: Path
    base: Path | None
    overrides: list[str]
    seeds: list[int]
    datasets: dict[str, DatasetEntry]
    arms: dict[str, Arm]
    metrics: list[str]
    """Metrics the report's tables lead with."""
    order: str = "seeds"
    """``seeds`` or ``pairs`` (module doc)."""
    results: Path | None = None
    """The records folder (module doc), or None."""


@dataclass(frozen=True)
class Cell:
    """One training run of the grid."""

    dataset: str
    part: str
    """``fold<k>of<n>``, ``train<n>``, ``trainall`` (every image not in the test part) or ``fixed`` (the
    dataset's ``split_files``)."""
    arm: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.part}/{self.arm}/seed-{self.seed}"

    @property
    def regime(self) -> str:
        """The setting the report pools over: every fold of a k-fold split is one regime (``5fold``)."""
        return self.part.split("of")[1] + "fold" if self.part.startswith("fold") else self.part


_GRID_KEYS = {"base", "set", "seeds", "datasets", "arms", "report", "order", "results"}
ORDERS = ("seeds", "pairs")
_DATASET_KEYS = {
    "path",
    "source_split",
    "folds",
    "test",
    "train",
    "split_seed",
    "retention",
    "set",
    "target",
    "seeds",
    "split_files",
}
ALL_REST = "trainall"
"""The part of a dataset with a ``test`` part and no ``train`` sizes: it trains on every image not in the test."""
FIXED = "fixed"
"""The part of a dataset whose split is given as image lists (``split_files``)."""
_ARM_KEYS = {"config", "set", "baseline", "datasets", "seeds", "phase"}


def _strings(where: str, value) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GridError(f"{where} must be a list of strings (section.option=value), got {value!r}")
    return list(value)


def _unknown(where: str, data: dict, allowed: set[str]) -> None:
    bad = sorted(set(data) - allowed)
    if bad:
        raise GridError(f"{where}: unknown key(s) {bad}; valid keys: {sorted(allowed)}")


def _name_ok(where: str, name: str) -> None:
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise GridError(
            f"{where}: name {name!r} must be non-empty, without '/', '\\', spaces or a leading dot"
        )


def load_grid(path: str | Path, *, root: str | Path | None = None, lenient_vars: bool = False) -> Grid:
    """Read and check a grid file (see the module doc); raises :class:`GridError` naming the bad key.

    Relative paths in it are taken relative to ``root`` (default: the grid file's folder; an experiment folder's
    copy of its grid is read with the original file's folder). ``lenient_vars``: a dataset path naming an unset
    environment variable is kept as written instead of refused (reading results where the data is not)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"grid file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise GridError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise GridError(f"{path}: a grid must be a YAML mapping")
    _unknown(str(path), data, _GRID_KEYS)
    here = Path(root).expanduser().resolve() if root is not None else path.parent
    seeds = data.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise GridError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise GridError(f"{path}: seeds repeat: {seeds}")
    datasets = {}
    for name, entry in (data.get("datasets") or {}).items():
        where = f"{path}: datasets.{name}"
        _name_ok(where, str(name))
        if not isinstance(entry, dict) or "path" not in entry:
            raise GridError(f"{where} must be a mapping with at least a path")
        _unknown(where, entry, _DATASET_KEYS)
        raw = os.path.expandvars(str(entry["path"]))
        if "$" in raw and not lenient_vars:
            raise GridError(f"{where}.path: {entry['path']!r} names an environment variable that is not set")
        d = DatasetEntry(
            name=str(name),
            path=here / Path(raw).expanduser(),
            source_split=entry.get("source_split"),
            folds=entry.get("folds"),
            test=entry.get("test"),
            train=list(entry.get("train") or []),
            split_seed=int(entry.get("split_seed", 0)),
            retention=_strings(f"{where}.retention", entry.get("retention")),
            overrides=_strings(f"{where}.set", entry.get("set")),
            target=bool(entry.get("target", True)),
            seeds=entry.get("seeds"),
            split_files=_split_files(where, entry.get("split_files"), here),
        )
        if d.seeds is not None:
            if not isinstance(d.seeds, list) or not d.seeds or any(s not in seeds for s in d.seeds):
                raise GridError(
                    f"{where}.seeds must be a non-empty list of the grid's seeds {seeds}, got {d.seeds!r}"
                )
            d.seeds = [int(s) for s in d.seeds]
        if d.split_files is not None:
            given = [k for k in ("folds", "test", "train", "source_split") if entry.get(k) is not None]
            if given or not d.target:
                raise GridError(
                    f"{where}: split_files is a target's whole split: without "
                    + (f"{', '.join(given)}" if given else "target: false")
                )
        elif d.target and (d.folds is None) == (d.test is None):
            raise GridError(
                f"{where}: give exactly one of folds (k-fold), test (a held-out part) and split_files (fixed lists)"
            )
        if d.folds is not None and (not isinstance(d.folds, int) or d.folds < 2):
            raise GridError(f"{where}.folds must be an integer >= 2, got {d.folds!r}")
        if d.folds is not None and d.train:
            raise GridError(f"{where}: train sizes go with a test part, not with folds")
        for key, value in [("test", d.test)] + [("train", v) for v in d.train]:
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
            ):
                raise GridError(
                    f"{where}.{key}: a count >= 1 or a fraction in (0, 1) is expected, got {value!r}"
                )
        datasets[d.name] = d
    if not any(d.target for d in datasets.values()):
        raise GridError(f"{path}: datasets must hold at least one target dataset (folds or test)")
    for d in datasets.values():
        for other in d.retention:
            if other not in datasets:
                raise GridError(
                    f"{path}: datasets.{d.name}.retention names {other!r}, not a dataset of the grid"
                )
            if other == d.name:
                raise GridError(f"{path}: datasets.{d.name}.retention names the dataset itself")
    arms = {}
    for name, entry in (data.get("arms") or {}).items():
        where = f"{path}: arms.{name}"
        _name_ok(where, str(name))
        entry = entry or {}
        if not isinstance(entry, dict):
            raise GridError(f"{where} must be a mapping (config, set, baseline)")
        _unknown(where, entry, _ARM_KEYS)
        config = entry.get("config")
        phase = entry.get("phase", 1)
        if isinstance(phase, bool) or not isinstance(phase, int) or phase < 1:
            raise GridError(f"{where}.phase must be an integer >= 1, got {phase!r}")
        arm_seeds = entry.get("seeds")
        if arm_seeds is not None and (
            not isinstance(arm_seeds, list) or not arm_seeds or any(s not in seeds for s in arm_seeds)
        ):
            raise GridError(
                f"{where}.seeds must be a non-empty list of the grid's seeds {seeds}, got {arm_seeds!r}"
            )
        arm_datasets = entry.get("datasets")
        if arm_datasets is not None:
            arm_datasets = _strings(f"{where}.datasets", arm_datasets)
            bad = [d for d in arm_datasets if d not in datasets or not datasets[d].target]
            if not arm_datasets or bad:
                raise GridError(
                    f"{where}.datasets must name target datasets of the grid "
                    f"({[d for d in datasets if datasets[d].target]}), got {entry.get('datasets')!r}"
                )
        arms[str(name)] = Arm(
            name=str(name),
            config=None if config is None else here / str(config),
            overrides=_strings(f"{where}.set", entry.get("set")),
            baseline=entry.get("baseline"),
            datasets=arm_datasets,
            seeds=None if arm_seeds is None else [int(x) for x in arm_seeds],
            phase=phase,
        )
    if not arms:
        raise GridError(f"{path}: arms must name at least one arm")
    for arm in arms.values():
        if arm.baseline is not None and arm.baseline not in arms:
            raise GridError(
                f"{path}: arms.{arm.name}.baseline names {arm.baseline!r}, not an arm of the grid"
            )
    report = data.get("report") or {}
    metrics = report.get("metrics", ["Dice", "IoU"])
    from ..metrics import METRIC_NAMES

    bad = [m for m in metrics if m not in METRIC_NAMES]
    if bad:
        raise GridError(f"{path}: report.metrics: unknown {bad}; valid: {list(METRIC_NAMES)}")
    base = data.get("base")
    order = data.get("order", "seeds")
    if order not in ORDERS:
        raise GridError(f"{path}: order must be one of {list(ORDERS)}, got {order!r}")
    results = data.get("results")
    if results is not None and not isinstance(results, str):
        raise GridError(f"{path}: results must be a folder path (relative to the grid file), got {results!r}")
    return Grid(
        path=path,
        base=None if base is None else here / str(base),
        overrides=_strings(f"{path}: set", data.get("set")),
        seeds=list(seeds),
        datasets=datasets,
        arms=arms,
        metrics=list(metrics),
        order=order,
        results=None if results is None else here / results,
    )


def _split_files(where: str, value, here: Path) -> dict[str, Path] | None:
    """``split_files`` checked: a mapping of exactly ``train`` and ``test`` to file paths (relative to ``here``)."""
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or set(value) != {"train", "test"}
        or not all(isinstance(v, str) and v for v in value.values())
    ):
        raise GridError(
            f"{where}.split_files must map train and test to image-list files "
            f"({{train: lists/train.csv, test: lists/test.csv}}), got {value!r}"
        )
    return {key: here / Path(os.path.expandvars(v)).expanduser() for key, v in value.items()}


def parts(d: DatasetEntry) -> list[str]:
    """The split parts a target dataset trains on (module doc)."""
    if d.split_files is not None:
        return [FIXED]
    if d.folds is not None:
        return [f"fold{k}of{d.folds}" for k in range(1, d.folds + 1)]
    return [f"train{_label(v)}" for v in d.train] or [ALL_REST]


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


def _label(value: float) -> str:
    return str(int(value)) if value >= 1 else f"{value:g}".replace(".", "p")


# --------------------------------------------------------------------------------------------- splits


def _count(value: float, n: int, where: str) -> int:
    k = int(value) if value >= 1 else int(round(value * n))
    if not 1 <= k <= n:
        raise GridError(f"{where}: {value} selects {k} of {n} images; 1..{n} are possible")
    return k


def list_images(d: DatasetEntry) -> list[tuple[str, str]]:
    """``(image, label)`` paths relative to the dataset folder, sorted by image path."""
    from ..data.formats import open_dataset

    dataset = open_dataset(d.path, split=d.source_split, image_size=16)
    pairs = []
    for p in dataset.pairs:
        if p.image_path is None or p.mask_path is None:
            raise GridError(f"{d.path}: {p.id} lacks its image or mask; run `infosam data check {d.path}`")
        pairs.append(
            (p.image_path.relative_to(d.path).as_posix(), p.mask_path.relative_to(d.path).as_posix())
        )
    return sorted(pairs)


def make_splits(d: DatasetEntry) -> dict[str, list[tuple[str, str]]]:
    """The split lists of a dataset: ``heldout`` and, for a target, ``<part>-train`` / ``<part>-test`` per part.

    The images are shuffled once by ``split_seed``; folds are contiguous slices of that order, the test part is its
    head, and training sets are prefixes of the rest (so a smaller one is a subset of a larger one).
    """
    if d.split_files is not None:
        return _fixed_splits(d)
    pairs = list_images(d)
    n = len(pairs)
    order = [pairs[i] for i in np.random.default_rng(d.split_seed).permutation(n)]
    splits: dict[str, list[tuple[str, str]]] = {}
    where = f"datasets.{d.name}"
    if d.folds is not None:
        if n < d.folds:
            raise GridError(
                f"{where}.folds: {d.folds} folds need at least {d.folds} images, {d.path} has {n}"
            )
        bounds = np.linspace(0, n, d.folds + 1).round().astype(int)
        for k in range(d.folds):
            test = order[bounds[k] : bounds[k + 1]]
            train = order[: bounds[k]] + order[bounds[k + 1] :]
            splits[f"fold{k + 1}of{d.folds}-train"] = sorted(train)
            splits[f"fold{k + 1}of{d.folds}-test"] = sorted(test)
        splits["heldout"] = sorted(pairs)
    elif d.test is not None:
        k = _count(d.test, n, f"{where}.test")
        test, rest = order[:k], order[k:]
        splits["heldout"] = sorted(test)
        if d.target and not d.train:
            if not rest:
                raise GridError(
                    f"{where}.test: the test part takes all {n} images of {d.path}: none left to train on"
                )
            splits[f"{ALL_REST}-train"] = sorted(rest)
            splits[f"{ALL_REST}-test"] = sorted(test)
        elif d.target:
            for value in d.train:
                m = _count(value, len(rest), f"{where}.train")
                part = f"train{_label(value)}"
                splits[f"{part}-train"] = sorted(rest[:m])
                splits[f"{part}-test"] = sorted(test)
    else:
        splits["heldout"] = sorted(pairs)
    return splits


def _fixed_splits(d: DatasetEntry) -> dict[str, list[tuple[str, str]]]:
    """The split lists of a dataset with ``split_files``: each list checked as ``infosam data check --split``
    does (every pair readable, a mask that is a mask), inside the dataset folder, no image twice, train and test
    apart."""
    from ..data.check import check_dataset
    from ..data.formats import open_dataset

    lists = {}
    for key, path in d.split_files.items():
        where = f"datasets.{d.name}.split_files.{key}"
        if not path.is_file():
            raise GridError(f"{where}: {path} not found")
        try:
            report = check_dataset(d.path, split=str(path))
            dataset_pairs = open_dataset(d.path, split=str(path), image_size=16).pairs
        except (OSError, ValueError) as err:
            raise GridError(f"{where}: {path}: {err}") from None
        errors = [p for p in report.problems if p.severity == "error"]
        if not dataset_pairs or errors:
            why = str(errors[0]) if errors else "no image/mask pairs"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise GridError(f"{where}: {path}: {why}{more}; see `infosam data check {d.path} --split {path}`")
        out = []
        for p in dataset_pairs:
            try:
                out.append(
                    (p.image_path.relative_to(d.path).as_posix(), p.mask_path.relative_to(d.path).as_posix())
                )
            except ValueError:
                raise GridError(
                    f"{where}: {path}: {p.image_path} lies outside the dataset folder {d.path}"
                ) from None
        twice = sorted(image for image, count in Counter(i for i, _ in out).items() if count > 1)
        if twice:
            raise GridError(f"{where}: {path} lists {twice[0]} more than once")
        lists[key] = sorted(out)
    both = sorted({i for i, _ in lists["train"]} & {i for i, _ in lists["test"]})
    if both:
        raise GridError(
            f"datasets.{d.name}.split_files: {len(both)} image(s) in both the train and the test list "
            f"({both[0]}, ...): a test image must never be trained on"
        )
    return {f"{FIXED}-train": lists["train"], f"{FIXED}-test": lists["test"], "heldout": lists["test"]}


def split_text(pairs: list[tuple[str, str]]) -> str:
    """A split list as CSV text (``image,label`` header, one pair per line)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image", "label"])
    writer.writerows(pairs)
    return out.getvalue()


# --------------------------------------------------------------------------------------------- cell configs


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
        train_split=str(splits_dir / d.name / f"{cell.part}-train.csv"),
        test_split=str(splits_dir / d.name / f"{cell.part}-test.csv"),
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


def config_hash(config: Config, experiment_dir: Path) -> str:
    """A hash of everything in ``config`` that shapes the run and differs from the defaults. Left out: the output
    path and the dataset folder (the experiment's split lists, checked separately, pin the images by their paths
    inside it); split files are named relative to the experiment folder. So an experiment moved, or continued on a
    machine whose data lives elsewhere, keeps its hashes; and an option added to the package later, whose default
    keeps the old behaviour, does not change the hash of cells that never set it, and a default that changes is
    pinned in :data:`HASH_PINNED_DEFAULTS` (records stay valid across versions; each record also names the code
    that made it)."""
    data = _non_default(config_to_dict(config), hash_defaults())
    data.pop("output", None)
    data.setdefault("data", {}).pop("path", None)
    for key in ("train_split", "test_split"):
        if key not in data["data"]:
            continue
        path = Path(data["data"][key])
        if path.is_relative_to(experiment_dir):
            data["data"][key] = path.relative_to(experiment_dir).as_posix()
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


HASH_PINNED_DEFAULTS = {
    "train": {"box_noise": "per-coordinate"},
    "eval": {"box_noise": "per-coordinate"},
}
"""Options whose default changed after cells were recorded, with the default they had then. :func:`config_hash`
compares a config with :func:`hash_defaults`, so a default that moves changes no recorded cell's hash: a cell that
relied on the old default still hashes without the option, and one that named the new value still hashes with it.
(The release box rule became the default of ``train.box_noise`` and ``eval.box_noise``; the decoder-only grid used
the old one by default, the encoder and MobileSAM grids name ``release``.)"""


def hash_defaults() -> dict:
    """The defaults :func:`config_hash` leaves out: today's, with :data:`HASH_PINNED_DEFAULTS` in force."""
    defaults = config_to_dict(Config())
    for section, values in HASH_PINNED_DEFAULTS.items():
        defaults[section].update(values)
    return defaults


def _non_default(values: dict, defaults: dict) -> dict:
    """The entries of ``values`` that differ from ``defaults`` (recursively for sections)."""
    out = {}
    for key, value in values.items():
        default = defaults.get(key, object())
        if isinstance(value, dict) and isinstance(default, dict):
            inner = _non_default(value, default)
            if inner:
                out[key] = inner
        elif value != default:
            out[key] = value
    return out
