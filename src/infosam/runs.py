"""The run folder: its one owner. :class:`RunDir` names every path of it and reads and writes its files;
:func:`load_run` is the one way to get a trained student back. Nothing outside this module spells a path inside
a run folder.

Layout of a run folder::

    config.yaml                 the resolved config (what `infosam train --resume` reads back)
    metrics.csv                 one row per logged step: step, epoch, loss terms, lr, images/s
    tensorboard/                TensorBoard events
    checkpoints/step-000040/    resume checkpoint: trained weights + state.pt (optimizer, scheduler, RNG, position)
                                + manifest.json (sha256 and size of each file, checked on every load)
    checkpoints/latest          name of the newest complete resume checkpoint (a hint: resume takes the newest
                                intact step-* folder, warning about any damaged one it passes over)
    .lock                       pid and host of the process writing the run (flock'ed while it runs)
    weights/epoch-010/          trained weights after an evaluated epoch (peft + relation module)
    weights/final/              trained weights at the end of training
    eval/epoch-010.json         test-split metrics after that epoch (summary + per-image rows)
    summary.json                reported epoch (the last), every evaluated epoch, best-of table
    samples-rank<r>.txt         only with train.log_samples (debug): the sample ids of each batch of process r

A weights folder (``weights/*``, ``checkpoints/step-*``) holds ``peft.safetensors`` (the student's trained tensors
and PEFT spec) and, when the relation module trained, ``relation.safetensors``, and ``manifest.json``.

Every file and checkpoint folder is written under a temporary name and moved into place with ``os.replace``, so a
run killed at any moment leaves only complete checkpoints behind; a write that fails (a full disk) removes its
temporary; a resumed run removes the temporaries a killed one left. No weights folder is ever written with a NaN or
an infinity in it, and none is loaded with one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import pickle
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .files import (  # noqa: F401  (atomic_write* and write_json: re-exported for the run folder's users)
    OLD_PREFIX,
    TMP_PREFIX,
    NoSpaceError,
    atomic_write,
    atomic_write_text,
    final_name,
    no_space,
    remove,
    write_json,
)
from .guard import NonFiniteError, check_finite, nested_tensors
from .lock import LOCK_FILE, RunLock
from .weightfile import require_safetensors, torch_load

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
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "infosam-weights-folder/1"
_STEP_DIR = re.compile(r"step-(\d+)")

log = logging.getLogger(__name__)


class RunFolderError(FileExistsError):
    """The run folder exists and holds files; the message names it and the way out."""


class CheckpointError(ValueError):
    """A checkpoint or weights folder is damaged (missing, truncated or changed file, unreadable state,
    non-finite tensors); the message names the file and what is wrong with it."""


class UnfinishedRunError(FileNotFoundError):
    """Final weights were demanded (``require_final``) from a run that did not finish."""


def prepare_run_dir(path: str | Path, *, overwrite: bool = False) -> Path:
    """Create the run folder; refuse an existing non-empty one unless ``overwrite`` (it is never deleted)."""
    path = Path(path).expanduser()
    RunDir(path).check_new(overwrite=overwrite)
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------------- manifests


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str | Path) -> Path:
    """Write ``manifest.json`` into a weights/checkpoint folder: sha256 and size of every file beside it."""
    folder = Path(folder)
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST_FILE
    }
    path = folder / MANIFEST_FILE
    path.write_text(
        json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=2) + "\n", encoding="utf-8"
    )
    return path


def verify_folder(folder: str | Path) -> bool:
    """Check a weights/checkpoint folder against its ``manifest.json``; ``False`` when it has none (written
    before manifests existed: nothing to check against).

    Raises:
        CheckpointError: a listed file is missing, has another size (truncated) or another sha256 (changed).
    """
    folder = Path(folder)
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{manifest} is damaged ({err})") from err
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing (listed in {MANIFEST_FILE})")
        size = path.stat().st_size
        if size == 0 and entry["bytes"]:
            raise CheckpointError(f"{path} is empty, {entry['bytes']} bytes were written")
        if size != entry["bytes"]:
            raise CheckpointError(
                f"{path} is truncated or grown: {size} bytes, {entry['bytes']} were written"
            )
        if _sha256(path) != entry["sha256"]:
            raise CheckpointError(f"{path} was changed or damaged after it was written (sha256 mismatch)")
    return True


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
    """Write resume checkpoint ``checkpoints/step-<step>/`` atomically (weights, ``state.pt``, a manifest of
    checksums) and point ``checkpoints/latest`` at it, then remove all but ``keep`` of the checkpoints up to it.

    Args:
        run_dir: the run folder.
        step: optimizer steps done.
        write_weights: writes the trained weights into the folder it is given.
        state: resume state (optimizer, scheduler, RNG, position), saved with ``torch.save`` as ``state.pt``.
        keep: how many newest resume checkpoints to keep. Only checkpoints of earlier steps are removed, never
            a later one (a run resumed from an older checkpoint than its newest keeps the newer ones until it
            writes their steps again).
    Raises:
        NoSpaceError: the disk filled up; the previous checkpoints are kept and the temporary is removed.
        NonFiniteError: the weights or the optimizer state hold NaN/inf (nothing is written).
    """
    root = Path(run_dir) / CHECKPOINTS
    name = f"step-{step:06d}"
    check_finite(
        nested_tensors(state.get("optimizer", {}), "optimizer"),
        f"refusing to write checkpoint {root / name}",
        error=NonFiniteError,
    )

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        write_weights(tmp)
        buffer = io.BytesIO()  # serialise first: a full disk then fails in an ordinary write (OSError ENOSPC)
        torch.save(state, buffer)
        with open(tmp / STATE_FILE, "wb") as f:
            f.write(buffer.getbuffer())
        write_manifest(tmp)

    try:
        path = atomic_write(root / name, write)
        atomic_write_text(root / LATEST, name + "\n")
    except NoSpaceError as err:
        kept = [p.name for p in checkpoint_folders(root) if p.name != name]
        previous = f"the previous checkpoint {kept[0]} is kept" if kept else "no earlier checkpoint exists"
        raise NoSpaceError(
            f"no space left on {root} while writing checkpoint {name}; {previous}, temporaries removed; free "
            f"space, then `infosam train --resume {Path(run_dir)}`"
        ) from err
    earlier = [p for p in checkpoint_folders(root) if _step_of(p) < step]
    for old in earlier[max(keep - 1, 0) :]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _step_of(folder: Path) -> int:
    return int(_STEP_DIR.fullmatch(folder.name).group(1))


def checkpoint_folders(root: str | Path) -> list[Path]:
    """The ``step-*`` folders under ``checkpoints/``, newest (highest step) first; temporaries excluded."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name)]
    return sorted(found, key=_step_of, reverse=True)


