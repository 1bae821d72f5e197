"""Exact, memory-lean attention for SAM's image encoder, swapped in without editing Meta's code.

Meta's ``image_encoder.Attention`` materialises the whole attention matrix and adds the decomposed relative
positions to it: ``attn = scale * q k^T + rel_h[i, kh(j)] + rel_w[i, kw(j)]`` with ``rel_h = q Rh`` (per query and
key row) and ``rel_w = q Rw`` (per query and key column). For a ViT-B global block at 1024x1024 that is
12 x 4096 x 4096 floats (0.8 GB) per image, several times over counting the softmax and its backward.

Two ways to hand the same maths to ``torch.nn.functional.scaled_dot_product_attention`` (SDPA):

- ``"fold"`` (default): the bias is folded exactly into the dot product. With
  ``q' = [scale * q, rel_h_i, rel_w_i]`` and ``k' = [k, onehot(kh(j)), onehot(kw(j))]``,
  ``q' . k' = scale * q . k + rel_h[i, kh(j)] + rel_w[i, kw(j)]``; SDPA runs with ``scale=1`` and ``v`` padded with
  zeros to the width of ``q'`` (fused kernels want one head width), and the padding is sliced off the output.
  No (HW x HW) tensor exists in forward or backward: on CPU this runs PyTorch's flash kernel
  (``_scaled_dot_product_flash_attention_for_cpu``), on CUDA the flash or memory-efficient kernel.
- ``"mask"``: the bias as an additive float ``attn_mask`` of shape (B, heads, HW, HW). Still one HW x HW tensor per
  head; when the bias needs a gradient, CPU SDPA falls back to its math kernel (no saving in memory).

Why ``"fold"`` is the default (``benchmarks/bench_attention.py``, 2026-11-26, shared 2-core AVX512 CPU, torch 2.14,
one thread, process CPU time, median of 3; one ViT-B global attention: dim 768, 12 heads, 64x64 tokens, batch 1,
random rel_pos; forward + backward with gradients for input, qkv, proj and rel_pos):

    mode   fwd+bwd   peak growth   no-grad fwd
    Meta   5.7 s     2328 MiB      2.8 s
    fold   7.4 s      348 MiB      2.1 s   (CPU flash kernel, forward and backward)
    mask   5.9 s     2448 MiB      1.5 s   (math kernel when the bias needs a gradient, flash under no_grad)

Only ``fold`` removes the HW x HW memory (6.7x less here), which is what lets batch 4 at 1024 fit; its price on
CPU is ~1.3x time in forward + backward (the folded head is 64 + 64 + 64 wide instead of 64), while the teacher's
no-grad forward gets ~1.3x faster. ``mask`` saves nothing in training on CPU. On GPUs both go to fused kernels.

Outputs and gradients equal Meta's within float32 rounding (tests: 2e-5 of the largest magnitude; ViT-B-sized
blocks measure ~4e-7): only the summation order differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from torch import Tensor, nn

MODES = ("fold", "mask")
DEFAULT_MODE = "fold"


class FastAttention(Attention):
    """Meta's encoder ``Attention`` with its forward computed by SDPA (same parameters, same state-dict keys).

    Instances are never built directly: :func:`enable_fast_attention` swaps the class of existing
    ``Attention`` modules, and :func:`disable_fast_attention` swaps it back.
    """

    _infosam_mode: str = DEFAULT_MODE

    def forward(self, x: Tensor) -> Tensor:
        """x (B, H, W, dim) -> (B, H, W, dim), as Meta's ``Attention.forward``."""
        B, H, W, _ = x.shape
        # (3, B, heads, HW, head_dim): same channel split as Meta's reshape.
        q, k, v = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if not self.use_rel_pos:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        elif self._infosam_mode == "fold":
            out = _folded_attention(q, k, v, *self._rel_terms(q, H, W), scale=self.scale)
        else:
            out = _masked_attention(q, k, v, *self._rel_terms(q, H, W), scale=self.scale)
        # (B, heads, HW, head_dim) -> (B, H, W, heads * head_dim): Meta's channel order (head-major).
        return self.proj(out.transpose(1, 2).reshape(B, H, W, -1))

    def _rel_terms(self, q: Tensor, H: int, W: int) -> tuple[Tensor, Tensor]:
        """rel_h (B, heads, HW, H) and rel_w (B, heads, HW, W): Meta's decomposed terms for every query."""
        Rh = get_rel_pos(H, H, self.rel_pos_h)  # (H, H, head_dim), Meta's own lookup/interpolation
        Rw = get_rel_pos(W, W, self.rel_pos_w)  # (W, W, head_dim)
        B, heads, _, dim = q.shape
        r_q = q.reshape(B, heads, H, W, dim)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, Rh).reshape(B, heads, H * W, H)
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, Rw).reshape(B, heads, H * W, W)
        return rel_h, rel_w


def _folded_attention(
    q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor, *, scale: float
) -> Tensor:
    """softmax(scale q k^T + bias) v without an (HW x HW) tensor, bias folded into extra head channels.

    q, k, v (B, heads, L, d) with L = H * W; rel_h (B, heads, L, H); rel_w (B, heads, L, W) -> (B, heads, L, d).
    """
    B, heads, L, d = q.shape
    H, W = rel_h.shape[-1], rel_w.shape[-1]
    key_rows = torch.arange(L, device=q.device)
    onehot_h = F.one_hot(key_rows // W, H).to(q.dtype)  # (L, H): 1 at the key's row kh(j)
    onehot_w = F.one_hot(key_rows % W, W).to(q.dtype)  # (L, W): 1 at the key's column kw(j)
    q_folded = torch.cat([q * scale, rel_h, rel_w], dim=-1)
    k_folded = torch.cat([k, onehot_h.expand(B, heads, L, H), onehot_w.expand(B, heads, L, W)], dim=-1)
    v_padded = F.pad(v, (0, H + W))
    return F.scaled_dot_product_attention(q_folded, k_folded, v_padded, scale=1.0)[..., :d]


def _masked_attention(
    q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor, *, scale: float
) -> Tensor:
    """softmax(scale q k^T + bias) v with the bias as an additive (B, heads, L, L) float mask; shapes as above."""
    B, heads, L, _ = q.shape
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(B, heads, L, L)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)


def _encoder_attentions(model: nn.Module) -> list[nn.Module]:
    # isinstance finds the modules wherever PEFT wrappers moved them (e.g. under ``base_layer``).
    return [m for m in model.modules() if isinstance(m, Attention)]


def enable_fast_attention(model: nn.Module, mode: str = DEFAULT_MODE) -> int:
    """Compute every SAM encoder ``Attention`` in ``model`` with SDPA; returns how many modules were switched.

    ``mode`` is ``"fold"`` (exact bias fold, no HW x HW tensor; the default, see the module docstring) or
    ``"mask"`` (bias as a float attention mask). Parameters, buffers and state-dict keys are untouched; calling it
    again changes the mode. The mask decoder's attention (another class) is left alone.
    """
    if mode not in MODES:
        raise ValueError(f"unknown fast attention mode {mode!r}; valid modes: {', '.join(MODES)}")
    modules = _encoder_attentions(model)
    for module in modules:
        module.__class__ = FastAttention
        module._infosam_mode = mode
    return len(modules)


def disable_fast_attention(model: nn.Module) -> int:
    """Restore Meta's ``Attention.forward`` on every module :func:`enable_fast_attention` switched; returns the count."""
    modules = [m for m in _encoder_attentions(model) if isinstance(m, FastAttention)]
    for module in modules:
        module.__class__ = Attention
        module.__dict__.pop("_infosam_mode", None)
    return len(modules)
