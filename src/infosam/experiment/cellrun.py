"""One cell of ``infosam experiment``, with its lock held (:mod:`~infosam.experiment.sharing` takes it): refuse a
changed config, train or resume the run, score it, record it.

A cell's ``cell.json`` says where it stands (``training``, ``trained``, ``done``), its config hash, the code of
every training attempt and how many there were, the time each part took and the device it ran on.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from ..files import write_json
from .grid import Cell, Grid, GridError
from .hashing import config_hash
from .layout import KILLED_ATTEMPTS_TIMED, ExperimentDir
from .recorder import record
from .scoring import device_for, evaluations_complete, score_cell
from .timing import AttemptClock

log = logging.getLogger(__name__)

RAN, FINISHED, BUSY = "ran", "finished", "busy"
"""What running a cell did: trained and/or scored it; nothing (finished before); nothing (another process holds
the cell: :func:`infosam.experiment.sharing.run_cell`)."""


def run_locked_cell(grid: Grid, cell: Cell, exp_dir: Path, config, digest: str, train_progress: bool) -> str:
    """Run ``cell`` (its lock held): refuse a changed config, train or resume, score, record; returns
    :data:`RAN` or :data:`FINISHED` (nothing left to do)."""
    from ..runs import RunDir

    layout = ExperimentDir(exp_dir)
    folder, info_path = layout.cell(cell), layout.cell_file(cell)
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else None
    if info is not None and info["config_hash"] != digest:
        raise GridError(
            f"cell {cell.name} in {exp_dir} was run with another config (hash {info['config_hash']}, now {digest}); "
            "the grid changed under an existing name: give the changed arm a new name, or use another --out"
        )
    if info is not None and info.get("status") == "done" and evaluations_complete(grid, cell, layout):
        record(grid, cell, folder, info, config)
        return FINISHED
    if info is None:
        info = {"cell": cell.name, "config_hash": digest, "status": "training", "train_seconds": 0.0}
        info["timing"] = KILLED_ATTEMPTS_TIMED  # every attempt of this cell is timed by AttemptClock
        write_json(info_path, info)

    run = RunDir(layout.run(cell))
    _train(cell, config, digest, run, layout, info, info_path, train_progress)
    start, cpu_start = time.perf_counter(), time.process_time()
    score_cell(grid, cell, exp_dir, config, run)
    info["eval_seconds"] = info.get("eval_seconds", 0.0) + time.perf_counter() - start
    info["eval_cpu_seconds"] = info.get("eval_cpu_seconds", 0.0) + time.process_time() - cpu_start
    info["status"] = "done"
    write_json(info_path, info)
    record(grid, cell, folder, info, config)
    return RAN


def _train(
    cell: Cell,
    config,
    digest: str,
    run,
    layout: ExperimentDir,
    info: dict,
    info_path: Path,
    train_progress: bool,
) -> None:
    """Train the cell's run, or resume it, unless it is finished; the attempt is counted and timed in ``info``."""
    from ..train import train

    started = run.is_run()
    if started and started_hash(run, layout) != digest:
        raise GridError(f"{run.path} holds a run of another config than cell {cell.name}; move it away")
    if run.is_finished():
        return
    # the code of every training attempt, each version once, and how many attempts there were (resumes too)
    info["attempts"] = info.get("attempts", len(info.get("code") or [])) + 1
    if code_version() not in info.setdefault("code", []):
        info["code"].append(code_version())
    write_json(info_path, info)
    clock = AttemptClock(info, info_path)
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
    info["device"] = torch.cuda.get_device_name() if device_for(config.train.cpu) == "cuda" else "cpu"
    info["status"] = "trained"
    write_json(info_path, info)


def started_hash(run, layout: ExperimentDir) -> str:
    """The config hash of the run a cell's folder holds, its split files taken relative to the experiment folder
    the run was started in (they were written as ``<that folder>/splits/<dataset>/<split>.csv``), so an experiment
    folder moved or copied elsewhere keeps its half-finished cells."""
    config = run.read_config()
    split = Path(config.data.test_split or "")
    in_splits = len(split.parts) > 3 and split.parents[1].name == layout.splits.name
    return config_hash(config, split.parents[2] if in_splits else layout.root)


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
