"""The run folder: its one owner. :class:`RunDir` names every path of it and reads and writes its files; what is
inside a checkpoint or weights folder is :mod:`infosam.checkpoints`' business, and building the trained student
back from a run is :func:`infosam.load.load_run`'s. Nothing else spells a path inside a run folder.

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
    export/                     where `infosam export` writes by default (sam.pth, student.safetensors, onnx/)

A weights folder (``weights/*``, ``checkpoints/step-*``) holds ``peft.safetensors`` (the student's trained tensors
and PEFT spec) and, when the relation module trained, ``relation.safetensors``, and ``manifest.json``
(:mod:`infosam.checkpoints`).

Every file and checkpoint folder is written under a temporary name and moved into place with ``os.replace``, so a
run killed at any moment leaves only complete checkpoints behind; a write that fails (a full disk) removes its
temporary; a resumed run removes the temporaries a killed one left. No weights folder is ever written with a NaN or
an infinity in it, and none is loaded with one.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoints import (
    PEFT_FILE,
    CheckpointError,
    checkpoint_folders,
    find_checkpoint,
    load_state,
    peft_file,
    relation_file,
    save_checkpoint,
    verify_folder,
    weights_writer,
)
from .files import OLD_PREFIX, TMP_PREFIX, atomic_write, atomic_write_text, final_name, remove, write_json
from .lock import LOCK_FILE, RunLock

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
WEIGHTS = "weights"
FINAL = "final"
EVAL = "eval"
EXPORT = "export"
SAMPLE_LOG = "samples-rank{rank}.txt"

log = logging.getLogger(__name__)


class RunFolderError(FileExistsError):
    """The run folder exists and holds files; the message names it and the way out."""


class UnfinishedRunError(FileNotFoundError):
    """Final weights were demanded (``require_final``) from a run that did not finish."""


def prepare_run_dir(path: str | Path, *, overwrite: bool = False) -> Path:
    """Create the run folder; refuse an existing non-empty one unless ``overwrite`` (it is never deleted)."""
    path = Path(path).expanduser()
    RunDir(path).check_new(overwrite=overwrite)
    path.mkdir(parents=True, exist_ok=True)
    return path


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

    @property
    def export_dir(self) -> Path:
        """Where ``infosam export`` writes by default (``export/``)."""
        return self.path / EXPORT

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
        """Write resume checkpoint ``checkpoints/step-<step>/`` (weights + state), keeping the ``keep`` newest;
        see :func:`infosam.checkpoints.save_checkpoint`."""
        return save_checkpoint(
            self.checkpoints_dir,
            step,
            weights_writer(student, peft_spec, relation),
            state,
            keep=keep,
            resume_hint=f"`infosam train --resume {self.path}`",
        )

    def latest_checkpoint(self) -> Path | None:
        """The newest intact resume checkpoint folder (:func:`infosam.checkpoints.find_checkpoint`), or ``None``."""
        return find_checkpoint(self.checkpoints_dir)

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
            checkpoint = find_checkpoint(self.checkpoints_dir)
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

    def relation_weights(self) -> Path | None:
        """The relation module trained to the end (``weights/final``; InfoSAM runs only), or ``None``."""
        path = relation_file(self.weights_dir())
        return path if path.is_file() else None

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
