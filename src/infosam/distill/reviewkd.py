"""ReviewKD (Chen et al., "Distilling Knowledge via Knowledge Review", CVPR 2021) over the encoder's intermediate
feature levels (:mod:`infosam.distill.features`), shallow to deep: s_1..s_L and t_1..t_L.

Attention-based fusion (ABF) runs from the deepest level up: ``x_L = conv1(s_L)``; for a shallower level,
``x_l = conv1(s_l)`` fused with the residual ``r`` of the level below (resized, nearest) through a two-channel
attention map ``a = sigmoid(att(cat[x_l, r]))``: ``x_l <- a_0 * x_l + a_1 * r``; each level's output is
``conv2(x_l)`` (3x3) at the teacher level's width, and ``x_l`` is the residual passed up. The hierarchical context
loss (HCL) compares each output with its teacher level at full size and pooled to 4, 2, 1 (levels finer than the
map), weights halving (1, 0.5, 0.25, 0.125) and normalised by their sum::

    HCL(o, t) = sum_k w_k MSE(pool_k(o), pool_k(t)) / sum_k w_k,   L = sum_l HCL(o_l, t_l)

as the authors' code does. *Ours*: no BatchNorm after conv1/conv2 (batches of 2-4), the fused width is
``min(256, narrowest level)``. ABF's convolutions are this module's parameters (they train and resume).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .objective import Objective, ObjectiveOptions, feature_pairs


def hcl(output: Tensor, target: Tensor) -> Tensor:
    """The hierarchical context loss of one level (scalar); maps (B, C, h, w) of one shape."""
    h = output.shape[-2]
    loss, weight, total = F.mse_loss(output, target), 1.0, 1.0
    for size in (4, 2, 1):
        if size >= h:
            continue
        weight /= 2
        loss = loss + weight * F.mse_loss(
            F.adaptive_avg_pool2d(output, size), F.adaptive_avg_pool2d(target, size)
        )
        total += weight
    return loss / total


class ABF(nn.Module):
    """One attention-based fusion step: (B, C_in, h, w) [+ residual (B, mid, h', w')] -> output, residual."""

    def __init__(self, in_channels: int, mid: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, mid, 1)
        self.att = nn.Conv2d(2 * mid, 2, 1) if fuse else None
        self.conv2 = nn.Conv2d(mid, out_channels, 3, padding=1)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self.conv1(x)
        if self.att is not None and residual is not None:
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            a = torch.sigmoid(self.att(torch.cat([x, residual], dim=1)))
            x = x * a[:, 0:1] + residual * a[:, 1:2]
        return self.conv2(x), x


class ReviewKD(Objective):
    """``reviewkd``: ``weight * sum_l HCL(ABF outputs_l, t_l)``."""

    name = "reviewkd"
    needs_features = True

    def __init__(self, options: ObjectiveOptions, *, dims: Sequence[int], **_) -> None:
        super().__init__(options)
        mid = min(256, *dims)
        deepest = len(dims) - 1
        self.fusion = nn.ModuleList(ABF(c, mid, c, fuse=i != deepest) for i, c in enumerate(dims))

    def forward(self, teacher, student, masks: Tensor) -> dict[str, Tensor]:
        t_maps, s_maps = feature_pairs(teacher, student)
        outputs: list[Tensor] = [None] * len(s_maps)  # type: ignore[list-item]
        residual = None
        for level in reversed(range(len(s_maps))):
            outputs[level], residual = self.fusion[level](s_maps[level], residual)
        loss = sum(hcl(o, t) for o, t in zip(outputs, t_maps, strict=True))
        return {"reviewkd": loss, "total": self.options.weight * loss}
