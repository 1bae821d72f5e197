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
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import yaml

from ..files import atomic_write_text, write_json
from ..lock import RunLock, RunLockedError, held_by_other
from . import records
from .grid import (
    Cell,
    Grid,
    GridError,
    cell_config,
    cells,
    config_hash,
    eval_config,
    load_grid,
    make_splits,
    model_config,
    pairs,
    split_text,
)
from .layout import KILLED_ATTEMPTS_TIMED, TRAIN_LOG_FILE, ExperimentDir

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
    (:func:`_queue_left`: not finished, not held by another process); None before the first."""
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
        shard: ``(k, n)``, 1 <= k <= n: run only this process's share of the cells (:func:`shard_cells`), so n
            processes (one per GPU or CPU core) share one experiment folder without touching the same cell; each
            scores the zero-shot teacher on what its cells need (a split scored already is skipped).
        record_only: train and score nothing: copy what is finished in ``out`` into the grid's ``results``
            record (:mod:`infosam.experiment.records`), e.g. from a folder run by an older version; a cell
            recorded before records kept the training log gets it from ``out`` (same config hash); a legacy
            record gets its checksum list, and a record that fails verification is recorded again
            (:func:`_record_finished`).

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
    exp_dir.mkdir(parents=True, exist_ok=True)
    layout = ExperimentDir(exp_dir)
    _write_grid_copy(grid, layout.grid_copy)
    write_json(layout.experiment_file, {"grid": str(grid.path), "grid_root": str(grid.path.parent)})
    splits_dir = layout.splits
    _write_splits(grid, splits_dir)
    if records.has_records(grid):
        records.write_common(grid, splits_dir)
    todo = cells(grid)
    _check_one_teacher(grid, todo)
    if shard is not None:
        todo = shard_cells(todo, *shard, grid=grid)
    if record_only:
        if not records.has_records(grid):
            raise GridError(f"{grid.path} has no results folder: nothing to record into")
        _record_finished(grid, todo, exp_dir)
        return exp_dir
    _check_batches(grid, todo, layout)
    _teacher_evaluations(grid, todo, exp_dir)

    spent: list[float] = []
    busy: list[str] = []
    for index, cell in enumerate(todo, start=1):
        start = time.perf_counter()
        outcome = _run_cell(grid, cell, exp_dir, train_progress)
        seconds = time.perf_counter() - start
        if outcome == RAN:
            spent.append(seconds)
        elif outcome == BUSY:
            busy.append(cell.name)
        eta = sum(spent) / len(spent) * _queue_left(grid, todo[index:], layout) if spent else None
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


def _queue_left(grid: Grid, rest: list[Cell], layout: ExperimentDir) -> int:
    """How many of the cells ``rest`` this process will run: those neither finished (recorded, or done in the
    experiment folder) nor held by another living process on this host (its lock file names it; the lock is
    not probed, which could make that process's own attempt to take it fail). A holder on another host cannot be
    told from a dead one and counts as this process's."""
    left = 0
    for cell in rest:
        if records.has_records(grid) and ExperimentDir(grid.results).cell_file(cell).is_file():
            continue
        if layout.cell_info(cell).get("status") == "done" and _evaluations_complete(grid, cell, layout):
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


# --------------------------------------------------------------------------------------------- splits + teacher


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


def _write_splits(grid: Grid, splits_dir: Path) -> None:
    """Write every split list; refuse when an existing one differs (the data or the split settings changed)."""
    for d in grid.datasets.values():
        for name, images in make_splits(d).items():
            path = splits_dir / d.name / f"{name}.csv"
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


def _device(cpu: bool) -> str:
    return "cuda" if torch.cuda.is_available() and not cpu else "cpu"


def _teacher_evaluations(grid: Grid, todo: list[Cell], exp_dir: Path) -> None:
    """The zero-shot teacher on every split a student is scored on, once per (dataset, split)."""
    if not todo:
        return
    # The teacher is the base model of the first seed's config: its train.seed draws what no checkpoint covers
    # (random test models), as that run's own teacher was drawn.
    layout = ExperimentDir(exp_dir)
    teacher = cell_config(grid, replace(todo[0], seed=grid.seeds[0]), layout.splits, exp_dir / "probe")
    wanted: dict[tuple[str, str], None] = {}
    for cell in todo:
        wanted[(cell.dataset, f"{cell.part}-test")] = None
        for other in grid.datasets[cell.dataset].retention:
            wanted[(other, "heldout")] = None
    probe = cell_config(grid, todo[0], layout.splits, exp_dir / "probe")
    cpu = probe.train.cpu
    cache = probe.cache if _cached_scoring(probe) else None
    for dataset, split in wanted:
        out = layout.teacher(dataset, split)
        if records.recorded_teacher(grid, dataset, split):
            continue
        if (out / "summary.json").is_file():
            records.record_teacher(grid, out, dataset, split)
            continue
        out.mkdir(parents=True, exist_ok=True)
        try:
            # Shards share the teacher's splits: the first to take a split scores it, the others go on to their
            # cells (the teacher's scores are needed by the report, not by training).
            with RunLock(out):
                if not (out / "summary.json").is_file():
                    log.info("zero-shot teacher on %s/%s", dataset, split)
                    _score(grid, teacher, dataset, split, out, exp_dir, device=_device(cpu), cache=cache)
        except RunLockedError:
            log.info("zero-shot teacher on %s/%s: another process is scoring it", dataset, split)
            continue
        records.record_teacher(grid, out, dataset, split)


def _score(
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
    summary.update(dataset=dataset, split_file=f"splits/{dataset}/{split}.csv")
    write_evaluation(out, rows, summary, overwrite=True)


# --------------------------------------------------------------------------------------------- one cell


TIMING_WRITE_SECONDS = 60.0
"""How often a training attempt writes its time so far into ``cell.json``, so that an attempt killed without warning
(out of memory, a machine taken back) still counts in the cell's ``train_seconds``."""


class _AttemptClock:
    """Adds one training attempt's wall and CPU time to a cell's ``info`` (``train_seconds``,
    ``train_cpu_seconds``): written every :data:`TIMING_WRITE_SECONDS` from the step callback and once at the end."""

    def __init__(self, info: dict, path: Path):
        self.info, self.path = info, path
        self.wall0, self.cpu0 = info.get("train_seconds", 0.0), info.get("train_cpu_seconds", 0.0)
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        self.written = self.started

    def write(self) -> None:
        self.info["train_seconds"] = self.wall0 + time.perf_counter() - self.started
        self.info["train_cpu_seconds"] = self.cpu0 + time.process_time() - self.cpu_started
        write_json(self.path, self.info)
        self.written = time.perf_counter()

    def on_step(self, step: int) -> None:
        if time.perf_counter() - self.written >= TIMING_WRITE_SECONDS:
            self.write()


RAN, FINISHED, BUSY = "ran", "finished", "busy"
"""What :func:`_run_cell` did: trained and/or scored the cell; nothing (finished before); nothing (another
process holds the cell)."""


def _run_cell(grid: Grid, cell: Cell, exp_dir: Path, train_progress: bool) -> str:
    """Train (or resume) and score one cell, holding its folder's lock; returns :data:`RAN`, :data:`FINISHED`
    (nothing left to do) or :data:`BUSY` (another process sharing the folder is on it: left to that process)."""
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
        return _run_locked_cell(grid, cell, exp_dir, config, digest, train_progress)
    finally:
        lock.release()


def _run_locked_cell(grid: Grid, cell: Cell, exp_dir: Path, config, digest: str, train_progress: bool) -> str:
    """:func:`_run_cell`'s work, with the cell's lock held: refuse a changed config, train or resume, score, record."""
    from ..runs import RunDir
    from ..train import train

    layout = ExperimentDir(exp_dir)
    folder, run_dir, info_path = layout.cell(cell), layout.run(cell), layout.cell_file(cell)
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else None
    if info is not None and info["config_hash"] != digest:
        raise GridError(
            f"cell {cell.name} in {exp_dir} was run with another config (hash {info['config_hash']}, now {digest}); "
            "the grid changed under an existing name: give the changed arm a new name, or use another --out"
        )
    if info is not None and info.get("status") == "done" and _evaluations_complete(grid, cell, layout):
        _record(grid, cell, folder, info, config)
        return FINISHED
    if info is None:
        info = {"cell": cell.name, "config_hash": digest, "status": "training", "train_seconds": 0.0}
        info["timing"] = KILLED_ATTEMPTS_TIMED  # every attempt of this cell is timed by _AttemptClock
        write_json(info_path, info)

    run = RunDir(run_dir)
    started = run.is_run()
    if started and _started_hash(run, layout) != digest:
        raise GridError(f"{run_dir} holds a run of another config than cell {cell.name}; move it away")
    if not run.is_finished():
        # the code of every training attempt, each version once, and how many attempts there were (resumes too)
        info["attempts"] = info.get("attempts", len(info.get("code") or [])) + 1
        if code_version() not in info.setdefault("code", []):
            info["code"].append(code_version())
        write_json(info_path, info)
        clock = _AttemptClock(info, info_path)
        try:
            if started and run.is_resumable():
                log.info("cell %s: resuming", cell.name)
                train(config, resume=True, progress=train_progress, on_step=clock.on_step)
            else:
                log.info("cell %s: training", cell.name)
                # A folder with this cell's config but no checkpoint yet: killed in its first steps; start it again.
                train(config, overwrite=started, progress=train_progress, on_step=clock.on_step)
        finally:
            clock.write()  # an interrupted or failed attempt's time counts too
        info["device"] = torch.cuda.get_device_name() if _device(config.train.cpu) == "cuda" else "cpu"
        info["status"] = "trained"
        write_json(info_path, info)

    start, cpu_start = time.perf_counter(), time.process_time()
    device = _device(config.train.cpu)
    d = grid.datasets[cell.dataset]
    targets = [("test", cell.dataset, f"{cell.part}-test")] + [
        (f"retention-{other}", other, "heldout") for other in d.retention
    ]
    for name, dataset, split in targets:
        jobs = [(layout.evaluation(cell, name), None)]
        if name != "test":  # forgetting curves (target curves are in the run's own eval files)
            jobs += [
                (layout.evaluation(cell, name) / f"epoch-{epoch:03d}", weights)
                for epoch, weights in run.epoch_weights().items()
                if epoch != config.train.epochs
            ]
        for out, weights in jobs:
            if (out / "summary.json").is_file():
                continue  # scored before
            if name == "test" and weights is None:
                if _reuse_final_evaluation(grid, cell, config, run, layout, split, out):
                    continue
            _score(
                grid,
                run_dir,
                dataset,
                split,
                out,
                exp_dir,
                weights=weights,
                device=device,
                cache=_cached_scoring(config),
            )
    info["eval_seconds"] = info.get("eval_seconds", 0.0) + time.perf_counter() - start
    info["eval_cpu_seconds"] = info.get("eval_cpu_seconds", 0.0) + time.process_time() - cpu_start
    info["status"] = "done"
    write_json(info_path, info)
    _record(grid, cell, folder, info, config)
    return RAN


def _started_hash(run, layout: ExperimentDir) -> str:
    """The config hash of the run a cell's folder holds, its split files taken relative to the experiment folder
    the run was started in (they were written as ``<that folder>/splits/<dataset>/<split>.csv``), so an experiment
    folder moved or copied elsewhere keeps its half-finished cells."""
    config = run.read_config()
    split = Path(config.data.test_split or "")
    in_splits = len(split.parts) > 3 and split.parents[1].name == layout.splits.name
    return config_hash(config, split.parents[2] if in_splits else layout.root)


def _reuse_final_evaluation(
    grid: Grid, cell: Cell, config, run, layout: ExperimentDir, split: str, out: Path
) -> bool:
    """Write the run's own test evaluation after its last epoch as the cell's final test score, when it is the
    scoring :func:`_score` would do (same final weights, split, eval settings and cache use, float32), so the test
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
    summary.update(dataset=cell.dataset, split_file=f"splits/{cell.dataset}/{split}.csv")
    write_evaluation(out, rows, summary, overwrite=True)
    log.info(
        "cell %s: final test score taken from the run's epoch-%d evaluation", cell.name, config.train.epochs
    )
    return True


def _record(grid: Grid, cell: Cell, folder: Path, info: dict, config) -> None:
    """Copy a finished cell into the grid's results record (when it has one)."""
    from ..runs import RunDir

    if not records.has_records(grid):
        return
    curve = RunDir(folder / "run").evaluations()
    records.record_cell(grid, cell, folder, info, epochs=config.train.epochs, test_curve=curve)
    log.info("cell %s: recorded in %s", cell.name, records.cell_record_dir(grid, cell))


def _record_finished(grid: Grid, todo: list[Cell], exp_dir: Path) -> None:
    """Record every finished cell of ``todo`` and every teacher evaluation in ``exp_dir`` (nothing runs), and seal
    the records already there: a legacy record (no checksum list) gets one; a record that fails verification
    (changed on purpose) is recorded again from ``exp_dir`` when it holds the finished cell, else its checksum list
    is written over its files as they are (once they parse strictly)."""
    layout = ExperimentDir(exp_dir)
    record = ExperimentDir(grid.results)
    for path in sorted(layout.teachers.glob("*/*/summary.json")):
        dataset, split = path.parent.parent.name, path.parent.name
        if dataset in grid.datasets:
            records.record_teacher(grid, path.parent, dataset, split)
    for path in sorted(record.teachers.glob("*/*/summary.json")):
        if not (layout.teachers / path.parent.relative_to(record.teachers) / "summary.json").is_file():
            _seal_if_needed(path.parent, f"teacher {path.parent.relative_to(record.teachers).as_posix()}")
    for cell in todo:
        folder, info = layout.cell(cell), layout.cell_info(cell)
        config = cell_config(grid, cell, layout.splits, layout.run(cell))
        digest = config_hash(config, exp_dir)
        if info and info.get("config_hash") != digest:
            raise GridError(
                f"cell {cell.name} in {exp_dir} was run with another config than the grid gives now"
            )
        finished = info.get("status") == "done" and _evaluations_complete(grid, cell, layout)
        if records.recorded_cell(grid, cell, digest, verify=False) is None:
            if finished:
                _record(grid, cell, folder, info, config)
            continue
        target = records.cell_record_dir(grid, cell)
        try:
            sealed = records.verify_record(target)
        except records.RecordError as err:
            if not finished:
                _seal(target, f"cell {cell.name}", changed=str(err))
                continue
            log.warning("cell %s: %s; recorded again from %s", cell.name, err, folder)
            _record(grid, cell, folder, info, config)
            continue
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


def code_version() -> str:
    """``infosam <version>``, plus the git commit of the source tree it was imported from when that is a git
    checkout (``+modified`` when its ``src/`` differs from the commit), so a result names the code that made it."""
    import subprocess

    from .. import __version__

    text = f"infosam {__version__}"
    package = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return text
        changed = subprocess.run(
            ["git", "-C", str(package), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return text
    text += f", commit {head.stdout.strip()[:12]}"
    return text + ("+modified" if changed.returncode == 0 and changed.stdout.strip() else "")


def _cached_scoring(config) -> bool:
    """Score through the caches the cells train with (the teacher cache, the student's frozen prefix) when the
    grid caches and computes in float32: scoring runs in float32, so its entries are those training stores."""
    return config.cache.enabled and config.train.precision == "no"


def _evaluations_complete(grid: Grid, cell: Cell, layout: ExperimentDir) -> bool:
    names = ["test"] + [f"retention-{o}" for o in grid.datasets[cell.dataset].retention]
    return all((layout.evaluation(cell, n) / "summary.json").is_file() for n in names)
