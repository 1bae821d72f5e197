"""The run folder: its one owner. :class:`RunDir` names every path of it and reads and writes its files;
:func:`load_run` is the one way to get a trained student back. Nothing outside this module spells a path inside
a run folder.

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
    samples-rank<r>.txt         only with train.log_samples (debug): the sample ids of each batch of process r

A weights folder (``weights/*``, ``checkpoints/step-*``) holds ``peft.safetensors`` (the student's trained tensors
and PEFT spec) and, when the relation module trained, ``relation.safetensors``.

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
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

    from .config import Config
    from .distill.relation import RelationModule
    from .peft import PeftSpec

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "state.pt"
WEIGHTS = "weights"
FINAL = "final"
EVAL = "eval"
PEFT_FILE = "peft.safetensors"
RELATION_FILE = "relation.safetensors"
SAMPLE_LOG = "samples-rank{rank}.txt"


class RunFolderError(FileExistsError):
    """The run folder exists and holds files; the message names it and the way out."""


def prepare_run_dir(path: str | Path, *, overwrite: bool = False) -> Path:
    """Create the run folder; refuse an existing non-empty one unless ``overwrite`` (it is never deleted)."""
    path = Path(path).expanduser()
    RunDir(path).check_new(overwrite=overwrite)
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


# --------------------------------------------------------------------------------------------- weights folders


def peft_file(folder: str | Path) -> Path:
    """The student's PEFT weights inside a weights or checkpoint folder."""
    return Path(folder) / PEFT_FILE


def relation_file(folder: str | Path) -> Path:
    """The relation module's weights inside a weights or checkpoint folder (absent when it did not train)."""
    return Path(folder) / RELATION_FILE


