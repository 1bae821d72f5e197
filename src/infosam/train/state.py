"""Where a run stands and its resume checkpoints: :class:`Position`, the state a checkpoint holds (optimizer,
schedule, global RNG states, the objective's learned parts) and restoring it, so a resumed run ends bitwise where
an uninterrupted one does."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import checkpoints, runs
from .build import Parts

log = logging.getLogger(__package__)  # the run's log lines keep the name infosam.train


@dataclass
class Position:
    """Where training stands: optimizer steps done, epoch in progress (0-based), its batches consumed."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    evaluated: dict[int, dict] = field(default_factory=dict)
    """Test summaries by 1-based epoch."""


def restore(run: runs.RunDir, checkpoint: Path, parts: Parts) -> Position:
    """Load ``checkpoint`` of ``run`` into ``parts`` (the objective's learned parts, optimizer, schedule, then the
    global RNG states) and return where it stood."""
    state = run.load_state(checkpoint)
    objective = parts.objective
    if objective is not None and objective.keeps_resume_state:
        if "distill" not in state:
            raise checkpoints.CheckpointError(
                f"{checkpoint} holds no state of the distill.method objective (was it written by another method?)"
            )
        objective.load_state_dict(state["distill"])
    if parts.relation is not None:  # a learned part saved as a file of its own (InfoSAM's relation module)
        objective.load_saved(checkpoints.relation_file(checkpoint))
    parts.step.optimizer.load_state_dict(state["optimizer"])
    parts.step.scheduler.load_state_dict(state["scheduler"])
    checkpoints.set_rng_state(state["rng"])
    evaluated = {int(k): v for k, v in state["evaluated"].items()}
    position = Position(state["step"], state["epoch"], state["batch"], evaluated)
    log.info(
        "resuming %s from %s (step %d, epoch %d)",
        run.path,
        checkpoint.name,
        position.step,
        position.epoch + 1,
    )
    return position


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (a fresh run, after building)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_state(parts: Parts, position: Position, run: runs.RunDir) -> None:
    """Write a resume checkpoint of ``run`` at ``position`` (main process; the others wait)."""
    acc = parts.step.accelerator
    if acc.is_main_process:
        state = {
            "step": position.step,
            "epoch": position.epoch,
            "batch": position.batch,
            "evaluated": {str(k): v for k, v in position.evaluated.items()},
            "optimizer": parts.step.optimizer.state_dict(),
            "scheduler": parts.step.scheduler.state_dict(),
            "rng": checkpoints.rng_state(),
        }
        if parts.objective is not None and parts.objective.keeps_resume_state:
            # learned parts of a baseline objective (VID's variance, ...), for resume
            state["distill"] = {k: v.detach().cpu() for k, v in parts.objective.state_dict().items()}
        run.save_checkpoint(position.step, parts.student, parts.peft_spec, parts.relation, state)
    acc.wait_for_everyone()
