"""PKT (Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer", ECCV 2018) on the
flattened image embeddings.

For a batch of n samples, the cosine-similarity kernel of each model's features is shifted to [0, 1] and made a
conditional distribution per sample, and the student's is pulled to the teacher's by a KL divergence::

    K_ab = (cos(x_a, x_b) + 1) / 2,   P_ab = K_ab / sum_b K_ab,
    L = mean_ab P^t_ab * log((P^t_ab + eps) / (P^s_ab + eps)),   eps = 1e-7

(the mean over all n^2 entries, as in the authors' code and torchdistill's ``PKTLoss``, which is not a dependency
of this project: the formula is written here and tested against NumPy). Needs a batch of at least 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .objective import Objective


def pkt_distribution(features: Tensor) -> Tensor:
    """(n, ...) features -> (n, n) row-stochastic matrix of shifted cosine similarities."""
    rows = F.normalize(features.float().flatten(1), dim=1)
    kernel = (rows @ rows.T + 1) / 2
    return kernel / kernel.sum(dim=1, keepdim=True)


def pkt_loss(teacher_features: Tensor, student_features: Tensor, eps: float = 1e-7) -> Tensor:
    """The PKT divergence (scalar) between the batch kernels of teacher and student features."""
    p_t = pkt_distribution(teacher_features)
    p_s = pkt_distribution(student_features)
    return torch.mean(p_t * torch.log((p_t + eps) / (p_s + eps)))


class PKT(Objective):
    """``pkt``: ``weight * pkt_loss(teacher embeddings, student embeddings)``."""

    name = "pkt"
    min_batch = 2

    def forward(self, teacher, student, masks: Tensor) -> dict[str, Tensor]:
        loss = pkt_loss(teacher.image_embeddings.detach(), student.image_embeddings)
        return {"pkt": loss, "total": self.options.weight * loss}
