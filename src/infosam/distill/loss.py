"""The two InfoSAM objectives and their weighted sum (method.md section 4).

With ``G_i, G_m, G_rt, G_rs`` the trace-normalised Gram matrices (over the batch) of the teacher's image
embeddings, the teacher's mask token, and the relation rows of teacher and student:

- relation compression ``L_r = S(G_rt) - S(G_i, G_m, G_rt)`` (``= -log2 ||G_rt||_F^2 + log2 ||G_imr||_F^2`` with
  ``G_imr = (G_i o G_m o G_rt) / tr(.)``): ``I(z_i, z_m; r_t)`` up to a constant; gradient reaches only the
  relation module (the teacher's features are detached here);
- relation distillation ``L_d = -I(r_t; r_s) = -(S(G_rt) + S(G_rs) - S(G_rt, G_rs))``; gradient reaches the
  relation module and the student;
- ``total = lam * (lam1 * L_r + lam2 * L_d)``.

Beside the terms, :func:`relation_stats` reports (without gradient) what the terms do to the relation maps:
``S(r_t)``, ``S(r_s)``, ``I(r_t; r_s)``, how alike the batch's teacher maps are, and the spread of their values
(:data:`RELATION_STATS`). They are logged to train with (``metrics.csv``, TensorBoard); they never change a loss.

The module that owns the relation module and enters training as ``distill.method=infosam`` is
:class:`infosam.distill.infosam.InfoSAMLoss`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .entropy import Gather, gram_matrix, joint_entropy, mutual_information, normalize_rows, renyi2
from .relation import RelationModule


class SamFeatures(Protocol):
    """Anything with SAM's two feature tensors, e.g. :class:`infosam.sam.forward.SamOutput`."""

    image_embeddings: Tensor  # (B, C, h, w)
    mask_tokens: Tensor  # (B, 1, C)


