"""TinyViT attention through scaled_dot_product_attention: the same outputs and gradients as the package's
forward (train and eval mode, LoRA inside, the bias trainable or not), state untouched, and undone exactly."""

from __future__ import annotations

import copy

import pytest
import torch

from infosam.model import build_base, make_student
from infosam.sam.tinyvit_attention import SdpaTinyViTAttention, disable_sdpa_attention, enable_sdpa_attention

# Measured (2026-11-29, float32): on tiny_tinyvit below outputs within 8.5e-7 and gradients within 1.5e-6 of their
# largest entry; on LiteMedSAM's stage 1-3 blocks at batch 4 within 5e-7 / 6e-7. The bound leaves about 7x.
REL_TOL = 1e-5


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("bias_trains", [True, False], ids=["bias-trains", "bias-frozen"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_sdpa_attention_matches_the_package_forward_and_gradients(mode, bias_trains):
    original = build_base("tiny_tinyvit", attention="meta", seed=0)
    make_student(original, "lora+decoder", {})
    for block in original.image_encoder.modules():
        if hasattr(block, "attention_biases"):
            # trainable: the bias's gradient flows through the mask (SDPA's math kernel); frozen (every PEFT
            # method here): the CPU flash kernel
            block.attention_biases.requires_grad_(bias_trains)
            with torch.no_grad():
                block.attention_biases.normal_()
    for p in original.parameters():
        if p.requires_grad:
            with torch.no_grad():
                p.add_(0.05 * torch.randn_like(p))  # LoRA's zero init would hide its path
    fast = copy.deepcopy(original)
    assert enable_sdpa_attention(fast) == 1 + 3 + 1  # tiny_tinyvit: the attention blocks of stages 1-3
    getattr(original, mode)()
    getattr(fast, mode)()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    weights = torch.randn(2, 32, 16, 16, generator=torch.Generator().manual_seed(2))
    outputs, grads = [], []
    for model in (original, fast):
        xi = x.clone().requires_grad_(True)
        out = model.image_encoder(xi)
        (out * weights).sum().backward()  # a random projection (the output is layer-normed: no square norm)
        outputs.append(out.detach())
        grads.append(
            {"input": xi.grad, **{n: p.grad for n, p in model.named_parameters() if p.grad is not None}}
        )
    assert _rel(outputs[1], outputs[0]) < REL_TOL
    assert grads[0].keys() == grads[1].keys()
    # eval mode reads the package's cached bias table ``ab``: no gradient to the biases there, in both
    assert any("attention_biases" in n for n in grads[0]) == (mode == "train" and bias_trains)
    assert any("lora" in n for n in grads[0])
    for name in grads[0]:
        assert _rel(grads[1][name], grads[0][name]) < REL_TOL, name


def test_switch_keeps_state_and_is_undone():
    model = build_base("tiny_tinyvit", attention="meta", seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    classes = [type(m) for m in model.modules()]
    n = enable_sdpa_attention(model)
    assert n > 0 and enable_sdpa_attention(model) == 0  # idempotent
    assert sum(isinstance(m, SdpaTinyViTAttention) for m in model.modules()) == n
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert disable_sdpa_attention(model) == n
    assert [type(m) for m in model.modules()] == classes


def test_frozen_bias_trains_through_the_cpu_flash_kernel():
    """The bias goes in as a 4-D (1, heads, N, N) mask: with a 3-D one PyTorch sends forward and backward to its
    math kernel (~2.7x slower at TinyViT's windows). Which kernel ran is read from the profiler."""
    model = build_base("tiny_tinyvit", seed=0)
    make_student(model, "lora+decoder", {})
    model.train()
    x = torch.randn(2, 3, 64, 64)
    with torch.profiler.profile() as prof:
        model.image_encoder(x).sum().backward()
    kernels = {e.key for e in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in kernels
    assert "aten::_scaled_dot_product_flash_attention_for_cpu_backward" in kernels
    assert "aten::_scaled_dot_product_attention_math" not in kernels


def test_training_routes_tinyvit_attention_through_sdpa_unless_meta():
    from infosam.config import load_config
    from infosam.train.build import base_model

    def switched(*overrides: str) -> bool:
        model = base_model(load_config(None, ["model.name=tiny_tinyvit", "data.path=unused", *overrides]))
        return any(isinstance(m, SdpaTinyViTAttention) for m in model.modules())

    assert switched() and not switched("model.attention=meta")
    # every use of a model (evaluation, predict, serve) builds it the same way: the same attention code
    assert any(isinstance(m, SdpaTinyViTAttention) for m in build_base("tiny_tinyvit").modules())
    assert not any(
        isinstance(m, SdpaTinyViTAttention) for m in build_base("tiny_tinyvit", attention="meta").modules()
    )
    assert enable_sdpa_attention(build_base("tiny", attention="meta")) == 0  # ViT has no TinyViT attention


def test_eval_of_a_tinyvit_run_uses_its_training_attention_and_scores_the_same(tmp_path, monkeypatch):
    """`infosam eval RUN_DIR` builds the run's model through build_base, as training did: the same SDPA attention
    for the same weights (before, only training switched it on), and the same scores as the run's last
    evaluation."""
    import json

    from infosam.config import load_config
    from infosam.data.synthetic import write_synthetic_dataset
    from infosam.evaluate import evaluate_run
    from infosam.load import open_model
    from infosam.train import train

    data = write_synthetic_dataset(tmp_path / "d", 4, domain="target")
    run = tmp_path / "run"
    overrides = ["model.name=tiny_tinyvit", "train.batch_size=2", "train.cpu=true", "infosam.enabled=false"]
    config = load_config(None, [f"data.path={data}", f"output={run}", *overrides])
    config.train.epochs, config.data.train_split, config.data.test_split = 1, "all", "all"
    config.eval.last_epochs = 1
    train(config)
    model = open_model(run).model
    assert any(isinstance(m, SdpaTinyViTAttention) for m in model.modules())
    _, summary = evaluate_run(run, data, "all", device="cpu")
    logged = json.loads((run / "eval" / "epoch-001.json").read_text())["summary"]
    for metric in ("IoU", "Dice", "S"):
        assert summary[metric] == pytest.approx(logged[metric], abs=1e-6), metric
