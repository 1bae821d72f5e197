"""A finished or interrupted training run, seen from outside: what evaluation, the experiment runner and the report
read from a run folder, gathered through :class:`infosam.runs.RunDir` (which owns the folder's layout)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from segment_anything.modeling import Sam

from .config import Config


@dataclass
class RunRecord:
    """What a run folder holds (paths are ``None`` / empty when absent)."""

    path: Path
    config: Config
    """The config the run was started with."""
    finished: bool
    """Training ended: final weights and summary are written."""
    resumable: bool
    """A resume checkpoint exists (an interrupted run continues from it)."""
    final_weights: Path | None = None
    """PEFT weights at the end of training."""
    epoch_weights: dict[int, Path] = field(default_factory=dict)
    """PEFT weights after each evaluated epoch (1-based)."""
    epoch_evals: dict[int, dict] = field(default_factory=dict)
    """Test-split summary after each evaluated epoch (the run's own evaluation)."""
    relation_weights: Path | None = None
    """The trained relation module at the end of training (InfoSAM runs only)."""

    def student(self, *, weights: Path | None = None, device: str | torch.device = "cpu") -> Sam:
        """The trained student (base SAM + PEFT ``weights``, default: the newest the run holds), in eval mode."""
        from .model import load_run

        return load_run(self.path, weights=weights, device=device)[1]


def read_run(run_dir: str | Path) -> RunRecord:
    """Read a run folder written by :func:`infosam.train.train`.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run folder (no ``config.yaml``).
    """
    from .checkpoints import peft_file, relation_file
    from .runs import RunDir

    run = RunDir(run_dir)
    final = run.weights_dir()
    return RunRecord(
        path=run.path,
        config=run.read_config(),
        finished=run.is_finished(),
        resumable=run.is_resumable(),
        final_weights=peft_file(final) if peft_file(final).is_file() else None,
        epoch_weights=run.epoch_weights(),
        epoch_evals=run.evaluations(),
        relation_weights=relation_file(final) if relation_file(final).is_file() else None,
    )
