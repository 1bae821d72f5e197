"""Logit KD (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015) on SAM's mask logits.

SAM's single-mask output is a per-pixel binary classifier, so the softened distributions are Bernoulli:
``p = sigmoid(z / T)``. With teacher logits ``t`` and student logits ``s`` (B, 1, 4h, 4w)::

    L = T^2 * mean_pixels [ p_t (log p_t - log p_s) + (1 - p_t) (log (1 - p_t) - log (1 - p_s)) ]

(the KL divergence of the teacher's from the student's per-pixel Bernoulli, the ``T^2`` keeping the gradient scale
of Hinton et al.). Computed with ``logsigmoid`` in float32. The gradient reaches the student's logits only. Written
here (torchdistill's ``KDLoss`` is the softmax form for multi-class logits, not this binary one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from .objective import Objective, ObjectiveOptions


def logit_kd(teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``T^2 * mean KL(Bernoulli(sigmoid(t/T)) || Bernoulli(sigmoid(s/T)))`` over all pixels (scalar)."""
    t = teacher_logits.float() / temperature
    s = student_logits.float() / temperature
    p_t = t.sigmoid()
    kl = p_t * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p_t) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return temperature**2 * kl.mean()


@dataclass(frozen=True)
class LogitOptions(ObjectiveOptions):
    temperature: float = 1.0
    """Softening temperature T (> 0); 1: the plain per-pixel KL (the paper gives no value)."""


class LogitKD(Objective):
    """``logit``: ``weight * logit_kd(teacher logits, student logits, T)``."""

    name = "logit"
    Options = LogitOptions
    needs_logits = True

    def forward(self, teacher, student, masks: Tensor) -> dict[str, Tensor]:
        if self.options.temperature <= 0:
            raise ValueError("distill.options.logit.temperature must be > 0")
        kd = logit_kd(teacher.low_res_logits.detach(), student.low_res_logits, self.options.temperature)
        return {"logit": kd, "total": self.options.weight * kd}
