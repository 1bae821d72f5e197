"""Segmentation losses (method.md section 5): pure functions on logits and {0, 1} targets, plus a dispatcher.

Every function takes ``logits`` of shape ``(B, 1, S, S)`` at input resolution (upsample SAM's low-res logits
first) and ``target`` of the same shape with values in {0, 1}; it returns a scalar, computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SEGMENTATION_LOSSES = ("structure", "structure_release", "focal_dice_iou", "focal_dice_iou_release")
"""Names accepted by :func:`segmentation_loss`."""


def structure_weight(target: Tensor) -> Tensor:
    """PraNet/F3Net boundary weight ``w = 1 + 5 |avgpool_31(y) - y|`` (stride 1, padding 15).

    The pooling uses ``F.avg_pool2d``'s defaults as the original does, in particular ``count_include_pad=True``:
    every window is divided by 31*31 even where it hangs over the zero padding, so near the image border a
    foreground region looks thinner and gets more weight.

    Args:
        target: ``(B, 1, S, S)`` in {0, 1}.
    Returns:
        ``(B, 1, S, S)`` weights in [1, 6].
    """
    target = target.float()
    # The 31 x 31 box mean as a 31 x 1 then a 1 x 31 mean over the zero-padded mask: the same window sums, each
    # divided by 31 twice (= 961, count_include_pad), in 62 instead of 961 additions per pixel.
    column = F.avg_pool2d(target, kernel_size=(31, 1), stride=1, padding=(15, 0))
    pooled = F.avg_pool2d(column, kernel_size=(1, 31), stride=1, padding=(0, 15))
    return 1 + 5 * torch.abs(pooled - target)


def per_image_weighted_bce(logits: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Per-image weighted BCE ``sum(w * bce) / sum(w)`` over pixels: ``(B, 1, S, S)`` -> ``(B, 1)``."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return (weight * bce).sum(dim=(2, 3)) / weight.sum(dim=(2, 3))


def per_image_weighted_iou(logits: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Per-image weighted soft IoU loss ``1 - (I + 1) / (U - I + 1)``: ``(B, 1, S, S)`` -> ``(B, 1)``.

    ``I = sum(p y w)``, ``U = sum((p + y) w)``, ``p = sigmoid(logits)``; the +1 keeps empty masks finite.
    """
    prob = torch.sigmoid(logits.float())
    target = target.float()
    inter = (prob * target * weight).sum(dim=(2, 3))
    union = ((prob + target) * weight).sum(dim=(2, 3))
    return 1 - (inter + 1) / (union - inter + 1)


def structure_loss(logits: Tensor, target: Tensor, *, weighted_bce: bool = True) -> Tensor:
    """Structure loss: mean over the batch of (weighted BCE + weighted IoU), the paper's segmentation loss.

    Args:
        logits: ``(B, 1, S, S)`` mask logits at input resolution.
        target: ``(B, 1, S, S)`` in {0, 1}.
        weighted_bce: ``False`` reproduces the official release, whose deprecated ``reduce='none'`` argument makes
            the BCE a plain mean over all pixels of the batch (the IoU term stays weighted).
    Returns:
        scalar.
    """
    _check_pair(logits, target)
    weight = structure_weight(target)
    if weighted_bce:
        bce = per_image_weighted_bce(logits, target, weight)
    else:
        bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    return (bce + per_image_weighted_iou(logits, target, weight)).mean()


def focal_loss(logits: Tensor, target: Tensor, *, gamma: float = 2.0, alpha: float = 0.25) -> Tensor:
    """Sigmoid focal loss ``alpha_t (1 - p_t)^gamma BCE``, mean over all pixels of the batch (scalar).

    ``p_t = p`` on foreground and ``1 - p`` on background; ``alpha_t = alpha`` on foreground, ``1 - alpha`` else.
    """
    _check_pair(logits, target)
    logits, target = logits.float(), target.float()
    prob = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * (1 - p_t) ** gamma * bce).mean()


