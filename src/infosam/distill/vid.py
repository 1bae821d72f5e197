"""VID (Ahn et al., "Variational Information Distillation for Knowledge Transfer", CVPR 2019) on the image
embeddings.

The mutual information between teacher features t and student features s is bounded from below by a Gaussian
variational likelihood ``q(t | s) = N(t; mu(s), sigma^2)``, with ``mu`` a small 1x1-convolution regressor and one
learned variance per channel, ``sigma_c^2 = softplus(alpha_c) + eps``. Maximising the bound is minimising::

    L = mean_{b, c, positions} [ (t - mu(s))^2 / (2 sigma_c^2) + log(sigma_c) ]

(the constant ``log sqrt(2 pi)`` dropped; ``log sigma = log(sigma^2) / 2``, as in the paper's eq. 6 and the
authors' code). ``mu`` is conv1x1 -> ReLU -> conv1x1 -> ReLU -> conv1x1 (C -> C, the width of the embeddings) and
``alpha`` starts where ``sigma^2 = 5`` (the paper's ``init_pred_var``), eps = 1e-5. Regressor and variance are this
module's parameters: they train with the student and are saved in resume checkpoints. Written here (torchdistill's
``VIDLoss`` is the same formula; it is not a dependency) and tested against NumPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .objective import Objective, ObjectiveOptions


def vid_nll(target: Tensor, mean: Tensor, variance: Tensor) -> Tensor:
    """``mean((target - mean)^2 / (2 var) + log(var) / 2)`` with ``variance`` (C,) broadcast over (B, C, h, w)."""
    var = variance.view(1, -1, *([1] * (target.dim() - 2)))
    return torch.mean((target - mean) ** 2 / (2 * var) + 0.5 * torch.log(var))


def regressor(channels: int) -> nn.Sequential:
    """``mu``: three 1x1 convolutions C -> C with ReLUs between."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 1),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 1),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 1),
    )


@dataclass(frozen=True)
class VIDOptions(ObjectiveOptions):
    init_variance: float = 5.0
    """Starting per-channel variance sigma^2 (the paper's init_pred_var)."""


class GaussianHead(nn.Module):
    """``mu(s)`` and the per-channel variance ``softplus(alpha) + eps`` of VID (shared with IBD)."""

    EPS = 1e-5

    def __init__(self, channels: int, init_variance: float) -> None:
        super().__init__()
        self.mean = regressor(channels)
        start = math.log(math.expm1(init_variance - self.EPS))  # softplus^-1
        self.alpha = nn.Parameter(torch.full((channels,), start))

    def variance(self) -> Tensor:
        return F.softplus(self.alpha) + self.EPS

    def nll(self, teacher: Tensor, student: Tensor) -> Tensor:
        """The Gaussian negative log-likelihood of (B, C, h, w) teacher maps given the student's."""
        return vid_nll(teacher.float(), self.mean(student.float()), self.variance())


class VID(Objective):
    """``vid``: ``weight * NLL(t | mu(s), sigma^2)`` on the image embeddings."""

    name = "vid"
    Options = VIDOptions

    def __init__(self, options: VIDOptions, *, embed_dim: int, **_) -> None:
        super().__init__(options)
        self.head = GaussianHead(embed_dim, options.init_variance)

    def forward(self, teacher, student, masks: Tensor) -> dict[str, Tensor]:
        loss = self.head.nll(teacher.image_embeddings.detach(), student.image_embeddings)
        return {"vid": loss, "total": self.options.weight * loss}
