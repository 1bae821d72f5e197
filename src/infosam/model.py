"""Assembly of teacher and student from a config: build_sam -> load_checkpoint -> fast attention -> apply_peft
(-> activation checkpointing of the student's encoder blocks, when asked).

Teacher and student are built the same way from the same seed, so without a checkpoint (tests) they still start
from identical weights; they differ only in PEFT, gradients and eval mode.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import Sam

from .config import Config, ModelConfig
from .peft import PeftSpec, apply_peft
from .sam.attention import enable_fast_attention
from .sam.checkpointing import enable_checkpointing


def build_base(model: ModelConfig, *, seed: int) -> Sam:
    """The pretrained SAM of ``model`` (random weights from ``seed`` when it names no checkpoint)."""
    from .sam.build import build_sam

    overrides = {} if model.image_size is None else {"image_size": model.image_size}
    torch.manual_seed(seed)  # fixes the random initialisation of whatever the checkpoint does not cover
    sam = build_sam(model.name, checkpoint=model.checkpoint, **overrides)
    if model.attention != "meta":
        enable_fast_attention(sam, mode=model.attention)
    return sam


def build_teacher(config: Config) -> Sam:
    """The frozen teacher: pretrained SAM in eval mode, no parameter requires a gradient."""
    teacher = build_base(config.model, seed=config.train.seed)
    teacher.requires_grad_(False)
    return teacher.eval()


def build_student(config: Config) -> tuple[Sam, PeftSpec]:
    """The student: the same pretrained SAM with ``config.peft`` applied (only PEFT parameters train)."""
    student = build_base(config.model, seed=config.train.seed)
    spec = apply_peft(student, config.peft.methods, config.peft.options)
    if config.train.activation_checkpointing:  # after PEFT: it checkpoints the blocks' forward as wrapped
        enable_checkpointing(student.image_encoder)
    return student, spec