def dice_loss(logits: Tensor, target: Tensor, *, smooth: float = 1.0) -> Tensor:
    """Soft dice loss ``1 - (2 sum(p y) + smooth) / (sum(p) + sum(y) + smooth)`` per image, mean over the batch.

    ``smooth = 1`` (in pixels) makes an empty target with an empty prediction a perfect 0 instead of 0/0.
    """
    _check_pair(logits, target)
    prob = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    inter = (prob * target).sum(dim=1)
    return (1 - (2 * inter + smooth) / (prob.sum(dim=1) + target.sum(dim=1) + smooth)).mean()


def mask_iou(logits: Tensor, target: Tensor) -> Tensor:
    """IoU of the thresholded prediction ``logits > 0`` with the target, per image: ``(B, 1, S, S)`` -> ``(B,)``.

    Two empty masks have IoU 1. No gradient flows (it is a regression target).
    """
    _check_pair(logits, target)
    pred = (logits.detach() > 0).flatten(1)
    truth = target.detach().flatten(1) > 0.5
    inter = (pred & truth).sum(dim=1).float()
    union = (pred | truth).sum(dim=1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def iou_mse_loss(iou_pred: Tensor, logits: Tensor, target: Tensor) -> Tensor:
    """MSE between SAM's predicted IoU and the actual IoU of its thresholded mask (:func:`mask_iou`), scalar.

    Args:
        iou_pred: ``(B, 1)`` (or ``(B,)``) SAM's IoU prediction for the single-mask output.
        logits: ``(B, 1, S, S)``; target: ``(B, 1, S, S)`` in {0, 1}.
    """
    actual = mask_iou(logits, target)
    if iou_pred.numel() != actual.numel():
        raise ValueError(
            f"iou_pred must hold one value per image ({actual.numel()}), got {tuple(iou_pred.shape)}"
        )
    return F.mse_loss(iou_pred.float().reshape(-1), actual)


def focal_loss_release(
    logits: Tensor, target: Tensor, *, gamma: float = 2.0, alpha: float = 0.25, eps: float = 1e-12
) -> Tensor:
    """The release's focal loss: like :func:`focal_loss`, but with logs of probabilities, ``log(p + eps)`` and
    ``log(1 - p + eps)``, instead of BCE on logits (scalar).

    ``(sum_fg alpha (1 - p)^gamma (-log(p + eps)) + sum_bg (1 - alpha) p^gamma (-log(1 - p + eps))) / (N + eps)`` over
    all ``N`` pixels of the batch. It equals :func:`focal_loss` up to ``eps`` while ``p`` is not rounded to 0 or 1;
    beyond about |logit| 17 (float32) a confidently wrong pixel costs ``-log(eps)`` (27.6 times its weight) however
    large its logit, where :func:`focal_loss` keeps growing with the logit.
    """
    _check_pair(logits, target)
    prob = torch.sigmoid(logits.float())
    target = target.float()
    fg = alpha * target * (1 - prob) ** gamma * -torch.log(prob + eps)
    bg = (1 - alpha) * (1 - target) * prob**gamma * -torch.log(1 - prob + eps)
    return (fg.sum() + bg.sum()) / (target.numel() + eps)


def dice_loss_release(logits: Tensor, target: Tensor, *, smooth: float = 1.0) -> Tensor:
    """The release's dice loss: one soft dice over all pixels of the whole batch (not per image), scalar:
    ``1 - (2 sum(p y) + smooth) / (sum(p) + sum(y) + smooth)``."""
    _check_pair(logits, target)
    prob, target = torch.sigmoid(logits.float()), target.float()
    return 1 - (2 * (prob * target).sum() + smooth) / (prob.sum() + target.sum() + smooth)


def iou_mse_loss_release(iou_pred: Tensor, logits: Tensor, target: Tensor, *, eps: float = 1e-7) -> Tensor:
    """The release's IoU-head loss: mean over the B predictions of ``(iou - iou_pred)^2`` where ``iou`` is ONE soft
    IoU of the whole batch, ``(sum(p y) + eps) / (sum(p) + sum(y) - sum(p y) + eps)`` with ``p = sigmoid(logits)``
    (not per image, not thresholded, and not detached: its gradient reaches the mask logits too). Scalar."""
    _check_pair(logits, target)
    prob, target = torch.sigmoid(logits.float()), target.float()
    inter = (prob * target).sum()
    iou = (inter + eps) / (prob.sum() + target.sum() - inter + eps)
    if iou_pred.numel() != logits.shape[0]:
        raise ValueError(
            f"iou_pred must hold one value per image ({logits.shape[0]}), got {tuple(iou_pred.shape)}"
        )
    return ((iou - iou_pred.float().reshape(-1)) ** 2).mean()


def focal_dice_iou_release(
    logits: Tensor, target: Tensor, iou_pred: Tensor, *, focal_weight: float = 20.0, iou_weight: float = 1.0
) -> Tensor:
    """The release's ``FocalDiceloss_IoULoss`` (its option ``--gt_loss``), scalar:
    ``20 * focal_loss_release + dice_loss_release + 1 * iou_mse_loss_release``.

    It differs from :func:`segmentation_loss` ``"focal_dice_iou"`` (``focal + dice + iou_mse``, weights 1, 1, 1) in
    four ways: the focal weight 20 (the 20:1 focal:dice ratio SAM was trained with); focal from ``log(p + eps)``
    (:func:`focal_loss_release`); dice over the whole batch instead of per image; and the IoU head regressed on the
    batch's single soft IoU, with gradient into the logits, instead of each image's thresholded IoU.
    """
    return (
        focal_weight * focal_loss_release(logits, target)
        + dice_loss_release(logits, target)
        + iou_weight * iou_mse_loss_release(iou_pred, logits, target)
    )


def segmentation_loss(name: str, logits: Tensor, target: Tensor, iou_pred: Tensor | None = None) -> Tensor:
    """The segmentation loss called ``name`` (scalar).

    - ``"structure"``: :func:`structure_loss` (weighted BCE + weighted IoU), as the paper describes;
    - ``"structure_release"``: the same with the release's plain mean BCE;
    - ``"focal_dice_iou"``: this project's ``focal + dice + iou_mse`` with weights 1, 1, 1, each per image where it
      matters (dice per image, IoU target = each image's thresholded IoU, no gradient through it); needs ``iou_pred``;
    - ``"focal_dice_iou_release"``: the release's version, :func:`focal_dice_iou_release` (focal weighted by 20,
      batch-wide dice and soft IoU); needs ``iou_pred``.

    ``iou_pred`` is ignored by the structure losses.
    """
    if name == "structure":
        return structure_loss(logits, target)
    if name == "structure_release":
        return structure_loss(logits, target, weighted_bce=False)
    if name == "focal_dice_iou":
        if iou_pred is None:
            raise ValueError("segmentation loss 'focal_dice_iou' needs iou_pred (B, 1)")
        return focal_loss(logits, target) + dice_loss(logits, target) + iou_mse_loss(iou_pred, logits, target)
    if name == "focal_dice_iou_release":
        if iou_pred is None:
            raise ValueError("segmentation loss 'focal_dice_iou_release' needs iou_pred (B, 1)")
        return focal_dice_iou_release(logits, target, iou_pred)
    raise ValueError(f"unknown segmentation loss {name!r}; choose one of {', '.join(SEGMENTATION_LOSSES)}")


def _check_pair(logits: Tensor, target: Tensor) -> None:
    if logits.dim() != 4 or logits.shape[1] != 1 or logits.shape != target.shape:
        raise ValueError(
            f"logits and target must both be (B, 1, S, S), got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
