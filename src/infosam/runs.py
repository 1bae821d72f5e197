"""The run folder: its layout, atomic checkpoints, resume state and the metrics log.

Layout of a run folder::

    config.yaml                 the resolved config (what `infosam train --resume` reads back)
    metrics.csv                 one row per logged step: step, epoch, loss terms, lr, images/s
    tensorboard/                TensorBoard events
    checkpoints/step-000040/    resume checkpoint: trained weights + state.pt (optimizer, scheduler, RNG, position)
    checkpoints/latest          name of the newest complete resume checkpoint
    weights/epoch-010/          trained weights after an evaluated epoch (peft + relation module)
    weights/final/              trained weights at the end of training
    eval/epoch-010.json         test-split metrics after that epoch (summary + per-image rows)
    summary.json                reported epoch (the last), every evaluated epoch, best-of table

Every file and checkpoint folder is written under a temporary name and moved into place with ``os.replace``, so a
run killed at any moment leaves only complete checkpoints behind.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "state.pt"


class RunFolderError(FileExistsError):
    """The run folder exists and holds files; the message names it and the way out."""


def prepare_run_dir(path: str | Path, *, overwrite: bool = False) -> Path:
    """Create the run folder; refuse an existing non-empty one unless ``overwrite`` (it is never deleted)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"run folder {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise RunFolderError(
            f"run folder {path} already exists and holds files; choose another output, pass --overwrite to "
            f"write into it, or --resume {path} to continue that run"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then move the result to ``path`` atomically (file or folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    _remove(tmp)
    write(tmp)
    if path.is_dir():  # a folder cannot be replaced by rename while it holds files: move it aside first
        old = path.with_name(f".old-{path.name}-{os.getpid()}")
        _remove(old)
        os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data: object) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


# --------------------------------------------------------------------------------------------- RNG state


def rng_state() -> dict:
    """The global random states of Python, NumPy and torch (CPU and CUDA), as torch-loadable plain data."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    run_dir: str | Path, step: int, write_weights: Callable[[Path], None], state: dict, *, keep: int = 2
) -> Path:
    """Write resume checkpoint ``checkpoints/step-<step>/`` atomically and point ``checkpoints/latest`` at it.

    Args:
        run_dir: the run folder.
        step: optimizer steps done.
        write_weights: writes the trained weights into the folder it is given.
        state: resume state (optimizer, scheduler, RNG, position), saved with ``torch.save`` as ``state.pt``.
        keep: how many newest resume checkpoints to keep (older ones are removed).
    """
    root = Path(run_dir) / CHECKPOINTS
    name = f"step-{step:06d}"

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        write_weights(tmp)
        torch.save(state, tmp / STATE_FILE)

    path = atomic_write(root / name, write)
    atomic_write_text(root / LATEST, name + "\n")
    for old in sorted(root.glob("step-*"))[:-keep]:
        if old.name != name:
            shutil.rmtree(old)
    return path


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete resume checkpoint of a run, or ``None`` when it has none."""
    pointer = Path(run_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text(encoding="utf-8").strip()
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{pointer} names {path.name}, but {path / STATE_FILE} is missing")
    return path


def load_state(checkpoint: str | Path) -> dict:
    """Read the resume state of a checkpoint folder."""
    # weights_only=True: the state holds tensors and plain Python data only (see rng_state).
    return torch.load(Path(checkpoint) / STATE_FILE, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------------------------- metrics log


class MetricsLog:
    """Append-only ``metrics.csv``; on resume, rows past the resumed step (lost work) are dropped first.

    Args:
        path: the CSV file.
        fields: column names, fixed for the run.
        resume_step: when resuming, the step training restarts from; ``None`` starts a fresh file.
    """

    def __init__(self, path: str | Path, fields: list[str], *, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.fields = fields
        rows: list[dict] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(self.path, write)

    def append(self, row: dict) -> None:
        """Add one row (keys outside ``fields`` are ignored) and flush it to disk."""
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)
