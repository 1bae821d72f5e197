"""TinyViT's windowed attention through PyTorch's ``scaled_dot_product_attention``, its bias passed as the mask.

The packages' ``Attention.forward`` computes ``softmax(scale * q k^T + B) v`` with explicit matmuls, where ``B`` is
the learned per-head bias of the relative offset between two window positions (``attention_biases`` gathered by
``attention_bias_idxs``; cached as ``ab`` in eval mode). :class:`SdpaTinyViTAttention` computes the same function
with one ``scaled_dot_product_attention`` call and ``B`` as its float attention mask (same scale, same
q/k/v split). It is installed by swapping the class of existing instances (:func:`enable_sdpa_attention`), so
parameters, buffers, state-dict keys and any PEFT wrapper inside (LoRA on ``qkv``) are untouched; the package's
class is never edited. Outputs and gradients match the original within float rounding (tested).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .swap import swap_in, swap_out


def _is_tinyvit_attention(module: nn.Module) -> bool:
    return (
        hasattr(module, "attention_biases")
        and hasattr(module, "attention_bias_idxs")
        and hasattr(module, "qkv")
    )


class SdpaTinyViTAttention(nn.Module):
    """Mixin class swapped onto a TinyViT ``Attention`` instance: the same forward through SDPA.

    Never built directly; :func:`enable_sdpa_attention` makes each instance an instance of a subclass of its own
    class and this one.
    """

    def forward(self, x: Tensor) -> Tensor:
        """x (B, N, C) tokens of one window each -> (B, N, C)."""
        batch, tokens, _ = x.shape
        x = self.norm(x)
        q, k, v = (
            self.qkv(x).view(batch, tokens, self.num_heads, -1).split([self.key_dim, self.key_dim, self.d], 3)
        )
        bias = self.attention_biases[:, self.attention_bias_idxs] if self.training else self.ab
        # (1, heads, N, N), not (heads, N, N): PyTorch's CPU flash kernel takes a 4-D mask only (a 3-D one sends
        # forward and backward to the math kernel, ~2.7x slower at TinyViT's 14 x 14 windows); same broadcast.
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=bias.to(q.dtype).unsqueeze(0),
            scale=self.scale,
        )
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, self.dh))


def enable_sdpa_attention(model: nn.Module) -> int:
    """Route every TinyViT attention module in ``model`` through SDPA; returns how many were switched."""
    return swap_in(model, SdpaTinyViTAttention, _is_tinyvit_attention, "Sdpa")


def disable_sdpa_attention(model: nn.Module) -> int:
    """Undo :func:`enable_sdpa_attention`; returns how many modules were restored."""
    return swap_out(model, SdpaTinyViTAttention)