@dataclass(frozen=True)
class InfoSAMWeights:
    """Weights of the InfoSAM terms: ``total = lam * (lam1 * L_r + lam2 * L_d)`` (paper: 1, 1, 0.5)."""

    lam: float = 1.0
    """Overall weight of the InfoSAM objective next to the segmentation loss."""
    lam1: float = 1.0
    """Weight of the relation-compression term L_r."""
    lam2: float = 0.5
    """Weight of the relation-distillation term L_d."""

    def __post_init__(self) -> None:
        for name in ("lam", "lam1", "lam2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"InfoSAMWeights.{name} must be a number >= 0, got {value!r}")


def relation_loss(
    image_embeddings: Tensor, mask_tokens: Tensor, relation_rows: Tensor, *, gather: Gather | None = None
) -> Tensor:
    """``L_r = S(G_rt) - S(G_i, G_m, G_rt)`` (scalar, bits): ``I(z_i, z_m; r_t)`` up to a constant.

    Args:
        image_embeddings: ``(B, C, h, w)`` teacher image embeddings (used as given: detach them first).
        mask_tokens: ``(B, 1, C)`` teacher mask tokens (same).
        relation_rows: ``(B, HW)`` teacher relation rows ``r_t``.
        gather: optional row all-gather (see :func:`infosam.distill.entropy.gram_matrix`).
    """
    g_r = gram_matrix(relation_rows, gather=gather)
    _check_batch(g_r)
    g_i = gram_matrix(image_embeddings, gather=gather)
    g_m = gram_matrix(mask_tokens, gather=gather)
    return renyi2(g_r) - joint_entropy(g_i, g_m, g_r)


def distill_loss(teacher_rows: Tensor, student_rows: Tensor, *, gather: Gather | None = None) -> Tensor:
    """``L_d = -I(r_t; r_s)`` (scalar, bits), the mutual information of the two relation Gram matrices.

    Args:
        teacher_rows: ``(B, HW)`` teacher relation rows ``r_t``.
        student_rows: ``(B, HW)`` student relation rows ``r_s``.
        gather: optional row all-gather.
    """
    g_t = gram_matrix(teacher_rows, gather=gather)
    _check_batch(g_t)
    g_s = gram_matrix(student_rows, gather=gather)
    return -mutual_information(g_t, g_s)


RELATION_STATS = ("s_rt", "s_rs", "i_rt_rs", "rt_cosine", "rt_mean", "rt_std", "rt_min", "rt_max")
"""What :func:`relation_stats` returns, in this order (the columns ``metrics.csv`` gains when InfoSAM is on):

- ``s_rt``, ``s_rs``: ``S(r_t)``, ``S(r_s)`` in bits, in ``[0, log2 B]`` (B the batch, global when gathered);
- ``i_rt_rs``: ``I(r_t; r_s)`` in bits (``= -L_d``; the order-2 estimate can be slightly negative);
- ``rt_cosine``: the mean cosine between two different teacher maps of the batch (1: every image gets the same
  map; 0: orthogonal maps);
- ``rt_mean``, ``rt_std``: the mean over the batch of each teacher map's mean and (population) standard deviation
  over its HW values (a row has unit L2 norm, so ``mean^2 + std^2 = 1/HW``: a uniform map has std 0, a zero-mean
  one std ``1/sqrt(HW)``, 0.0156 at HW = 4096);
- ``rt_min``, ``rt_max``: the smallest and largest value of any teacher map of the batch (this process's rows).
"""


@torch.no_grad()
def relation_stats(
    teacher_rows: Tensor, student_rows: Tensor, *, gather: Gather | None = None
) -> dict[str, Tensor]:
    """The relation maps' entropies, shared information, likeness and value spread (:data:`RELATION_STATS`), as
    detached float32 scalars. ``teacher_rows`` and ``student_rows`` are ``(B, HW)`` relation rows; ``gather`` as
    for the losses (the entropies then span the global batch; the value statistics stay this process's)."""
    g_t = gram_matrix(teacher_rows, gather=gather)
    g_s = gram_matrix(student_rows, gather=gather)
    s_t, s_s = renyi2(g_t), renyi2(g_s)
    unit = normalize_rows(teacher_rows)
    if gather is not None:
        unit = gather(unit)
    n = unit.shape[0]
    off = (unit @ unit.T)[~torch.eye(n, dtype=torch.bool, device=unit.device)]  # cosines of distinct maps
    rows = teacher_rows.detach().float().flatten(1)
    return {
        "s_rt": s_t,
        "s_rs": s_s,
        "i_rt_rs": s_t + s_s - joint_entropy(g_t, g_s),
        "rt_cosine": off.mean(),
        "rt_mean": rows.mean(dim=1).mean(),
        "rt_std": rows.std(dim=1, correction=0).mean(),
        "rt_min": rows.min(),
        "rt_max": rows.max(),
    }


def infosam_terms(
    relation: RelationModule,
    teacher: SamFeatures,
    student: SamFeatures,
    weights: InfoSAMWeights | None = None,
    *,
    gather: Gather | None = None,
) -> dict[str, Tensor]:
    """The InfoSAM terms for one batch (scalars, float32).

    Args:
        relation: the shared relation module (trainable, or frozen for InfoSAM-T).
        teacher: teacher outputs with ``image_embeddings (B, C, h, w)`` and ``mask_tokens (B, 1, C)``; they are
            detached here, so the teacher never receives gradients whatever the caller did.
        student: student outputs with the same attributes (not detached).
        weights: the term weights; ``None`` means the paper's ``InfoSAMWeights()``.
        gather: optional ``(n_local, d) -> (n_global, d)`` row all-gather (e.g.
            :func:`infosam.distill.entropy.all_gather_rows`) so the Gram matrices span the global batch.
    Returns:
        ``{"relation": L_r, "distill": L_d, "total": lam * (lam1 * L_r + lam2 * L_d)}`` and, detached, the
        :func:`relation_stats` of ``r_t`` and ``r_s`` (keys :data:`RELATION_STATS`).
    Raises:
        ValueError: the (global, if gathered) batch has fewer than 2 samples.
    """
    weights = InfoSAMWeights() if weights is None else weights
    if gather is None:
        _check_batch_size(teacher.image_embeddings.shape[0])
    t_image = teacher.image_embeddings.detach()
    t_token = teacher.mask_tokens.detach()
    r_t = relation(t_image, t_token)
    r_s = relation(student.image_embeddings, student.mask_tokens)
    l_r = relation_loss(t_image, t_token, r_t, gather=gather)
    l_d = distill_loss(r_t, r_s, gather=gather)
    total = weights.lam * (weights.lam1 * l_r + weights.lam2 * l_d)
    return {"relation": l_r, "distill": l_d, "total": total, **relation_stats(r_t, r_s, gather=gather)}


def _check_batch(gram: Tensor) -> None:
    _check_batch_size(gram.shape[0])


def _check_batch_size(n: int) -> None:
    if n < 2:
        raise ValueError(
            f"InfoSAM needs a batch of at least 2 samples, got {n}: its entropies are estimated over the batch "
            "axis (Gram matrices between samples), so one sample makes every term constant. Use batch_size >= 2 "
            "(the paper uses 4); with a gather across processes the global batch size is what counts."
        )
