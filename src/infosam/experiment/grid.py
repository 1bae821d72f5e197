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
    report:
      metrics: [Dice, IoU]           # the metrics the report's tables lead with
      compare: [[adapter-infosam, adapter-vid]]   # more paired differences than each arm minus its baseline

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

This module reads and checks the file; :mod:`~infosam.experiment.splits` cuts the splits,
:mod:`~infosam.experiment.plan` orders the cells and resolves their configs, :mod:`~infosam.experiment.hashing`
names a config by its hash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# Re-exported: committed grid files and docs name them here.
from .hashing import HASH_PINNED_DEFAULTS, config_hash  # noqa: F401


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
    compare: list[tuple[str, str]] = field(default_factory=list)
    """``report.compare``: (arm, other arm) pairs the report also differences, after each arm minus its baseline."""
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
    data = _read_mapping(path)
    here = Path(root).expanduser().resolve() if root is not None else path.parent
    seeds = _read_seeds(path, data)
    datasets = _read_datasets(path, data, here, seeds, lenient_vars)
    arms = _read_arms(path, data, here, seeds, datasets)
    metrics, compare = _read_report(path, data, arms)
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
        compare=compare,
        order=order,
        results=None if results is None else here / results,
    )


def _read_mapping(path: Path) -> dict:
    """The grid file as a mapping with known top-level keys only."""
    if not path.is_file():
        raise FileNotFoundError(f"grid file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise GridError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise GridError(f"{path}: a grid must be a YAML mapping")
    _unknown(str(path), data, _GRID_KEYS)
    return data


def _read_seeds(path: Path, data: dict) -> list[int]:
    seeds = data.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise GridError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise GridError(f"{path}: seeds repeat: {seeds}")
    return seeds


def _read_datasets(
    path: Path, data: dict, here: Path, seeds: list[int], lenient_vars: bool
) -> dict[str, DatasetEntry]:
    """``datasets``: every entry checked, at least one target, retention sets naming other datasets."""
    datasets = {}
    for name, entry in (data.get("datasets") or {}).items():
        d = _read_dataset(f"{path}: datasets.{name}", str(name), entry, here, seeds, lenient_vars)
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
    return datasets


def _read_dataset(
    where: str, name: str, entry, here: Path, seeds: list[int], lenient_vars: bool
) -> DatasetEntry:
    """One entry of ``datasets`` (``where`` names it in errors)."""
    _name_ok(where, name)
    if not isinstance(entry, dict) or "path" not in entry:
        raise GridError(f"{where} must be a mapping with at least a path")
    _unknown(where, entry, _DATASET_KEYS)
    raw = os.path.expandvars(str(entry["path"]))
    if "$" in raw and not lenient_vars:
        raise GridError(f"{where}.path: {entry['path']!r} names an environment variable that is not set")
    d = DatasetEntry(
        name=name,
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
    _check_split_settings(where, entry, d)
    return d


def _check_split_settings(where: str, entry: dict, d: DatasetEntry) -> None:
    """One way to split a target (folds, a test part, or fixed lists), with sizes that make sense."""
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
            raise GridError(f"{where}.{key}: a count >= 1 or a fraction in (0, 1) is expected, got {value!r}")


def _read_arms(
    path: Path, data: dict, here: Path, seeds: list[int], datasets: dict[str, DatasetEntry]
) -> dict[str, Arm]:
    """``arms``: at least one, each checked, every baseline an arm of the grid."""
    arms = {}
    for name, entry in (data.get("arms") or {}).items():
        arms[str(name)] = _read_arm(f"{path}: arms.{name}", str(name), entry, here, seeds, datasets)
    if not arms:
        raise GridError(f"{path}: arms must name at least one arm")
    for arm in arms.values():
        if arm.baseline is not None and arm.baseline not in arms:
            raise GridError(
                f"{path}: arms.{arm.name}.baseline names {arm.baseline!r}, not an arm of the grid"
            )
    return arms


def _read_arm(
    where: str, name: str, entry, here: Path, seeds: list[int], datasets: dict[str, DatasetEntry]
) -> Arm:
    """One entry of ``arms`` (``where`` names it in errors)."""
    _name_ok(where, name)
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
    return Arm(
        name=name,
        config=None if config is None else here / str(config),
        overrides=_strings(f"{where}.set", entry.get("set")),
        baseline=entry.get("baseline"),
        datasets=arm_datasets,
        seeds=None if arm_seeds is None else [int(x) for x in arm_seeds],
        phase=phase,
    )


_REPORT_KEYS = {"metrics", "compare"}


def _read_report(path: Path, data: dict, arms: dict[str, Arm]) -> tuple[list[str], list[tuple[str, str]]]:
    """The ``report`` section: ``metrics`` (the metrics its tables lead with) and ``compare`` (``[arm, other]``
    pairs of distinct arms, none repeating an arm's own baseline pairing, which the report differences already)."""
    from ..metrics import METRIC_NAMES

    report = data.get("report") or {}
    if not isinstance(report, dict) or set(report) - _REPORT_KEYS:
        unknown = sorted(set(report) - _REPORT_KEYS) if isinstance(report, dict) else report
        raise GridError(f"{path}: report: unknown {unknown!r}; valid keys: {sorted(_REPORT_KEYS)}")
    metrics = report.get("metrics", ["Dice", "IoU"])
    bad = [m for m in metrics if m not in METRIC_NAMES]
    if bad:
        raise GridError(f"{path}: report.metrics: unknown {bad}; valid: {list(METRIC_NAMES)}")
    value, where = report.get("compare", []), f"{path}: report.compare"
    if not isinstance(value, list):
        raise GridError(f"{where} must be a list of [arm, other arm] pairs, got {value!r}")
    pairs: list[tuple[str, str]] = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(a, str) for a in item)):
            raise GridError(f"{where}: each entry must be [arm, other arm], got {item!r}")
        arm, other = item
        unknown = [a for a in item if a not in arms]
        if unknown:
            raise GridError(f"{where}: {unknown} not arm(s) of the grid; arms: {list(arms)}")
        if arm == other:
            raise GridError(f"{where}: [{arm}, {other}] compares an arm with itself")
        if arms[arm].baseline == other or (arm, other) in pairs:
            raise GridError(
                f"{where}: [{arm}, {other}] is already compared ({arm}'s baseline or listed twice)"
            )
        pairs.append((arm, other))
    return metrics, pairs


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
