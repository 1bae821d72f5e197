"""TinySAM's objective (Shu et al., "TinySAM: Pushing the Envelope for Efficient Segment Anything Model", AAAI
2025, eqs. 1-7): full-stage distillation with hard mask weighting, all distances l1::

    L = alpha * l1(E_s, E_t) + beta * l1(T_s, T_t) + gamma * mean_i H_i * l1_i(M_s, M_t)
    H_i = sigmoid(IoU(M_t,i, GT_i) / (IoU(M_s,i, GT_i) + eps) - 1)

E the image embeddings, T the mask token after the two-way transformer, M the single-mask logits (B, 1, 4h, 4w),
l1 the mean absolute difference (``l1_i`` over image i). ``H_i`` is a weight, not a path for gradients (computed
without them): a mask the teacher gets right and the student does not weighs up to sigmoid(large) -> 1, an easy
one sigmoid(0) = 0.5. IoUs are of the binarised masks (logit > 0) with the ground truth resized (nearest) to the
logit resolution; two empty masks have IoU 1. *Ours*: alpha = beta = gamma = 1 and eps = 1e-6 (the paper gives
none); TinySAM's other half, hard prompt sampling, changes the prompts, not the loss, and is not done here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .objective import Objective, ObjectiveOptions


def mask_iou(logits: Tensor, truth: Tensor) -> Tensor:
    """(B, 1, H, W) logits and binary truth of that size -> (B,) IoU of ``logits > 0`` (1 when both are empty)."""
    pred = logits.flatten(1) > 0
    gt = truth.flatten(1) > 0.5
    inter = (pred & gt).sum(1).float()
    union = (pred | gt).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def hardness(teacher_logits: Tensor, student_logits: Tensor, masks: Tensor, eps: float = 1e-6) -> Tensor:
    """``H_i = sigmoid(IoU_t / (IoU_s + eps) - 1)`` (B,), masks (B, 1, S, S) resized to the logits' size."""
    with torch.no_grad():
        truth = F.interpolate(masks.float(), size=teacher_logits.shape[-2:], mode="nearest")
        ratio = mask_iou(teacher_logits, truth) / (mask_iou(student_logits, truth) + eps)
        return torch.sigmoid(ratio - 1)


@dataclass(frozen=True)
class TinySAMOptions(ObjectiveOptions):
    alpha: float = 1.0
    """Weight of the image-embedding l1 term."""
    beta: float = 1.0
    """Weight of the mask-token l1 term."""
    gamma: float = 1.0
    """Weight of the hardness-weighted mask-logit l1 term."""


class TinySAMDistill(Objective):
    """``tinysam``: ``weight * (alpha L_embedding + beta L_token + gamma L_output)``."""

    name = "tinysam"
    Options = TinySAMOptions
    needs_logits = True

    def forward(self, teacher, student, masks: Tensor) -> dict[str, Tensor]:
        o = self.options
        t_logits, s_logits = teacher.low_res_logits.detach().float(), student.low_res_logits.float()
        embedding = F.l1_loss(student.image_embeddings.float(), teacher.image_embeddings.detach().float())
        token = F.l1_loss(student.mask_tokens.float(), teacher.mask_tokens.detach().float())
        weights = hardness(t_logits, s_logits, masks)
        output = (weights * (s_logits - t_logits).abs().flatten(1).mean(1)).mean()
        total = o.weight * (o.alpha * embedding + o.beta * token + o.gamma * output)
        return {"embedding": embedding, "token": token, "output": output, "total": total}
