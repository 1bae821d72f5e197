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
        SHA256SUMS                             the sha256 of every other file of the cell's record (written last)
        curve-test.json                        the run's own test evaluations, per evaluated epoch (summaries)
        train-log.csv                          the run's metrics.csv: loss terms (L_seg, L_r, L_d), lr, speed
                                               per logged step
        eval/<set>/per_image.csv, summary.json the final weights on every scored set
        eval/<set>/epoch-NNN/summary.json      retention after each earlier evaluated epoch

It has the experiment folder's layout (without ``run/``), so ``infosam report`` reads either, and
``infosam experiment`` treats a cell with a record as finished on any machine (a record made with another config
hash is refused). Machine paths are never written: summaries name their dataset folder by its name only.
Never weights, never images.

**Records check themselves.** The records are the source of every published number, so each recorded cell (and
each teacher evaluation) carries ``SHA256SUMS`` (``sha256sum`` format: ``<hex>  <path>``, paths relative to the
folder), written after every other file. ``infosam report`` and ``infosam experiment`` verify it
(:func:`verify_record`) and refuse, in one line naming the file, a file changed, cut, missing or added since. Every
``per_image.csv`` read is also parsed strictly (:func:`read_scores`): a row per image of its summary's
``n_images``, every value a finite number, the summary's means those of the rows, a final newline (a file cut
short has none). A record written before checksums existed (``cell.json`` ``record_version`` 1, no
``SHA256SUMS``) is read as *legacy, unverified* (strict parsing still applies); ``infosam experiment GRID
--record-only`` adds its checksum list, and re-records a cell whose files changed on purpose (from the experiment
folder when it holds the finished cell, else over the record's files as they are, once they parse).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
from pathlib import Path

from ..files import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    is_temporary,
    remove,
    sha256_file,
    write_json,
)
from ..lock import LOCK_FILE
from .grid import Cell, Grid, GridError
from .layout import (
    CELL_FILE,
    CHECKSUM_FILE,
    CURVE_FILE,
    EPOCH_PREFIX,
    EVAL_DIR,
    PER_IMAGE_FILE,
    RUN_DIR,
    SPLIT_SUFFIX,
    SUMMARY_FILE,
    TRAIN_LOG_FILE,
    ExperimentDir,
    scored,
)

RECORD_VERSION = 2
"""2: every cell and teacher record carries :data:`CHECKSUM_FILE`; 1: written before checksums (legacy)."""
CHECKED_VERSION = 2
"""The first ``record_version`` whose cell records must carry a checksum list."""
_MEAN_TOLERANCE = 1e-6
"""How far a summary's mean may lie from the mean of its ``per_image.csv`` column (both written from the same
float64 numbers; a hand edit of one value of a 200-image set moves the mean by more than this)."""
_SUMMARY_PATH_KEYS = ("data", "split", "source", "checkpoint", "weights", "run", "model_source", "split_file")


class RecordError(GridError):
    """A damaged or edited results record (or a ``per_image.csv`` that does not parse); the message, one line,
    names the file and says how to restore or re-record it."""


_RERECORD = (
    "restore it (git checkout) or, if it changed on purpose, re-record: infosam experiment GRID --record-only"
)


def record_files(folder: Path) -> list[str]:
    """The files of a record folder a checksum list covers (paths relative to it, sorted): all but the list itself,
    a writer's leftover temporaries and lock files."""
    folder = Path(folder)
    out = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.is_dir() or rel.as_posix() == CHECKSUM_FILE or path.name == LOCK_FILE:
            continue
        if any(is_temporary(part) for part in rel.parts):
            continue
        out.append(rel.as_posix())
    return sorted(out)


def write_checksums(folder: Path) -> Path:
    """Write ``folder``'s :data:`CHECKSUM_FILE` over its files as they are now (atomically; call it last)."""
    folder = Path(folder)
    text = "".join(f"{sha256_file(folder / rel)}  {rel}\n" for rel in record_files(folder))
    return atomic_write_text(folder / CHECKSUM_FILE, text)


def _listed(path: Path) -> dict[str, str]:
    listed: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or not rel or rel in listed:
            raise RecordError(
                f"{path}: line {number} is not '<sha256>  <file>' (or repeats a file); {_RERECORD}"
            )
        listed[rel] = digest
    return listed


def verify_checksums(folder: Path, *, required: bool = False) -> bool:
    """Check ``folder`` against its :data:`CHECKSUM_FILE`: True when every file matches and none was added; False
    when the folder has no list (a legacy record) and ``required`` is not set. :class:`RecordError` naming the
    file otherwise."""
    folder = Path(folder)
    sums = folder / CHECKSUM_FILE
    if not sums.is_file():
        if required:
            raise RecordError(
                f"{folder / CELL_FILE}: a record of format {CHECKED_VERSION} or later without its {CHECKSUM_FILE} "
                f"(its writer was stopped, or the list was removed); {_RERECORD}"
            )
        return False
    listed = _listed(sums)
    for rel, digest in listed.items():
        path = folder / rel
        if not path.is_file():
            raise RecordError(f"{path}: listed in {sums} but missing; {_RERECORD}")
        if sha256_file(path) != digest:
            raise RecordError(
                f"{path}: changed since it was recorded (sha256 differs from {sums}); {_RERECORD}"
            )
    for rel in record_files(folder):
        if rel not in listed:
            raise RecordError(
                f"{folder / rel}: not in {sums} (added after the cell was recorded); {_RERECORD}"
            )
    return True