def weights_writer(
    student: Sam, peft_spec: PeftSpec, relation: RelationModule | None = None
) -> Callable[[Path], None]:
    """A function that writes the trained weights (PEFT tensors, relation module if given) into a folder."""
    from .peft import save_peft

    def write(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_peft(peft_file(folder), student, peft_spec)
        if relation is not None:
            relation.save(relation_file(folder))

    return write


# --------------------------------------------------------------------------------------------- the run folder


class RunDir:
    """One run folder (see the module doc for its layout): every path in it, and its reads and writes.

    Args:
        path: the folder (``~`` expanded); nothing is created until :meth:`create`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ----- paths

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def summary_file(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    def weights_dir(self, epoch: int | None = None) -> Path:
        """``weights/final`` (``epoch`` None) or ``weights/epoch-<epoch>`` (1-based)."""
        return self.path / WEIGHTS / (FINAL if epoch is None else f"epoch-{epoch:03d}")

    def evaluation_file(self, epoch: int) -> Path:
        """``eval/epoch-<epoch>.json``: the test-split evaluation after that (1-based) epoch."""
        return self.path / EVAL / f"epoch-{epoch:03d}.json"

    def sample_log(self, rank: int) -> Path:
        """``samples-rank<rank>.txt`` (debug log of the sample ids each process trained on)."""
        return self.path / SAMPLE_LOG.format(rank=rank)

    # ----- the folder and its config

    def is_run(self) -> bool:
        """Whether the folder holds a run (its ``config.yaml``)."""
        return self.config_file.is_file()

    def check_new(self, *, overwrite: bool = False) -> None:
        """Refuse (:class:`RunFolderError`) an existing non-empty folder unless ``overwrite``; creates nothing."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"run folder {self.path} exists and is not a folder")
        if self.path.is_dir() and any(self.path.iterdir()) and not overwrite:
            raise RunFolderError(
                f"run folder {self.path} already exists and holds files; choose another output, pass "
                f"--overwrite to write into it, or --resume {self.path} to continue that run"
            )

    def create(self, *, overwrite: bool = False) -> RunDir:
        """Create the folder; :class:`RunFolderError` for an existing non-empty one unless ``overwrite``."""
        prepare_run_dir(self.path, overwrite=overwrite)
        return self

    def read_config(self) -> Config:
        """The config the run was started with, its ``output`` pointed at this folder.

        Raises:
            FileNotFoundError: the folder holds no ``config.yaml``.
        """
        from .config import load_config

        if not self.is_run():
            raise FileNotFoundError(f"{self.path} is not a run folder: {self.config_file} is missing")
        config = load_config(self.config_file)
        config.output = str(self.path)
        return config

    def write_config(self, config: Config) -> Path:
        """Write the resolved config (atomically)."""
        from .config import config_to_yaml

        return atomic_write_text(self.config_file, config_to_yaml(config))

    # ----- weights and checkpoints

    def save_weights(
        self,
        student: Sam,
        peft_spec: PeftSpec,
        relation: RelationModule | None = None,
        *,
        epoch: int | None = None,
    ) -> Path:
        """Write the trained weights to :meth:`weights_dir` (``epoch`` None: the final ones), atomically."""
        return atomic_write(self.weights_dir(epoch), weights_writer(student, peft_spec, relation))

    def save_checkpoint(
        self,
        step: int,
        student: Sam,
        peft_spec: PeftSpec,
        relation: RelationModule | None,
        state: dict,
        *,
        keep: int = 2,
    ) -> Path:
        """Write resume checkpoint ``checkpoints/step-<step>/`` (weights + state); see :func:`save_checkpoint`."""
        return save_checkpoint(
            self.path, step, weights_writer(student, peft_spec, relation), state, keep=keep
        )

    def latest_checkpoint(self) -> Path | None:
        """The newest complete resume checkpoint folder, or ``None``."""
        return latest_checkpoint(self.path)

    def load_state(self, checkpoint: str | Path) -> dict:
        """The resume state (optimizer, scheduler, RNG, position) of a checkpoint folder."""
        return load_state(checkpoint)

    def student_weights(self) -> Path:
        """The PEFT weights the run ended with: ``weights/final``, else its newest resume checkpoint, else its
        newest evaluated epoch (``weights/epoch-*``).

        Raises:
            FileNotFoundError: the run holds no PEFT weights (the message lists where it looked).
        """
        candidates = [peft_file(self.weights_dir())]
        latest = self.latest_checkpoint() if self.checkpoints_dir.is_dir() else None
        if latest is not None:
            candidates.append(peft_file(latest))
        candidates += [peft_file(p) for p in sorted((self.path / WEIGHTS).glob("epoch-*"), reverse=True)]
        for path in candidates:
            if path.is_file():
                return path
        raise FileNotFoundError(
            f"{self.path} holds no trained weights: looked for {WEIGHTS}/{FINAL}/{PEFT_FILE}, the latest "
            f"checkpoint and {WEIGHTS}/epoch-*/{PEFT_FILE}"
        )

    def epoch_weights(self) -> dict[int, Path]:
        """PEFT weights files after each evaluated epoch, by 1-based epoch."""
        found = sorted((self.path / WEIGHTS).glob(f"epoch-*/{PEFT_FILE}"))
        return {int(p.parent.name.split("-")[1]): p for p in found}

    def is_finished(self) -> bool:
        """Training ended: the final weights and the summary are written."""
        return peft_file(self.weights_dir()).is_file() and self.summary_file.is_file()

    def is_resumable(self) -> bool:
        """A resume checkpoint exists (an interrupted run continues from it)."""
        return (self.checkpoints_dir / LATEST).is_file()

    # ----- logs and results

    def evaluations(self) -> dict[int, dict]:
        """The run's own test-split summaries, by 1-based epoch (from ``eval/epoch-*.json``)."""
        out = {}
        for p in sorted((self.path / EVAL).glob("epoch-*.json")):
            out[int(p.stem.split("-")[1])] = json.loads(p.read_text(encoding="utf-8"))["summary"]
        return out

    def metrics_log(self, fields: list[str], *, resume_step: int | None = None) -> MetricsLog:
        """The run's ``metrics.csv`` (rows past ``resume_step`` dropped when resuming)."""
        return MetricsLog(self.metrics_file, fields, resume_step=resume_step)

    def write_evaluation(self, epoch: int, summary: dict, rows: list[dict]) -> Path:
        """Write ``eval/epoch-<epoch>.json`` (summary + per-image rows)."""
        return write_json(self.evaluation_file(epoch), {"epoch": epoch, "summary": summary, "rows": rows})

    def write_summary(self, summary: dict) -> Path:
        """Write ``summary.json``."""
        return write_json(self.summary_file, summary)

    def read_summary(self) -> dict:
        """The run's ``summary.json``."""
        return json.loads(self.summary_file.read_text(encoding="utf-8"))

    def log_samples(self, rank: int, epoch: int, index: int, ids: list[str]) -> None:
        """Append one batch's sample ids to :meth:`sample_log` (epoch 0-based, written 1-based)."""
        with open(self.sample_log(rank), "a", encoding="utf-8") as f:
            f.write(f"{epoch + 1}\t{index}\t{' '.join(ids)}\n")


def load_run(
    run_dir: str | Path | RunDir,
    *,
    checkpoint: str | Path | None = None,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Config, Sam]:
    """The config and fine-tuned student of a run, in eval mode: base SAM from the run's config (+ its SAM
    checkpoint), then the saved PEFT weights. The relation module is a training-time device and is not loaded.

    Args:
        run_dir: the run folder written by :func:`infosam.train.train`.
        checkpoint: base SAM weights to use instead of the path recorded in the run's config (moved files).
        weights: a ``peft.safetensors`` to load instead of :meth:`RunDir.student_weights`'s choice.
        device: where the student goes.

    Raises:
        FileNotFoundError: not a run folder, no trained weights, or the recorded SAM checkpoint moved.
    """
    from .model import build_base
    from .peft import load_peft

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    config = run.read_config()
    if checkpoint is not None:
        config.model.checkpoint = str(checkpoint)
    elif config.model.checkpoint is not None and not Path(config.model.checkpoint).expanduser().is_file():
        raise FileNotFoundError(
            f"base SAM checkpoint {config.model.checkpoint} (model.checkpoint in {run.config_file}) not found; "
            "pass --checkpoint with its new location"
        )
    m = config.model
    model = build_base(
        m.name,
        checkpoint=m.checkpoint,
        image_size=m.image_size,
        attention=m.attention,
        seed=config.train.seed,
    )
    load_peft(Path(weights) if weights is not None else run.student_weights(), model)
    return config, model.eval().to(device)
