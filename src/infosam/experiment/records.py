"""The committable record of a grid's results: what every finished cell and the zero-shot teacher scored.

An experiment folder (:mod:`infosam.experiment.runner`) holds run folders with weights and logs: large, and local
to the machine that ran them. A grid with a ``results`` folder also keeps, beside its grid file, a small record
meant to be committed with it::

    <results>/grid.yaml                        the grid file as written (relative paths, $VARIABLES kept)
    <results>/experiment.json                  the grid file and its folder relative to the record; the datasets'
                                               folder names and SHA256SUMS digests; record format version
    <results>/splits/<dataset>/<split>.csv     every split list (image paths inside the dataset folder)
    <results>/teacher/<dataset>/<split>/       per_image.csv + summary.json of the zero-shot teacher
    <results>/cells/<dataset>/<part>/<arm>/seed-<s>/
        cell.json                              config hash, code of every training attempt, wall and CPU
                                               seconds, device, number of epochs
        curve-test.json                        the run's own test evaluations, per evaluated epoch (summaries)
        train-log.csv                          the run's metrics.csv: loss terms (L_seg, L_r, L_d), lr, speed
                                               per logged step
        eval/<set>/per_image.csv, summary.json the final weights on every scored set
        eval/<set>/epoch-NNN/summary.json      retention after each earlier evaluated epoch

It has the experiment folder's layout (without ``run/``), so ``infosam report`` reads either, and
``infosam experiment`` treats a cell with a record as finished on any machine (a record made with another config
hash is refused). Machine paths are never written: summaries name their dataset folder by its name only.
Never weights, never images.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from ..files import atomic_write, atomic_write_bytes, atomic_write_text, write_json
from .grid import Cell, Grid, GridError
from .layout import EVAL_DIR, RUN_DIR, TRAIN_LOG_FILE, ExperimentDir

RECORD_VERSION = 1
CURVE_FILE = "curve-test.json"
_SUMMARY_PATH_KEYS = ("data", "split", "source", "checkpoint", "weights", "run", "model_source", "split_file")


def has_records(grid: Grid) -> bool:
    return grid.results is not None


def cell_record_dir(grid: Grid, cell: Cell) -> Path:
    """Where ``cell``'s record lives (the grid's ``results`` folder has an experiment folder's layout)."""
    return ExperimentDir(grid.results).cell(cell)


def teacher_record_dir(grid: Grid, dataset: str, split: str) -> Path:
    """Where the zero-shot teacher's record on ``dataset``/``split`` lives."""
    return ExperimentDir(grid.results).teacher(dataset, split)


def recorded_cell(grid: Grid, cell: Cell, digest: str) -> dict | None:
    """The record of ``cell`` (its ``cell.json``) when one exists; GridError when it was made with another config
    hash (the grid changed under an existing cell name)."""
    if not has_records(grid):
        return None
    path = ExperimentDir(grid.results).cell_file(cell)
    if not path.is_file():
        return None
    info = json.loads(path.read_text(encoding="utf-8"))
    if info.get("config_hash") != digest:
        raise GridError(
            f"the record {path} of cell {cell.name} was made with another config (hash {info.get('config_hash')}, "
            f"now {digest}); the grid changed under an existing name: give the changed arm a new name"
        )
    return info


def recorded_teacher(grid: Grid, dataset: str, split: str) -> bool:
    return has_records(grid) and (teacher_record_dir(grid, dataset, split) / "summary.json").is_file()


def dataset_digest(folder: Path) -> str | None:
    """sha256 of the dataset folder's ``SHA256SUMS`` file (which lists every file's digest), or None."""
    sums = Path(folder) / "SHA256SUMS"
    return hashlib.sha256(sums.read_bytes()).hexdigest() if sums.is_file() else None