def read_scores(folder: Path) -> dict[str, dict[str, float]]:
    """A scored set's ``per_image.csv`` (``{image id: {metric: value}}``), read strictly against its
    ``summary.json``: a header starting with ``id``, a row per image of ``n_images`` with every field, unique ids,
    every value a finite number, the summary's metric means those of the rows, a final newline.
    :class:`RecordError` naming the file otherwise."""
    path = Path(folder) / PER_IMAGE_FILE
    summary_path = Path(folder) / SUMMARY_FILE
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RecordError(f"{summary_path}: not readable JSON ({err}); {_RERECORD}") from None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as err:
        raise RecordError(f"{path}: not readable ({err}); {_RERECORD}") from None
    n = summary.get("n_images") if isinstance(summary, dict) else None
    if not isinstance(n, int) or isinstance(n, bool):
        raise RecordError(f"{summary_path}: no image count (n_images); {_RERECORD}")

    def bad(why: str) -> RecordError:
        return RecordError(f"{path}: {why}; {_RERECORD}")

    if text and not text.endswith("\n"):
        raise bad("its last line has no newline (the file was cut short)")
    lines = list(csv.reader(io.StringIO(text)))
    if not lines:
        if n == 0:
            return {}
        raise bad(f"empty, its summary counts {n} images")
    header, body = lines[0], lines[1:]
    if not header or header[0] != "id" or len(set(header)) != len(header) or "" in header:
        raise bad(f"its header {header} does not start with 'id' or names a column twice")
    rows: dict[str, dict[str, float]] = {}
    for number, fields in enumerate(body, start=2):
        if len(fields) != len(header):
            raise bad(
                f"line {number} has {len(fields)} fields, the header {len(header)} (cut short or edited)"
            )
        if fields[0] in rows:
            raise bad(f"line {number} repeats image {fields[0]!r}")
        values = {}
        for key, value in zip(header[1:], fields[1:], strict=True):
            try:
                number_value = float(value)
            except ValueError:
                raise bad(f"line {number}: {key} = {value!r} is not a number") from None
            if not math.isfinite(number_value):
                raise bad(f"line {number}: {key} = {value!r} is not a finite number")
            values[key] = number_value
        rows[fields[0]] = values
    if len(rows) != n:
        raise bad(f"{len(rows)} rows, its summary {summary_path.name} counts {n} images (rows lost or added)")
    for key in header[1:]:
        mean = summary.get(key)
        if rows and isinstance(mean, (int, float)) and not isinstance(mean, bool):
            column = math.fsum(v[key] for v in rows.values()) / len(rows)
            if not math.isclose(column, mean, rel_tol=0.0, abs_tol=_MEAN_TOLERANCE):
                raise bad(f"the mean {key} of its rows is {column:.6g}, its summary says {mean:.6g} (edited)")
    return rows


def check_scores(folder: Path) -> None:
    """:func:`read_scores` on every scored set in ``folder`` (a cell, its ``eval/``, or a teacher evaluation);
    per-epoch scores (``epoch-NNN``) are left out: the report reads their summaries only."""
    for path in sorted(Path(folder).glob(f"**/{PER_IMAGE_FILE}")):
        if (path.parent / SUMMARY_FILE).is_file() and not path.parent.name.startswith(EPOCH_PREFIX):
            read_scores(path.parent)


def verify_record(folder: Path) -> bool:
    """Verify one cell or teacher record (or an experiment folder's cell: strict parsing only, it has no list):
    its checksum list (required for a cell record of format 2 or later) and every ``per_image.csv`` in it. True
    when checked against a list, False for a legacy record; :class:`RecordError` naming the file otherwise."""
    folder = Path(folder)
    info_path = folder / CELL_FILE
    required = False
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise RecordError(f"{info_path}: not readable JSON ({err}); {_RERECORD}") from None
        version = info.get("record_version") if isinstance(info, dict) else None
        required = isinstance(version, int) and version >= CHECKED_VERSION
    checked = verify_checksums(folder, required=required)
    check_scores(folder)
    return checked


def seal(folder: Path) -> Path:
    """Write ``folder``'s checksum list over its files as they are now, once its scores read strictly (a list over
    damaged scores would certify them)."""
    check_scores(folder)
    return write_checksums(folder)


