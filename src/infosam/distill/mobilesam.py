"""MobileSAM's objective (Zhang et al., "Faster Segment Anything: Towards Lightweight SAM for Mobile
Applications", 2023): decoupled distillation, the mean squared error between the student's and the teacher's image
embeddings (B, C, h, w)::

    L = mean (E_s(x) - E_t(x))^2

as in MobileSAM's official training code (an MSE on the image encoder outputs). The gradient reaches the student's
image encoder only (the decoder gets none from this term)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .objective import Objective


def embedding_mse(teacher_embeddings: Tensor, student_embeddings: Tensor) -> Tensor:
    """Mean squared error over all elements (scalar)."""
    return F.mse_loss(student_embeddings.float(), teacher_embeddings.float())


class MobileSAMDistill(Objective):
    """``mobilesam``: ``weight * embedding_mse(teacher, student)``."""

    name = "mobilesam"

    def forward(self, teacher, student, masks: Tensor) -> dict[str, Tensor]:
        mse = embedding_mse(teacher.image_embeddings.detach(), student.image_embeddings)
        return {"embedding": mse, "total": self.options.weight * mse}