def write_common(grid: Grid, splits_dir: Path) -> None:
    """The grid file, ``experiment.json`` and the split lists; a split list that differs from a recorded one is
    refused (the data or the split settings changed: the record would mix two splits)."""
    layout = ExperimentDir(grid.results)
    root = layout.root
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(layout.grid_copy, grid.path.read_text(encoding="utf-8"))
    datasets = {
        name: {"folder": d.path.name, "sha256sums_sha256": dataset_digest(d.path)}
        for name, d in grid.datasets.items()
    }
    write_json(
        layout.experiment_file,
        {
            "grid": Path(os.path.relpath(grid.path, root)).as_posix(),
            "grid_root": Path(os.path.relpath(grid.path.parent, root)).as_posix(),
            "record_version": RECORD_VERSION,
            "datasets": datasets,
        },
    )
    for path in sorted(splits_dir.glob("*/*.csv")):
        target = layout.splits / path.parent.name / path.name
        text = path.read_text(encoding="utf-8")
        if target.is_file() and target.read_text(encoding="utf-8") != text:
            raise GridError(f"{target} differs from the experiment's {path}: the record would mix two splits")
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target, text)


def _clean_summary(summary: dict) -> dict:
    """A summary without machine paths: path-valued entries keep their last component."""
    out = dict(summary)
    for key in _SUMMARY_PATH_KEYS:
        value = out.get(key)
        if isinstance(value, str) and (value.startswith("/") or value.startswith("~") or ":\\" in value):
            out[key] = Path(value).name
    return out


def _copy_evaluation(src: Path, dst: Path, *, per_image: bool = True) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    if per_image:
        atomic_write(dst / "per_image.csv", lambda tmp, f=src / "per_image.csv": shutil.copyfile(f, tmp))
    summary = json.loads((src / "summary.json").read_text(encoding="utf-8"))
    write_json(dst / "summary.json", _clean_summary(summary))


def record_teacher(grid: Grid, exp_teacher_dir: Path, dataset: str, split: str) -> None:
    """Copy the zero-shot teacher's scores on ``dataset``/``split`` into the record."""
    if has_records(grid) and (exp_teacher_dir / "summary.json").is_file():
        _copy_evaluation(exp_teacher_dir, teacher_record_dir(grid, dataset, split))


def record_cell(grid: Grid, cell: Cell, folder: Path, info: dict, *, epochs: int, test_curve: dict) -> Path:
    """Copy a finished cell's scores (its experiment ``folder``: ``eval/``) into the record, ``cell.json`` last
    (so a record with a ``cell.json`` is whole). ``test_curve``: {epoch: summary} of the run's own test
    evaluations."""
    target = cell_record_dir(grid, cell)
    for summary in sorted((folder / EVAL_DIR).glob("**/summary.json")):
        rel = summary.parent.relative_to(folder)
        _copy_evaluation(summary.parent, target / rel, per_image=rel.parent.name == EVAL_DIR)
    write_json(target / CURVE_FILE, {str(k): _clean_summary(v) for k, v in sorted(test_curve.items())})
    copy_train_log(folder, target)
    kept = (
        "cell",
        "config_hash",
        "code",
        "timing",
        "train_seconds",
        "eval_seconds",
        "train_cpu_seconds",
        "eval_cpu_seconds",
    )
    record = {k: info[k] for k in kept if k in info}
    record.update(device=info.get("device"), status="done", epochs=epochs, record_version=RECORD_VERSION)
    write_json(ExperimentDir(grid.results).cell_file(cell), record)
    return target


def copy_train_log(folder: Path, target: Path) -> bool:
    """Copy the training log of the cell in the experiment ``folder`` (its run's ``metrics.csv``: numbers only) to
    ``target/train-log.csv``; False when the run has none."""
    from ..runs import METRICS_FILE

    source = folder / RUN_DIR / METRICS_FILE
    if not source.is_file():
        return False
    atomic_write_bytes(target / TRAIN_LOG_FILE, source.read_bytes())
    return True


def read_test_curve(folder: Path) -> dict[int, dict] | None:
    """The recorded per-epoch test summaries of a cell record (None in an experiment folder: read the run)."""
    path = folder / CURVE_FILE
    if not path.is_file():
        return None
    return {int(k): v for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