def verify_checkpoint(checkpoint: str | Path) -> dict:
    """Check a resume checkpoint (manifest checksums, weights present, ``state.pt`` readable and finite) and
    return its state.

    Raises:
        CheckpointError: what is wrong, naming the file.
    """
    checkpoint = Path(checkpoint)
    verify_folder(checkpoint)
    if not peft_file(checkpoint).is_file():
        raise CheckpointError(f"{peft_file(checkpoint)} is missing")
    # By content, not name: a manifest that matches proves the bytes were not changed, not what they are.
    require_safetensors(peft_file(checkpoint), "a PEFT weights file", error=CheckpointError)
    if relation_file(checkpoint).is_file():
        require_safetensors(relation_file(checkpoint), "a relation-module file", error=CheckpointError)
    return load_state(checkpoint)


def find_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest intact resume checkpoint of a run (by step, whatever ``checkpoints/latest`` says), or ``None``
    when the run has no checkpoint at all. Each damaged one passed over is named in a warning.

    Raises:
        CheckpointError: checkpoints exist but none is intact (each is named with its defect).
    """
    root = Path(run_dir) / CHECKPOINTS
    folders = checkpoint_folders(root)
    pointer = root / LATEST
    if folders and not pointer.is_file():
        log.warning("%s is missing; looking for the newest intact checkpoint instead", pointer)
    elif pointer.is_file():
        named = pointer.read_text(encoding="utf-8").strip()
        if not (root / named).is_dir():
            log.warning(
                "%s names %s, which is missing; looking for the newest intact checkpoint", pointer, named
            )
    bad = []
    for folder in folders:
        try:
            verify_checkpoint(folder)
        except CheckpointError as err:
            log.warning("checkpoint %s is damaged, skipping it: %s", folder.name, err)
            bad.append(f"{folder.name}: {err}")
            continue
        if bad:
            log.warning("using %s, the newest intact checkpoint", folder)
        return folder
    if bad:
        raise CheckpointError(f"no intact checkpoint in {root}: " + "; ".join(bad))
    return None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest intact resume checkpoint (:func:`find_checkpoint`), or ``None`` when the run has none."""
    return find_checkpoint(run_dir)


