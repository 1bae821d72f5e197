"""What a run tells while it runs: metrics.csv rows and TensorBoard scalars, the epoch-end line with its time left,
the progress bar, and ``summary.json`` at the end."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor, nn

from .. import runs
from ..config import Config
from ..metrics import METRIC_NAMES, best_of
from ..peft.registry import aux_loss_modules
from .state import Position

METRIC_FIELDS = ["step", "epoch", "loss", "seg", "relation", "distill", "infosam", "lr", "images_per_s"]
BALANCE_FIELD = "balance"
"""The column of the PEFT layers' own training loss (Conv-LoRA's load balancing), added to the step's loss; in
metrics.csv (before ``lr``) only for a student that has such layers."""


def metric_fields(student: nn.Module, *, stats: tuple[str, ...] = ()) -> list[str]:
    """metrics.csv's columns for ``student``: :data:`METRIC_FIELDS`, with :data:`BALANCE_FIELD` when its PEFT
    layers keep a loss of their own (:func:`infosam.peft.registry.aux_loss_modules`), so every term of the
    logged ``loss`` has its column, and the objective's ``stats`` at the end (with InfoSAM the relation maps'
    statistics, :data:`infosam.distill.loss.RELATION_STATS`: S(r_t), S(r_s), I(r_t; r_s), ...)."""
    fields = list(METRIC_FIELDS)
    if aux_loss_modules(student):
        at = fields.index("lr")
        fields = [*fields[:at], BALANCE_FIELD, *fields[at:]]
    return [*fields, *stats]


def run_summary(config: Config, position: Position) -> dict:
    """summary.json: the reported epoch (the last evaluated one), every evaluated epoch, and the best of each."""
    evaluated = dict(sorted(position.evaluated.items()))
    reported = max(evaluated) if evaluated else None
    return {
        "reported_epoch": reported,
        "reported_rule": "the last evaluated epoch (the paper evaluates the last five epochs, reports the last)",
        "reported": evaluated.get(reported) if reported is not None else None,
        "paper_metrics": config.eval.metrics or list(METRIC_NAMES),
        "epochs": {str(k): v for k, v in evaluated.items()},
        "best": best_of(evaluated),
        "steps": position.step,
    }


def reduce_terms(terms: list[dict[str, Tensor]], acc: Accelerator) -> dict[str, float]:
    """The batches' terms as one float each, averaged over the batches and the processes; a ``*_min`` / ``*_max``
    statistic takes the smallest / largest batch value (this process's)."""
    out = {}
    for name in terms[0]:
        values = torch.stack([t[name].float() for t in terms])
        if name.endswith("_min"):
            out[name] = float(values.min())
        elif name.endswith("_max"):
            out[name] = float(values.max())
        else:
            out[name] = float(acc.reduce(values.mean().to(acc.device), reduction="mean"))
    return out


def metrics_row(
    window: list[dict[str, Tensor]],
    acc: Accelerator,
    position: Position,
    epoch: int,
    lr: float,
    seconds: float,
    batch_size: int,
) -> dict:
    row: dict = {"step": position.step, "epoch": epoch + 1, "lr": lr}
    row.update(reduce_terms(window, acc))
    row["images_per_s"] = len(window) * batch_size * acc.num_processes / max(seconds, 1e-9)
    return row


class EpochLog:
    """The line ``infosam train`` logs at each epoch end: the epoch's mean loss terms (with InfoSAM, the
    relation's entropy S(r_t) and I(r_t; r_s) in bits, so a user sees what L_r and L_d do), its time, and the
    time left for training at that pace (evaluations not counted)."""

    def __init__(self, config: Config, batches: int, position: Position) -> None:
        self.epochs = config.train.epochs
        self.steps_per_epoch = math.ceil(batches / config.train.grad_accum)
        self.rows: list[dict[str, float]] = []
        self.started = time.perf_counter()
        self.first_step = position.step

    def add(self, row: dict[str, float]) -> None:
        self.rows.append(row)

    EARLY_STEPS = 5
    """After this many steps of a run (or of a resumed run), one line gives a first pace and time left."""

    def early_line(self, step: int) -> str | None:
        """The first estimate, once: after :data:`EARLY_STEPS` steps, long before the first epoch ends (a CPU
        epoch can take many minutes). Those steps fill the caches when they are on, so it errs long."""
        if step - self.first_step != self.EARLY_STEPS or len(self.rows) < self.EARLY_STEPS:
            return None
        pace = (time.perf_counter() - self.started) / len(self.rows)
        left = self.epochs * self.steps_per_epoch - step
        return (
            f"first {self.EARLY_STEPS} steps: {pace:.1f} s/step; training left ~{clock(left * pace)} at that pace "
            "(steps that fill caches are slower, so this errs long)"
        )

    def line(self, epoch: int) -> str:
        seconds = time.perf_counter() - self.started
        mean = {k: float(np.mean([r[k] for r in self.rows])) for k in self.rows[0]} if self.rows else {}
        parts = [f"epoch {epoch}/{self.epochs}", f"loss {mean.get('loss', math.nan):.4f}"]
        for key, label in (("seg", "L_seg"), ("relation", "L_r"), ("distill", "L_d")):
            if key in mean:
                parts.append(f"{label} {mean[key]:+.4f}")
        if "s_rt" in mean:
            parts.append(f"S(r_t) {mean['s_rt']:.3f} bit, I(r_t; r_s) {mean['i_rt_rs']:.3f} bit")
        steps = len(self.rows)
        left = (self.epochs - epoch) * self.steps_per_epoch
        pace = seconds / steps if steps else math.nan
        parts.append(f"{clock(seconds)} ({pace:.1f} s/step), training left ~{clock(left * pace)}")
        self.rows, self.started = [], time.perf_counter()
        return "; ".join(parts)


def clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def tensorboard(run: runs.RunDir, step: int):
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events a killed run wrote after its last checkpoint.
    return SummaryWriter(str(run.tensorboard_dir), purge_step=step or None)


def write_tensorboard(writer, row: dict, step: int, group: str = "train") -> None:
    for name, value in row.items():
        if name not in ("step", "epoch"):
            writer.add_scalar(f"{group}/{name}", value, step)
    writer.flush()


def bar_label(config: Config, epoch: int) -> str:
    """The progress bar's label: the first epoch of a cached run fills the caches, 2-3x slower than the epochs that
    read them, so the ETA shown during it (extrapolated from cold steps) is that much too long; say so. Later
    epochs' ETA follows tqdm's moving average of the warm steps."""
    if config.cache.enabled and epoch == 0 and config.train.epochs > 1:
        return (
            "train (epoch 1 fills the caches: slower than later epochs, so the ETA is too long until epoch 2)"
        )
    return "train"


def progress_bar(batches_per_epoch: int, t, done: int):
    from tqdm.auto import tqdm

    total = math.ceil(batches_per_epoch / t.grad_accum) * t.epochs
    return tqdm(total=total, initial=done, unit="step", desc="train", dynamic_ncols=True)
