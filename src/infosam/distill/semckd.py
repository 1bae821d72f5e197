"""SemCKD (Chen et al., "Cross-Layer Distillation with Semantic Calibration", AAAI 2021) over the encoder's
intermediate feature levels (:mod:`infosam.distill.features`: ViT-B blocks 2, 5, 8, 11; TinyViT's stage ends).

Every student level i may learn from every teacher level j, with a per-sample attention that says which::

    q_i = W_q,i(GAP(s_i)),  k_j = W_k,j(GAP(t_j))           (d = 128-wide embeddings, linear maps)
    alpha_ij = softmax_j(q_i . k_j / sqrt(d))               (per sample)
    L = mean_b sum_i sum_j alpha_bij * MSE_b(P_ij(pool_j(s_i)), t_j) / n_levels

``P_ij`` a 1x1 convolution from student level i's width to teacher level j's, ``pool_j`` adaptive average pooling
to teacher level j's resolution (bilinear when it is finer). *Deviations from the authors' code, both ours*: the
query and key come from globally pooled features instead of the batch x batch similarity rows (whose width ties the
layers to the batch size), and ``P_ij`` is one 1x1 convolution instead of a conv-BN-ReLU stack (BatchNorm over a
batch of 2-4 is noise). Projections, queries and keys are this module's parameters (they train and resume).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .objective import Objective, ObjectiveOptions, feature_pairs

ATTENTION_DIM = 128


def resize_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Adaptive average pooling to a coarser ``size``, bilinear to a finer one, identity to the same."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def semckd_loss(
    teacher: Sequence[Tensor], projected: Sequence[Sequence[Tensor]], attention: Tensor
) -> Tensor:
    """``mean_b sum_ij alpha_bij MSE_b(projected[i][j], teacher[j]) / n_student_levels`` (scalar).

    Args:
        teacher: n_t maps (B, C_j, h_j, w_j).
        projected: n_s lists of n_t maps, ``projected[i][j]`` shaped like ``teacher[j]``.
        attention: (B, n_s, n_t), rows summing to 1.
    """
    errors = torch.stack(
        [
            torch.stack([(p - t).square().flatten(1).mean(1) for p, t in zip(row, teacher, strict=True)], 1)
            for row in projected
        ],
        dim=1,
    )  # (B, n_s, n_t)
    return (attention * errors).sum(dim=(1, 2)).mean() / len(projected)


class SemCKD(Objective):
    """``semckd``: ``weight * semckd_loss`` over the feature taps."""

    name = "semckd"
    needs_features = True

    def __init__(self, options: ObjectiveOptions, *, dims: Sequence[int], **_) -> None:
        super().__init__(options)
        self.query = nn.ModuleList(nn.Linear(c, ATTENTION_DIM) for c in dims)
        self.key = nn.ModuleList(nn.Linear(c, ATTENTION_DIM) for c in dims)
        self.project = nn.ModuleList(nn.ModuleList(nn.Conv2d(c_s, c_t, 1) for c_t in dims) for c_s in dims)

    def forward(self, teacher, student, masks: Tensor) -> dict[str, Tensor]:
        t_maps, s_maps = feature_pairs(teacher, student)
        q = torch.stack([w(s.mean(dim=(2, 3))) for w, s in zip(self.query, s_maps, strict=True)], 1)
        k = torch.stack([w(t.mean(dim=(2, 3))) for w, t in zip(self.key, t_maps, strict=True)], 1)
        attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(ATTENTION_DIM), dim=-1)
        projected = [
            [conv(resize_to(s, t.shape[-2:])) for conv, t in zip(row, t_maps, strict=True)]
            for row, s in zip(self.project, s_maps, strict=True)
        ]
        loss = semckd_loss(t_maps, projected, attention)
        return {"semckd": loss, "total": self.options.weight * loss}