def load_state(checkpoint: str | Path) -> dict:
    """Read the resume state of a checkpoint folder.

    Raises:
        CheckpointError: ``state.pt`` is missing, empty, truncated, not a torch file, holds code (refused by
            ``weights_only``) or a non-finite optimizer state; the message names it.
    """
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (its write was cut short)")
    try:
        # weights_only=True: the state holds tensors and plain Python data only (see rng_state).
        state = torch_load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path} cannot be read (truncated or damaged): {first}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} is not an infosam resume state")
    check_finite(nested_tensors(state.get("optimizer", {}), "optimizer"), str(path), error=CheckpointError)
    return state


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
    from .peft import save_peft, trainable_state_dict

    def write(folder: Path) -> None:
        tensors = list(trainable_state_dict(student).items())
        if relation is not None:
            tensors += [(f"relation.{k}", v) for k, v in relation.state_dict().items()]
        target = folder.with_name(final_name(folder))  # the name it will have, not the temporary's
        check_finite(tensors, f"refusing to write weights to {target}", error=NonFiniteError)
        folder.mkdir(parents=True, exist_ok=True)
        save_peft(peft_file(folder), student, peft_spec)
        if relation is not None:
            relation.save(relation_file(folder))
        write_manifest(folder)

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
        if self.path.is_dir() and any(p.name != LOCK_FILE for p in self.path.iterdir()) and not overwrite:
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
        """The newest intact resume checkpoint folder (:func:`find_checkpoint`), or ``None``."""
        return find_checkpoint(self.path)

    def lock(self) -> RunLock:
        """The run folder's exclusive writer lock (not yet taken: ``acquire()`` it or use it in ``with``)."""
        return RunLock(self.path)

    def remove_temporaries(self) -> list[Path]:
        """Remove the ``.tmp-*`` files and folders a killed writer left in the run folder (call with the lock
        held); a ``.old-*`` folder whose replacement never arrived is moved back. Returns what was removed."""
        removed = []
        for parent in (self.path, self.checkpoints_dir, self.path / WEIGHTS, self.path / EVAL):
            if not parent.is_dir():
                continue
            for p in parent.iterdir():
                if p.name.startswith(TMP_PREFIX):
                    remove(p)
                    removed.append(p)
                elif p.name.startswith(OLD_PREFIX):
                    target = p.with_name(final_name(p))
                    if target.exists():
                        remove(p)
                        removed.append(p)
                    else:
                        os.replace(p, target)
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted write", len(removed))
        return removed

    def load_state(self, checkpoint: str | Path) -> dict:
        """The resume state (optimizer, scheduler, RNG, position) of a checkpoint folder."""
        return load_state(checkpoint)

    def student_weights(self, *, require_final: bool = False) -> Path:
        """The PEFT weights the run ended with: ``weights/final``, else (an unfinished run, or damaged final
        weights: a warning says which weights are used and why) its newest intact resume checkpoint, else its
        newest intact evaluated epoch (``weights/epoch-*``).

        Args:
            require_final: refuse anything but intact final weights (:class:`UnfinishedRunError`).
        Raises:
            FileNotFoundError: the run holds no intact PEFT weights (the message lists where it looked).
            UnfinishedRunError: ``require_final`` and the run did not finish.
            CheckpointError: ``require_final`` and the final weights are damaged.
        """
        final = self.weights_dir()
        if peft_file(final).is_file():
            try:
                verify_folder(final)
                return peft_file(final)
            except CheckpointError as err:
                if require_final:
                    raise
                why = f"its final weights are damaged ({err})"
        else:
            why = f"the run did not finish (no {WEIGHTS}/{FINAL})"
            if require_final:
                newest = self._newest_unfinished()
                have = f"; its newest weights are {newest[1]}" if newest else ""
                raise UnfinishedRunError(
                    f"{self.path}: {why}{have}; finish it with `infosam train --resume {self.path}` or drop "
                    "--require-final to use them"
                )
        newest = self._newest_unfinished()
        if newest is None:
            raise FileNotFoundError(
                f"{self.path} holds no trained weights: looked for intact {WEIGHTS}/{FINAL}/{PEFT_FILE}, the "
                f"checkpoints and {WEIGHTS}/epoch-*/{PEFT_FILE}"
            )
        log.warning("%s: %s; using %s", self.path, why, newest[1])
        return newest[0]

    def _newest_unfinished(self) -> tuple[Path, str] | None:
        """(peft file, description) of the newest intact checkpoint, else evaluated epoch, or ``None``."""
        try:
            checkpoint = find_checkpoint(self.path)
        except CheckpointError:
            checkpoint = None
        if checkpoint is not None:
            state = load_state(checkpoint)
            total = state.get("scheduler", {}).get("T_max")
            of = f" of {total}" if total else ""
            return peft_file(checkpoint), f"checkpoint {checkpoint} (step {state['step']}{of})"
        for epoch, path in sorted(self.epoch_weights().items(), reverse=True):
            try:
                verify_folder(path.parent)
            except CheckpointError as err:
                log.warning("%s is damaged, skipping it: %s", path.parent, err)
                continue
            return path, f"{path.parent} (after epoch {epoch})"
        return None

    def epoch_weights(self) -> dict[int, Path]:
        """PEFT weights files after each evaluated epoch, by 1-based epoch."""
        found = sorted((self.path / WEIGHTS).glob(f"epoch-*/{PEFT_FILE}"))
        return {int(p.parent.name.split("-")[1]): p for p in found}

    def is_finished(self) -> bool:
        """Training ended: the final weights and the summary are written."""
        return peft_file(self.weights_dir()).is_file() and self.summary_file.is_file()

    def is_resumable(self) -> bool:
        """A resume checkpoint exists (an interrupted run continues from it)."""
        return bool(checkpoint_folders(self.checkpoints_dir))

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
    require_final: bool = False,
) -> tuple[Config, Sam]:
    """The config and fine-tuned student of a run, in eval mode: base SAM from the run's config (+ its SAM
    checkpoint), then the saved PEFT weights. The relation module is a training-time device and is not loaded.

    Args:
        run_dir: the run folder written by :func:`infosam.train.train`.
        checkpoint: base SAM weights to use instead of the path recorded in the run's config (moved files).
        weights: a ``peft.safetensors`` to load instead of :meth:`RunDir.student_weights`'s choice (which warns
            when the run did not finish and names the weights it takes).
        device: where the student goes.
        require_final: refuse a run without intact final weights (:class:`UnfinishedRunError`).

    Raises:
        FileNotFoundError: not a run folder, no trained weights, or the recorded SAM checkpoint moved.
        ValueError: the weights are damaged or hold NaN/inf.
    """
    from .model import build_configured
    from .peft import load_peft
    from .sam.checkpoint import BUNDLED

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    config = run.read_config()
    if weights is None:
        weights = run.student_weights(require_final=require_final)
    else:
        verify_folder(
            Path(weights).parent
        )  # given weights inside a weights folder: checked against its manifest
    recorded = config.model.checkpoint
    if checkpoint is not None:
        config.model.checkpoint = str(checkpoint)
    elif recorded is not None and recorded != BUNDLED and not Path(recorded).expanduser().is_file():
        raise FileNotFoundError(
            f"base SAM checkpoint {config.model.checkpoint} (model.checkpoint in {run.config_file}) not found; "
            "pass --checkpoint with its new location"
        )
    model = build_configured(config)
    load_peft(weights, model)
    return config, model.eval().to(device)