def verify_results(exp_dir: Path, grid: Grid) -> list[Path]:
    """Verify every finished cell of ``grid`` and every teacher evaluation in ``exp_dir`` (a results record or an
    experiment folder) before anything is read for a report; returns the legacy records (no checksum list), read
    unverified. :class:`RecordError` naming the first damaged file."""
    from .plan import cells

    layout = ExperimentDir(exp_dir)
    legacy = []
    is_record = "record_version" in layout.info()
    for cell in cells(grid):
        if layout.cell_info(cell).get("status") != "done":
            continue
        if not verify_record(layout.cell(cell)) and is_record:
            legacy.append(layout.cell(cell))
    for folder in layout.teacher_evaluations():
        if not verify_record(folder) and is_record:
            legacy.append(folder)
    return legacy


def has_records(grid: Grid) -> bool:
    return grid.results is not None


def cell_record_dir(grid: Grid, cell: Cell) -> Path:
    """Where ``cell``'s record lives (the grid's ``results`` folder has an experiment folder's layout)."""
    return ExperimentDir(grid.results).cell(cell)


def teacher_record_dir(grid: Grid, dataset: str, split: str) -> Path:
    """Where the zero-shot teacher's record on ``dataset``/``split`` lives."""
    return ExperimentDir(grid.results).teacher(dataset, split)


def recorded_cell(grid: Grid, cell: Cell, digest: str, *, verify: bool = True) -> dict | None:
    """The record of ``cell`` (its ``cell.json``) when one exists; GridError when it was made with another config
    hash (the grid changed under an existing cell name), :class:`RecordError` when it is damaged or was edited
    (``verify``: :func:`verify_record`)."""
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
    if verify:
        verify_record(path.parent)
    return info


def recorded_teacher(grid: Grid, dataset: str, split: str) -> bool:
    """Whether the teacher's evaluation of ``dataset``/``split`` is recorded (verified: :class:`RecordError` when
    it is damaged)."""
    folder = teacher_record_dir(grid, dataset, split) if has_records(grid) else None
    if folder is None or not scored(folder):
        return False
    verify_record(folder)
    return True


def dataset_digest(folder: Path) -> str | None:
    """sha256 of the dataset folder's ``SHA256SUMS`` file (which lists every file's digest), or None."""
    sums = Path(folder) / CHECKSUM_FILE
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
    for path in sorted(splits_dir.glob(f"*/*{SPLIT_SUFFIX}")):
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
        atomic_write(dst / PER_IMAGE_FILE, lambda tmp, f=src / PER_IMAGE_FILE: shutil.copyfile(f, tmp))
    summary = json.loads((src / SUMMARY_FILE).read_text(encoding="utf-8"))
    write_json(dst / SUMMARY_FILE, _clean_summary(summary))


def record_teacher(grid: Grid, exp_teacher_dir: Path, dataset: str, split: str) -> None:
    """Copy the zero-shot teacher's scores on ``dataset``/``split`` into the record, its checksum list last (the
    scores are read strictly first: a damaged evaluation is never recorded)."""
    if has_records(grid) and scored(exp_teacher_dir):
        read_scores(exp_teacher_dir)
        target = teacher_record_dir(grid, dataset, split)
        remove(target)
        _copy_evaluation(exp_teacher_dir, target)
        write_checksums(target)


def record_cell(grid: Grid, cell: Cell, folder: Path, info: dict, *, epochs: int, test_curve: dict) -> Path:
    """Copy a finished cell's scores (its experiment ``folder``: ``eval/``) into the record (a record there before
    is replaced whole), then ``cell.json`` (a record with a ``cell.json`` is whole), then its checksum list.
    ``test_curve``: {epoch: summary} of the run's own test evaluations. The scores are read strictly first
    (:func:`read_scores`): a damaged evaluation is never recorded."""
    check_scores(folder / EVAL_DIR)
    target = cell_record_dir(grid, cell)
    remove(target)
    for summary in sorted((folder / EVAL_DIR).glob(f"**/{SUMMARY_FILE}")):
        rel = summary.parent.relative_to(folder)
        _copy_evaluation(summary.parent, target / rel, per_image=rel.parent.name == EVAL_DIR)
    write_json(target / CURVE_FILE, {str(k): _clean_summary(v) for k, v in sorted(test_curve.items())})
    copy_train_log(folder, target)
    kept = (
        "cell",
        "config_hash",
        "code",
        "attempts",
        "timing",
        "train_seconds",
        "eval_seconds",
        "train_cpu_seconds",
        "eval_cpu_seconds",
    )
    record = {k: info[k] for k in kept if k in info}
    record.update(device=info.get("device"), status="done", epochs=epochs, record_version=RECORD_VERSION)
    write_json(ExperimentDir(grid.results).cell_file(cell), record)
    write_checksums(target)
    return target


def copy_train_log(folder: Path, target: Path) -> bool:
    """Copy the training log of the cell in the experiment ``folder`` (its run's ``metrics.csv``: numbers only) to
    ``target/train-log.csv``; False when the run has none."""
    from ..runs import RunDir

    source = RunDir(folder / RUN_DIR).metrics_file
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
