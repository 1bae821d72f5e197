"""Evaluation metrics at each image's original resolution.

From logits to a map: the model's transform brings the low-res logits back to the original ``H x W``
(:meth:`infosam.sam.transforms.SamTransform.postprocess`: for SAM, bilinear up to ``S x S``, crop the padding,
bilinear to ``H x W``); they become a map in [0, 1] by ``sigmoid`` (the correct input), or, in the
**compatibility mode** that reproduces the paper's release, by ``clip(logits, 0, 1)``.

Metrics per image (rows), then the mean over images (summary):

* ``S`` S-measure (alpha 0.5), ``E_adp`` adaptive E-measure, ``E_mean`` mean E-measure, ``Fw`` weighted
  F-measure with beta^2 = 0.3 (``py_sod_metrics.WeightedFmeasure(beta=0.3)``, whose ``beta`` is beta^2), ``MAE``:
  computed by ``py_sod_metrics``, which takes 8-bit maps: the map is converted as ``round(255 * map)``
  (round half to even) and the ground truth as 0/255; ``py_sod_metrics`` then min-max normalises each map
  (MATLAB's ``mapminmax``, the standard SOD-toolbox convention) unless it is constant. As in the original MATLAB
  code, the E-measure divides by ``N - 1`` (N pixels), so a perfect map scores ``N / (N - 1)``, a hair above 1.
* ``IoU`` and ``Dice`` of the mask ``logits > 0``, SAM's own threshold. That is ``sigmoid(logits) > 0.5`` in exact
  arithmetic, but not in float32, where ``sigmoid`` rounds every logit in (0, 6e-8) to exactly 0.5 and so turns
  those pixels into background; masks are therefore never binarised from the map. In compatibility mode they are
  averaged over the thresholds 0.1, 0.3, 0.5, 0.7 and 0.9 of the clipped map (``map > t``) as in the release. An
  empty prediction of an empty ground truth scores 1 (nothing to find, nothing found).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import py_sod_metrics as sod
import torch
from torch import Tensor

THRESHOLDS = (0.5,)
COMPAT_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)
METRIC_NAMES = ("S", "E_adp", "E_mean", "Fw", "MAE", "IoU", "Dice")
LOWER_IS_BETTER = frozenset({"MAE"})
"""Metrics where a smaller value is better (all others: larger is better)."""


def logits_to_map(logits: Tensor, *, compat: bool = False) -> Tensor:
    """Map in [0, 1]: ``sigmoid(logits)``, or ``clip(logits, 0, 1)`` in compatibility mode."""
    return logits.clamp(0, 1) if compat else torch.sigmoid(logits)


def to_uint8(prob: np.ndarray) -> np.ndarray:
    """``round(255 * prob)`` as uint8 (values clipped to [0, 1] first)."""
    return np.rint(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)


def binary_iou_dice(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """IoU and Dice of the bool mask ``pred`` against the bool ``gt`` (both ``(H, W)``); two empty masks score 1."""
    pred, gt = pred.astype(bool), gt.astype(bool)
    inter = int(np.logical_and(pred, gt).sum())
    n_pred, n_gt = int(pred.sum()), int(gt.sum())
    union = n_pred + n_gt - inter
    return (1.0 if union == 0 else inter / union), (
        1.0 if n_pred + n_gt == 0 else 2 * inter / (n_pred + n_gt)
    )


def iou_dice(
    prob: np.ndarray, gt: np.ndarray, thresholds: Sequence[float] = THRESHOLDS
) -> tuple[float, float]:
    """Mean over ``thresholds`` of IoU and Dice of ``prob > t`` against the bool ``gt`` (both ``(H, W)``).

    For a sigmoid map prefer :func:`binary_iou_dice` of ``logits > 0`` (see the module docstring)."""
    scores = [binary_iou_dice(prob > t, gt) for t in thresholds]
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))


def sod_scores(prob: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """S-measure, adaptive and mean E-measure, weighted F-measure (beta^2 0.3) and MAE via ``py_sod_metrics``."""
    pred8 = to_uint8(prob)
    gt8 = gt.astype(np.uint8) * 255
    sm, em, wfm, mae = sod.Smeasure(alpha=0.5), sod.Emeasure(), sod.WeightedFmeasure(beta=0.3), sod.MAE()
    for metric in (sm, em, wfm, mae):
        metric.step(pred=pred8, gt=gt8)
    return {
        "S": float(sm.sms[-1]),
        "E_adp": float(em.adaptive_ems[-1]),
        "E_mean": float(np.mean(em.changeable_ems[-1])),
        "Fw": float(wfm.weighted_fms[-1]),
        "MAE": float(mae.maes[-1]),
    }


def image_metrics(
    prob: np.ndarray, gt: np.ndarray, *, compat: bool = False, foreground: np.ndarray | None = None
) -> dict[str, float]:
    """All metrics of one ``(H, W)`` map in [0, 1] against its ``(H, W)`` bool ground truth.

    Args:
        foreground: the predicted ``(H, W)`` bool mask that IoU and Dice score, i.e. ``logits > 0``; ``None``
            thresholds ``prob`` instead (at 0.5, or the release's five thresholds with ``compat``).
    """
    if prob.shape != gt.shape:
        raise ValueError(f"prediction shape {prob.shape} differs from ground-truth shape {gt.shape}")
    scores = sod_scores(prob, gt)
    if foreground is not None and not compat:
        if foreground.shape != gt.shape:
            raise ValueError(
                f"foreground shape {foreground.shape} differs from ground-truth shape {gt.shape}"
            )
        scores["IoU"], scores["Dice"] = binary_iou_dice(foreground, gt)
    else:
        scores["IoU"], scores["Dice"] = iou_dice(prob, gt, COMPAT_THRESHOLDS if compat else THRESHOLDS)
    return scores


def summarize(rows: Sequence[dict]) -> dict[str, float]:
    """Mean over images of every metric in ``rows`` (plus ``n_images``)."""
    summary: dict[str, float] = {"n_images": len(rows)}
    for name in METRIC_NAMES:
        values = [r[name] for r in rows if name in r]
        if values:
            summary[name] = float(np.mean(values))
    return summary


def display_scale(name: str) -> tuple[float, str]:
    """The factor and label that show metric ``name`` in the reports' units: percent (``100 *``, label
    ``"Dice (%)"``), except the :data:`LOWER_IS_BETTER` metrics (MAE), which stay fractions. Report tables and
    figures both take their units from here."""
    return (1.0, name) if name in LOWER_IS_BETTER else (100.0, f"{name} (%)")


def is_better(name: str, value: float, than: float) -> bool:
    """Whether ``value`` of metric ``name`` beats ``than`` (smaller for :data:`LOWER_IS_BETTER`, else larger)."""
    return value < than if name in LOWER_IS_BETTER else value > than


def best_of(summaries: Mapping[int, Mapping[str, float]]) -> dict[str, dict]:
    """The best value of each metric over several evaluations, keyed by e.g. epoch: ``{name: {"epoch": k,
    "value": v}}`` (the first such key wins ties; metrics absent from every summary are left out)."""
    best: dict[str, dict] = {}
    for key, summary in sorted(summaries.items()):
        for name in METRIC_NAMES:
            value = summary.get(name)
            if value is not None and (name not in best or is_better(name, value, best[name]["value"])):
                best[name] = {"epoch": key, "value": value}
    return best


class MetricAccumulator:
    """Collects per-image rows from logits at original resolution; ``summary()`` gives the means.

    ``add`` takes one image's ``(H, W)`` logits (e.g. from the model's transform's ``postprocess``) and its
    ``(H, W)`` bool ground truth.
    """

    def __init__(self, *, compat: bool = False):
        self.compat = compat
        self.rows: list[dict] = []

    def add(self, image_id: str, logits: Tensor, gt: np.ndarray) -> dict:
        logits = logits.float()
        prob = logits_to_map(logits, compat=self.compat).cpu().numpy().astype(np.float64)
        foreground = None if self.compat else (logits > 0).cpu().numpy()
        scores = image_metrics(prob, np.asarray(gt, dtype=bool), compat=self.compat, foreground=foreground)
        row = {"id": image_id, **scores}
        self.rows.append(row)
        return row

    def summary(self) -> dict[str, float]:
        return summarize(self.rows)
