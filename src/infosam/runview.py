"""A finished or interrupted training run, seen from outside: what evaluation, the experiment runner and the report
read from a run folder. :func:`read_run` is the only place here that knows the folder's layout."""

from __future__ import annotations

import json
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
        from .predict import load_student

        return load_student(self.path, weights=weights, device=device)


def read_run(run_dir: str | Path) -> RunRecord:
    """Read a run folder written by :func:`infosam.train.train`.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run folder (no ``config.yaml``).
    """
    from . import runs
    from .train import PEFT_FILE, RELATION_FILE, resume_config

    path = Path(run_dir).expanduser()
    config = resume_config(path)
    final = path / "weights" / "final"
    epoch_weights = {
        int(p.parent.name.split("-")[1]): p for p in sorted((path / "weights").glob(f"epoch-*/{PEFT_FILE}"))
    }
    epoch_evals = {}
    for p in sorted((path / "eval").glob("epoch-*.json")):
        epoch_evals[int(p.stem.split("-")[1])] = json.loads(p.read_text(encoding="utf-8"))["summary"]
    return RunRecord(
        path=path,
        config=config,
        finished=(final / PEFT_FILE).is_file() and (path / runs.SUMMARY_FILE).is_file(),
        resumable=(path / runs.CHECKPOINTS / runs.LATEST).is_file(),
        final_weights=final / PEFT_FILE if (final / PEFT_FILE).is_file() else None,
        epoch_weights=epoch_weights,
        epoch_evals=epoch_evals,
        relation_weights=final / RELATION_FILE if (final / RELATION_FILE).is_file() else None,
    )
