"""Fast attention equals Meta's encoder attention in outputs and gradients, in every mode, wrapped or not.

Tolerance: float32; every output and gradient may differ from Meta's by at most 2e-5 times the largest magnitude of
Meta's tensor (only the summation order differs; ViT-B-sized blocks measured ~4e-6).
"""

from __future__ import annotations

import pytest
import torch
from segment_anything.modeling.image_encoder import Attention
from torch import nn

from infosam.sam.attention import MODES, FastAttention, disable_fast_attention, enable_fast_attention

REL_TOL = 2e-5


def _randomise_rel_pos(model: nn.Module, seed: int = 1) -> None:
    # Meta zero-initialises the relative positions; random ones make the bias matter in the comparison.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, Attention):
                m.rel_pos_h.copy_(torch.randn(m.rel_pos_h.shape, generator=g))
                m.rel_pos_w.copy_(torch.randn(m.rel_pos_w.shape, generator=g))


def _output_and_grads(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x = x.clone().requires_grad_(True)
    y = module(x)
    params = dict(module.named_parameters())
    # A fixed random projection of the output, so every output element reaches the gradient differently.
    weight = torch.randn(y.shape, generator=torch.Generator().manual_seed(7))
    grads = torch.autograd.grad((y * weight).sum(), [x, *params.values()])
    return y.detach(), {"input": grads[0], **dict(zip(params, grads[1:], strict=True))}


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    err = (actual - expected).abs().max().item()
    bound = REL_TOL * max(expected.abs().max().item(), 1e-6)
    assert err <= bound, f"{what}: max abs error {err:.3g} > {bound:.3g}"


def _check_equal_to_meta(module: nn.Module, x: torch.Tensor, mode: str) -> None:
    disable_fast_attention(module)
    ref_out, ref_grads = _output_and_grads(module, x)
    assert enable_fast_attention(module, mode) > 0
    out, grads = _output_and_grads(module, x)
    _assert_close(out, ref_out, f"{mode} output")
    assert grads.keys() == ref_grads.keys()
    for name in ref_grads:
        _assert_close(grads[name], ref_grads[name], f"{mode} gradient of {name}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("block_index", [0, 1], ids=["windowed", "global"])
def test_tiny_blocks_match_meta(tiny_sam, mode, block_index):
    sam = tiny_sam()
    _randomise_rel_pos(sam)
    block = sam.image_encoder.blocks[block_index]
    assert (block.window_size > 0) == (block_index == 0)
    x = torch.randn(2, 8, 8, 32, generator=torch.Generator().manual_seed(3))
    _check_equal_to_meta(block, x, mode)


@pytest.mark.parametrize("mode", MODES)
def test_padded_windows_whole_encoder_match_meta(tiny_sam, mode):
    # 72 / 8 = 9 tokens a side: windows of 4 are padded to 12, the global blocks see 9x9.
    sam = tiny_sam(image_size=72)
    _randomise_rel_pos(sam)
    x = torch.randn(1, 3, 72, 72, generator=torch.Generator().manual_seed(4))
    _check_equal_to_meta(sam.image_encoder, x, mode)


@pytest.mark.parametrize("mode", MODES)
def test_vit_b_sized_global_attention_matches_meta(mode):
    torch.manual_seed(0)
    attn = Attention(768, num_heads=12, use_rel_pos=True, rel_pos_zero_init=False, input_size=(32, 32))
    x = torch.randn(1, 32, 32, 768, generator=torch.Generator().manual_seed(5))
    _check_equal_to_meta(attn, x, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("hw", [(6, 6), (6, 5)])
def test_interpolated_and_non_square_rel_pos_match_meta(mode, hw):
    # rel_pos sized for 8x8 but fed 6x6 / 6x5 tokens: Meta interpolates the tables; so must we (same helper).
    torch.manual_seed(0)
    attn = Attention(16, num_heads=2, use_rel_pos=True, rel_pos_zero_init=False, input_size=(8, 8))
    x = torch.randn(2, *hw, 16, generator=torch.Generator().manual_seed(6))
    _check_equal_to_meta(attn, x, mode)


def test_without_rel_pos_matches_meta():
    torch.manual_seed(0)
    attn = Attention(16, num_heads=2, use_rel_pos=False)
    x = torch.randn(2, 4, 4, 16, generator=torch.Generator().manual_seed(6))
    _check_equal_to_meta(attn, x, "fold")


class _Wrapper(nn.Module):
    """Like a PEFT wrapper: keeps the original module as ``base_layer`` and adds a delta."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.delta = nn.Linear(base_layer.proj.out_features, base_layer.proj.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.delta(x)


def test_wrapped_attention_is_found_and_matches_meta(tiny_sam):
    sam = tiny_sam()
    _randomise_rel_pos(sam)
    for block in sam.image_encoder.blocks:
        block.attn = _Wrapper(block.attn)
    assert enable_fast_attention(sam) == len(sam.image_encoder.blocks)
    assert all(isinstance(b.attn.base_layer, FastAttention) for b in sam.image_encoder.blocks)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    _check_equal_to_meta(sam.image_encoder, x, "fold")


def test_state_dict_unchanged_and_disable_restores_meta(tiny_sam):
    sam = tiny_sam()
    _randomise_rel_pos(sam)
    before = {k: v.clone() for k, v in sam.state_dict().items()}
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = sam.image_encoder(x)
    assert enable_fast_attention(sam) == 4  # encoder blocks only, not the decoder's attention
    after = sam.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert disable_fast_attention(sam) == 4
    assert all(type(b.attn) is Attention for b in sam.image_encoder.blocks)
    with torch.no_grad():
        assert torch.equal(sam.image_encoder(x), ref)


def test_unknown_mode_names_the_choices(tiny_sam):
    with pytest.raises(ValueError, match="fold, mask"):
        enable_fast_attention(tiny_sam(), mode="flash")
