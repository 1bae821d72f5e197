"""IBD: information-bottleneck distillation (after Kuang et al., "Improving Adversarial Robustness via Information
Bottleneck Distillation", NeurIPS 2023), on the image embeddings.

The information bottleneck asks the student representation Z to keep what predicts the teacher's (max I(Z; T))
while compressing the input (min I(X; Z)). With the student's embeddings s taken as the mean of a unit-variance
Gaussian encoder ``q(z | x) = N(s, I)`` and a standard-normal prior, ``I(X; Z) <= E KL(q(z|x) || N(0, I)) =
mean(s^2) / 2`` (per element); ``I(Z; T)`` is bounded below by VID's Gaussian likelihood. So::

    L = NLL(t | mu(s), sigma^2) + beta * mean(s^2) / 2

with VID's learned regressor ``mu`` and per-channel variance (:class:`infosam.distill.vid.GaussianHead`).
*Our reading*: InfoSAM's paper gives no formula for its IBD baseline and IBD's paper builds on adversarial
training (robust soft labels, attention-weighted multi-layer features) that has no counterpart here; the two IB
terms above are what remains of it for a frozen teacher. beta = 0.01 is our choice (none is published for SAM).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .objective import Objective, ObjectiveOptions
from .vid import GaussianHead


def compression(student_features: Tensor) -> Tensor:
    """``mean(s^2) / 2``: the KL of ``N(s, I)`` from ``N(0, I)`` per element (scalar)."""
    return student_features.float().square().mean() / 2


@dataclass(frozen=True)
class IBDOptions(ObjectiveOptions):
    beta: float = 0.01
    """Weight of the compression term mean(s^2)/2 next to the likelihood term."""
    init_variance: float = 5.0
    """Starting per-channel variance of the likelihood term (as VID)."""


class IBD(Objective):
    """``ibd``: ``weight * (NLL(t | mu(s), sigma^2) + beta * mean(s^2) / 2)``."""

    name = "ibd"
    Options = IBDOptions

    def __init__(self, options: IBDOptions, *, embed_dim: int, **_) -> None:
        super().__init__(options)
        self.head = GaussianHead(embed_dim, options.init_variance)

    def forward(self, teacher, student, masks: Tensor) -> dict[str, Tensor]:
        nll = self.head.nll(teacher.image_embeddings.detach(), student.image_embeddings)
        comp = compression(student.image_embeddings)
        total = self.options.weight * (nll + self.options.beta * comp)
        return {"likelihood": nll, "compression": comp, "total": total}
