"""PKD (Cao et al., "PKD: General Distillation Framework for Object Detectors via Pearson Correlation
Coefficient", NeurIPS 2022) on the image embeddings (SAM's neck output, the analogue of a detector's FPN level).

Each channel of each feature map is standardised over the batch and positions (zero mean, unit standard deviation,
the unbiased estimate, ``+ 1e-6`` in the denominator as in the authors' MMRazor code), then::

    L = mean (norm(s) - norm(t))^2 / 2

which equals ``1 - r`` averaged over channels up to the ``(n-1)/n`` factor, ``r`` the Pearson correlation of the
student's and teacher's channel. Written here (not in torchdistill); the test checks it against NumPy.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .objective import Objective


def channel_standardize(x: Tensor, eps: float = 1e-6) -> Tensor:
    """(B, C, h, w) -> the same with each channel standardised over (B, h, w) (unbiased std)."""
    flat = x.float().transpose(0, 1).flatten(1)  # (C, B*h*w)
    flat = (flat - flat.mean(dim=1, keepdim=True)) / (flat.std(dim=1, keepdim=True) + eps)
    return flat.reshape(x.shape[1], x.shape[0], *x.shape[2:]).transpose(0, 1)


def pkd_loss(teacher_features: Tensor, student_features: Tensor) -> Tensor:
    """``mean (standardise(s) - standardise(t))^2 / 2`` (scalar) for (B, C, h, w) maps of one shape."""
    return F.mse_loss(channel_standardize(student_features), channel_standardize(teacher_features)) / 2


class PKD(Objective):
    """``pkd``: ``weight * pkd_loss(teacher embeddings, student embeddings)``."""

    name = "pkd"

    def forward(self, teacher, student, masks: Tensor) -> dict[str, Tensor]:
        loss = pkd_loss(teacher.image_embeddings.detach(), student.image_embeddings)
        return {"pkd": loss, "total": self.options.weight * loss}
