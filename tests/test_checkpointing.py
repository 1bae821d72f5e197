"""Activation checkpointing of encoder blocks changes memory, never values: outputs and gradients stay equal."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.graph import saved_tensors_hooks

from infosam.peft import apply_peft
from infosam.sam.attention import enable_fast_attention
from infosam.sam.build import build_sam
from infosam.sam.checkpointing import disable_checkpointing, enable_checkpointing


def _grads(sam, x):
    sam.zero_grad(set_to_none=True)
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        y = sam.image_encoder(x)
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    grads = {n: p.grad.clone() for n, p in sam.named_parameters() if p.grad is not None}
    return y.detach(), grads, sum(saved)


@pytest.mark.parametrize("every", [1, 2])
def test_checkpointed_adapter_student_has_equal_outputs_and_gradients(tiny_sam, every):
    sam = tiny_sam()
    enable_fast_attention(sam)
    apply_peft(sam, "adapter+decoder")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    keys = list(sam.state_dict())
    ref_out, ref_grads, ref_saved = _grads(sam, x)
    assert ref_grads, "the adapter student should have trainable encoder parameters"

    assert enable_checkpointing(sam.image_encoder, every=every) == len(range(0, 4, every))
    out, grads, saved = _grads(sam, x)
    assert list(sam.state_dict()) == keys
    torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-6, atol=1e-7, msg=name)
    assert saved < ref_saved  # the point of it: fewer activations kept for backward

    assert disable_checkpointing(sam.image_encoder) == len(range(0, 4, every))
    assert all("forward" not in b.__dict__ for b in sam.image_encoder.blocks)


@pytest.mark.parametrize("methods", ["adapter+decoder", "lora"])
def test_checkpointed_tinyvit_student_has_equal_outputs_and_gradients(methods):
    torch.manual_seed(0)
    sam = build_sam("tiny_tinyvit")
    apply_peft(sam, methods)
    sam.train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ref_out, ref_grads, ref_saved = _grads(sam, x)
    assert enable_checkpointing(sam.image_encoder) == 5  # the attention blocks of stages 1..3: 1 + 3 + 1
    out, grads, saved = _grads(sam, x)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
    assert grads.keys() == ref_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-6, atol=1e-7, msg=name)
    assert saved < ref_saved
    assert disable_checkpointing(sam.image_encoder) == 5


def test_no_grad_runs_blocks_directly_and_bad_every_is_refused(tiny_sam):
    sam = tiny_sam()
    enable_checkpointing(sam.image_encoder)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = sam.image_encoder(x)
    disable_checkpointing(sam.image_encoder)
    with torch.no_grad():
        assert torch.equal(sam.image_encoder(x), y)
    with pytest.raises(ValueError, match="every"):
        enable_checkpointing(sam.image_encoder, every=0)
    with pytest.raises(TypeError, match="image encoder"):
        enable_checkpointing(sam, every=1)


@pytest.mark.parametrize("methods", ["lora+decoder", "adapter+decoder"])
def test_checkpointed_sam2_student_step_has_equal_loss_and_gradients(methods):
    """SAM 2's Hiera blocks (``image_encoder.trunk.blocks``, (B, H, W, C) -> same shape) are checkpointed like
    ViT's (was: a TypeError from train.activation_checkpointing with a sam2 model): a training step's loss and
    gradients stay equal."""
    from infosam.model import build_base, make_student
    from infosam.sam.specs import SPECS
    from infosam.step import Trainee

    size = SPECS["tiny_sam2"].image_size
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(2, 1, size, size)
    masks[:, :, 16:80, 24:96] = 1
    prompts = {"boxes": torch.tensor([[24.0, 16.0, 96.0, 80.0]] * 2)}
    results = []
    for checkpointing in (False, True):
        student = build_base("tiny_sam2", seed=0)
        make_student(student, methods, activation_checkpointing=checkpointing)
        student.train()
        blocks = student.image_encoder.trunk.blocks
        assert sum("forward" in b.__dict__ for b in blocks) == (len(blocks) if checkpointing else 0)
        trainee = Trainee(student, None)
        saved: list[int] = []
        with saved_tensors_hooks(lambda t, saved=saved: saved.append(t.numel()) or t, lambda t: t):
            loss = trainee(images, masks, prompts, None)["loss"]
        loss.backward()
        grads = {n: p.grad for n, p in student.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads, sum(saved)))
    (ref_loss, ref_grads, ref_saved), (loss, grads, saved) = results
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0)
    assert grads.keys() == ref_grads.keys() and any("trunk" in n for n in grads)
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-6, atol=1e-7, msg=name)
    assert saved < ref_saved
    assert disable_checkpointing(student.image_encoder) == len(student.image_encoder.trunk.blocks)
