"""A run folder as a source: its fine-tuned student, base SAM from the run's config (read once, by
:func:`infosam.load.resolve`) plus the saved PEFT weights (the newest, or the ones ``--weights`` names);
``teacher=True`` also builds the pretrained base it was trained from. :func:`load_run` is
:func:`infosam.load.open_model`'s run-folder form.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from segment_anything.modeling import Sam

from .base import ModelSource, OpenedModel, opener, with_attention
from .door import open_model

if TYPE_CHECKING:
    from ..config import Config


def load_run(
    run_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    require_final: bool = False,
) -> tuple[Config, Sam]:
    """The config and fine-tuned student of a run folder, in eval mode (:func:`open_model` of a run).

    Base SAM from the run's config (+ its SAM checkpoint), then the saved PEFT weights; the relation module is a
    training-time device and is not loaded.

    Args:
        run_dir: the run folder written by :func:`infosam.train.train`.
        checkpoint: base SAM weights to use instead of the path recorded in the run's config (moved files).
        weights: a ``peft.safetensors`` to load instead of :meth:`infosam.runs.RunDir.student_weights`'s choice
            (which warns when the run did not finish and names the weights it takes).
        device: where the student goes.
        require_final: refuse a run without intact final weights (:class:`infosam.runs.UnfinishedRunError`).

    Raises:
        FileNotFoundError: not a run folder, no trained weights, or the recorded SAM checkpoint moved.
        ValueError: the weights are damaged or hold NaN/inf.
    """
    from ..runs import RunDir

    path = Path(run_dir).expanduser()
    if not RunDir(path).is_run():
        raise FileNotFoundError(f"{path} is not a run folder (no {RunDir(path).config_file.name})")
    opened = open_model(
        path, checkpoint=checkpoint, weights=weights, device=device, require_final=require_final
    )
    return opened.config, opened.model


@opener("run")
def _open_run(source: ModelSource, teacher: bool) -> OpenedModel:
    """A run's student from its config (read by :func:`~infosam.load.resolve`) and its newest (or the given) PEFT
    weights."""
    from ..model import build_configured
    from ..peft import load_peft
    from ..runs import RunDir
    from ..sam.checkpoint import BUNDLED

    run = RunDir(source.path)
    config = with_attention(source.config, source.attention)
    if source.weights is None:
        weights = run.student_weights(require_final=source.require_final)
    else:
        weights = given_weights(source.weights)
    recorded = config.model.checkpoint
    if source.checkpoint is not None:
        config = copy.deepcopy(config)
        config.model.checkpoint = str(source.checkpoint)
    elif recorded is not None and recorded != BUNDLED and not _recorded_file(recorded):
        raise FileNotFoundError(
            f"base SAM checkpoint {recorded} (model.checkpoint in {run.config_file}) not found; "
            "pass --checkpoint with its new location"
        )
    student = build_configured(config)
    load_peft(weights, student)
    base = build_configured(config) if teacher else None
    description = run_description(run, weights, config)
    sam = {"name": config.model.name, "image_size": config.model.image_size}
    return OpenedModel(student, source, description, base, sam, config)


def given_weights(weights: str | Path) -> Path:
    """The PEFT weights file that ``--weights`` names: a ``peft.safetensors`` or a weights/checkpoint folder
    holding one (a run's ``weights/final``, ``checkpoints/step-000100``), checked against the folder's manifest.

    Raises:
        FileNotFoundError: a folder without ``peft.safetensors`` (the message names the folder).
        infosam.checkpoints.CheckpointError: the folder's files do not match its manifest.
    """
    from ..checkpoints import PEFT_FILE, peft_file, verify_folder
    from ..runs import FINAL, WEIGHTS

    path = Path(weights).expanduser()
    if path.is_dir():
        if not peft_file(path).is_file():
            raise FileNotFoundError(
                f"{path} is a folder without {PEFT_FILE}: pass a weights folder (a run's {WEIGHTS}/{FINAL}) "
                f"or a {PEFT_FILE} file"
            )
        verify_folder(path)
        return peft_file(path)
    verify_folder(path.parent)  # given weights inside a weights folder: checked against its manifest
    return path


def run_description(run, weights: Path, config: Config) -> dict:
    """What an evaluation of a run's student says of its model: the run folder, the weights file, whether the run
    finished, the SAM model and base checkpoint (``config``: the run's, with any new checkpoint location)."""
    return {
        "run": str(run.path),
        "weights": str(weights),
        "run_finished": run.is_finished(),
        "model": config.model.name,
        "checkpoint": config.model.checkpoint,
    }


def _recorded_file(checkpoint: str) -> bool:
    """Whether a run's recorded ``model.checkpoint`` (``$VARS`` expanded; an unset one counts as missing) exists."""
    from ..sam.checkpoint import CheckpointError, expand_path

    try:
        return expand_path(checkpoint).is_file()
    except CheckpointError:
        return False
