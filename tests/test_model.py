"""Assembly of teacher and student from a config: attention choice and activation checkpointing are honoured."""

from __future__ import annotations

import pytest
import torch
from segment_anything.modeling.image_encoder import Attention

from infosam.config import ConfigError, load_config
from infosam.model import build_base, make_student, make_teacher
from infosam.sam.attention import FastAttention
from infosam.sam.forward import sam_forward

BOXES = torch.tensor([[8.0, 8.0, 40.0, 48.0], [4.0, 10.0, 60.0, 30.0]])


def _config(*overrides: str):
    return load_config(None, ["model.name=tiny", "data.path=unused", *overrides])


def _base(config):
    m = config.model
    return build_base(m.name, checkpoint=m.checkpoint, attention=m.attention, seed=config.train.seed)


def build_teacher(config):
    return make_teacher(_base(config))


def build_student(config):
    student = _base(config)
    spec = make_student(
        student,
        config.peft.methods,
        config.peft.options,
        activation_checkpointing=config.train.activation_checkpointing,
    )
    return student, spec


def _attention_classes(model) -> set[type]:
    return {type(m) for m in model.image_encoder.modules() if isinstance(m, Attention)}


def test_attention_option_selects_the_implementation_and_keeps_the_function():
    fold = build_teacher(_config())
    meta = build_teacher(_config("model.attention=meta"))
    assert _attention_classes(fold) == {FastAttention}
    assert _attention_classes(meta) == {Attention}
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = sam_forward(fold, images, boxes=BOXES)
        b = sam_forward(meta, images, boxes=BOXES)
    assert torch.allclose(a.low_res_logits, b.low_res_logits, atol=1e-5)
    assert torch.allclose(a.mask_tokens, b.mask_tokens, atol=1e-5)


def test_unknown_attention_is_refused_naming_the_option():
    with pytest.raises(ConfigError, match=r"model\.attention"):
        _config("model.attention=flash")


def test_activation_checkpointing_gives_the_same_gradients():
    grads = []
    for flag in ("false", "true"):
        student, _ = build_student(_config(f"train.activation_checkpointing={flag}"))
        checkpointed = any("forward" in b.__dict__ for b in student.image_encoder.blocks)
        assert checkpointed == (flag == "true")
        images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        sam_forward(student, images, boxes=BOXES).low_res_logits.square().mean().backward()
        # Parameters the logits do not depend on (IoU head, multimask tokens) keep grad None in both runs.
        grads.append({n: p.grad for n, p in student.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert any(".adapter." in name for name in grads[0])  # the encoder's PEFT parameters are reached
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name
