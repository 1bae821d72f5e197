"""Segmentation losses on hand-computed perfect, inverted and half predictions (large +-logits)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from infosam.losses import (
    SEGMENTATION_LOSSES,
    dice_loss,
    dice_loss_release,
    focal_dice_iou_release,
    focal_loss,
    focal_loss_release,
    iou_mse_loss,
    iou_mse_loss_release,
    mask_iou,
    segmentation_loss,
    structure_loss,
    structure_weight,
)

BIG = 20.0  # softplus(-20) ~ 2e-9: sigmoid is 0 or 1 to float32 precision, BCE of a wrong pixel is 20
S = 8


def _half_target(b: int = 1) -> torch.Tensor:
    y = torch.zeros(b, 1, S, S)
    y[:, :, : S // 2] = 1  # top half: 32 of 64 pixels
    return y


def _logits_like(y: torch.Tensor) -> torch.Tensor:
    return torch.where(y > 0.5, BIG, -BIG)


def test_structure_on_empty_target():
    # y = 0 everywhere: avgpool(y) = 0, so w = 1. Inverted (p = 1): BCE = 20, I = 0, U = 64 -> wIoU = 1 - 1/65.
    # Half (p = 0.5): BCE = ln 2, U = 32 -> wIoU = 1 - 1/33. With w = 1 both variants agree.
    y = torch.zeros(2, 1, S, S)
    for name in ("structure", "structure_release"):
        assert segmentation_loss(name, torch.full_like(y, -BIG), y).item() == pytest.approx(0.0, abs=1e-6)
        assert segmentation_loss(name, torch.full_like(y, BIG), y).item() == pytest.approx(
            20 + 64 / 65, rel=1e-6
        )
        assert segmentation_loss(name, torch.zeros_like(y), y).item() == pytest.approx(
            math.log(2) + 32 / 33, rel=1e-6
        )


def test_structure_weight_counts_the_padding():
    # y = 1 on an 8x8 image: every 31x31 window (padding 15) covers the whole image, and avg_pool2d's default
    # count_include_pad=True divides by 961, so avgpool = 64/961 and w = 1 + 5 (1 - 64/961) everywhere.
    y = torch.ones(1, 1, S, S)
    w = 1 + 5 * (1 - 64 / 961)
    assert torch.allclose(structure_weight(y), torch.full_like(y, w))
    # Inverted (p = 0): BCE = 20 (a weighted mean of a constant), I = 0, U = 64 w -> wIoU = 1 - 1/(64 w + 1).
    # (count_include_pad=False would give w = 1 and 1 - 1/65 instead.)
    assert structure_loss(torch.full_like(y, -BIG), y).item() == pytest.approx(
        20 + 1 - 1 / (64 * w + 1), rel=1e-6
    )
    assert structure_loss(_logits_like(y), y).item() == pytest.approx(0.0, abs=1e-6)


def test_structure_loss_on_a_2x2_image_by_hand():
    """A 2 x 2 image, target (1 0 / 0 0), probabilities (3/4 1/4 / 1/2 1/4), computed on paper.

    Weights: every 31 x 31 window (padding 15) covers the whole image, so avgpool = 1/961 everywhere:
    w = 1 + 5 (1 - 1/961) = 5761/961 on the foreground pixel (a), 1 + 5/961 = 966/961 on the others (b).
    BCE per pixel: -ln(3/4) = ln(4/3) on the three pixels at 3/4 (fg) or 1/4 (bg), ln 2 on the one at 1/2.
    Weighted BCE = ((a + 2b) ln(4/3) + b ln 2) / (a + 3b) = (7693 ln(4/3) + 966 ln 2) / 8659.
    IoU: I = 3a/4, U = (3/4 + 1) a + (1/4 + 1/2 + 1/4) b = 7a/4 + b, so
    1 - (I + 1)/(U - I + 1) = 1 - (3a/4 + 1)/(a + b + 1) = 1 - (21127/3844)/(7688/961) = 1 - 21127/30752.
    The release's plain BCE is the mean (3 ln(4/3) + ln 2)/4; the IoU term is the same.
    """
    ln3 = math.log(3.0)
    logits = torch.tensor([[[[ln3, -ln3], [0.0, -ln3]]]])
    y = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    torch.testing.assert_close(structure_weight(y), torch.tensor([[[[5761.0, 966.0], [966.0, 966.0]]]]) / 961)
    iou = 1 - 21127 / 30752
    weighted = (7693 * math.log(4 / 3) + 966 * math.log(2)) / 8659
    plain = (3 * math.log(4 / 3) + math.log(2)) / 4
    assert structure_loss(logits, y).item() == pytest.approx(weighted + iou, rel=1e-6)
    assert structure_loss(logits, y, weighted_bce=False).item() == pytest.approx(plain + iou, rel=1e-6)
    assert segmentation_loss("structure", logits, y).item() == pytest.approx(weighted + iou, rel=1e-6)
    assert segmentation_loss("structure_release", logits, y).item() == pytest.approx(plain + iou, rel=1e-6)
    # a batch is the mean over its images: the same image twice gives the same loss
    two = structure_loss(logits.repeat(2, 1, 1, 1), y.repeat(2, 1, 1, 1)).item()
    assert two == pytest.approx(weighted + iou, rel=1e-6)


def test_focal_by_hand():
    # Inverted: every pixel BCE 20, (1 - p_t)^2 = 1, alpha_t = 0.25 on the 32 fg and 0.75 on the 32 bg -> 20 * 0.5.
    # Half (p = 0.5): ln 2 * 0.5^2 * 0.5 = ln 2 / 8.
    y = _half_target()
    assert focal_loss(_logits_like(y), y).item() == pytest.approx(0.0, abs=1e-6)
    assert focal_loss(-_logits_like(y), y).item() == pytest.approx(10.0, rel=1e-6)
    assert focal_loss(torch.zeros_like(y), y).item() == pytest.approx(math.log(2) / 8, rel=1e-6)


def test_dice_by_hand():
    # 32 fg pixels; perfect: 1 - (64 + 1)/(64 + 1) = 0; inverted: 1 - 1/65; half (p = 0.5): I = 16,
    # sum p = 32 -> 1 - 33/65 = 32/65. Empty target, empty prediction: 1 - 1/1 = 0 thanks to the smoothing.
    y = _half_target(2)
    assert dice_loss(_logits_like(y), y).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(-_logits_like(y), y).item() == pytest.approx(64 / 65, rel=1e-6)
    assert dice_loss(torch.zeros_like(y), y).item() == pytest.approx(32 / 65, rel=1e-6)
    empty = torch.zeros(1, 1, S, S)
    assert dice_loss(torch.full_like(empty, -BIG), empty).item() == pytest.approx(0.0, abs=1e-6)


def test_mask_iou_and_iou_mse_by_hand():
    y = _half_target()
    left = torch.full_like(y, -BIG)
    left[..., : S // 2] = BIG  # left half predicted: I = 16, U = 48 -> IoU 1/3
    assert mask_iou(left, y).item() == pytest.approx(1 / 3)
    assert mask_iou(_logits_like(y), y).item() == 1.0
    assert mask_iou(-_logits_like(y), y).item() == 0.0
    empty = torch.zeros(1, 1, S, S)
    assert mask_iou(torch.full_like(empty, -1.0), empty).item() == 1.0  # both empty: perfect
    iou_pred = torch.tensor([[0.25]], requires_grad=True)
    assert iou_mse_loss(iou_pred, _logits_like(y), y).item() == pytest.approx(0.75**2)
    assert iou_mse_loss(iou_pred, -_logits_like(y), y).item() == pytest.approx(0.25**2)
    logits = left.clone().requires_grad_(True)
    loss = iou_mse_loss(iou_pred, logits, y)
    assert loss.item() == pytest.approx((0.25 - 1 / 3) ** 2)
    loss.backward()
    assert logits.grad is None and iou_pred.grad is not None  # the IoU target carries no gradient
    with pytest.raises(ValueError, match="one value per image"):
        iou_mse_loss(torch.zeros(2, 1), left, y)


def test_dispatcher():
    # Half target, p = 0.5 everywhere (logits 0): focal ln 2 / 8 and dice 32/65 (the tests above); nothing is
    # predicted (logits > 0 nowhere), so the thresholded IoU is 0 and the IoU term (0.5 - 0)^2.
    y = _half_target(2)
    logits = torch.zeros_like(y)
    iou_pred = torch.full((2, 1), 0.5)
    expected = math.log(2) / 8 + 32 / 65 + 0.25
    assert segmentation_loss("focal_dice_iou", logits, y, iou_pred).item() == pytest.approx(
        expected, rel=1e-6
    )
    with pytest.raises(ValueError, match="needs iou_pred"):
        segmentation_loss("focal_dice_iou", logits, y)
    with pytest.raises(ValueError, match="unknown segmentation loss 'bce'; choose one of structure, "):
        segmentation_loss("bce", logits, y)
    assert SEGMENTATION_LOSSES == (
        "structure",
        "structure_release",
        "focal_dice_iou",
        "focal_dice_iou_release",
    )
    with pytest.raises(ValueError, match=r"\(B, 1, S, S\)"):
        structure_loss(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8))


def test_structure_loss_gradient_is_finite():
    logits = torch.randn(2, 1, S, S, requires_grad=True)
    structure_loss(logits, _half_target(2)).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def _two_by_two():
    """Two images of 1 x 2 pixels: probabilities (0.5, 0.75) and (0.25, 0.5), targets (1, 0) and (0, 1)."""
    ln3 = math.log(3.0)
    logits = torch.tensor([[[[0.0, ln3]]], [[[-ln3, 0.0]]]])
    target = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]])
    return logits, target


def test_release_focal_dice_iou_by_hand():
    logits, y = _two_by_two()
    iou_pred = torch.tensor([[0.5], [0.2]])
    # Focal per pixel: fg alpha (1-p)^2 (-ln p); bg (1-alpha) p^2 (-ln(1-p)); alpha = 0.25; over N = 4 pixels.
    fg = 0.25 * 0.5**2 * -math.log(0.5)  # twice: p = 0.5 on both foreground pixels
    bg = 0.75 * 0.75**2 * -math.log(0.25) + 0.75 * 0.25**2 * -math.log(0.75)
    focal = (2 * fg + bg) / 4
    assert focal_loss_release(logits, y).item() == pytest.approx(focal, rel=1e-6)
    assert focal_loss(logits, y).item() == pytest.approx(focal, rel=1e-6)  # same where p is not saturated
    # Dice over the whole batch: sum(p y) = 1, sum(p) = 2, sum(y) = 2 -> 1 - 3/5. Per image (ours) differs.
    assert dice_loss_release(logits, y).item() == pytest.approx(0.4, rel=1e-6)
    per_image = ((1 - 2 / 3.25) + (1 - 2 / 2.75)) / 2
    assert dice_loss(logits, y).item() == pytest.approx(per_image, rel=1e-6)
    # One soft IoU of the batch: I = 1, U = 2 + 2 - 1 = 3; MSE against (0.5, 0.2).
    iou = (1 + 1e-7) / (3 + 1e-7)
    iou_term = ((iou - 0.5) ** 2 + (iou - 0.2) ** 2) / 2
    assert iou_mse_loss_release(iou_pred, logits, y).item() == pytest.approx(iou_term, rel=1e-5)
    total = 20 * focal + 0.4 + iou_term
    assert focal_dice_iou_release(logits, y, iou_pred).item() == pytest.approx(total, rel=1e-6)
    assert segmentation_loss("focal_dice_iou_release", logits, y, iou_pred).item() == pytest.approx(
        total, rel=1e-6
    )
    ours = segmentation_loss("focal_dice_iou", logits, y, iou_pred).item()
    assert abs(ours - total) > 2  # the two are different losses (mostly the focal weight 20)
    with pytest.raises(ValueError, match="needs iou_pred"):
        segmentation_loss("focal_dice_iou_release", logits, y)


def test_release_focal_saturates_and_iou_term_reaches_the_logits():
    # A confidently wrong background pixel: sigmoid(40) is 1.0 in float32, so the release pays -ln(1e-12) * 0.75.
    wrong = torch.full((1, 1, 1, 1), 40.0)
    bg = torch.zeros(1, 1, 1, 1)
    assert focal_loss_release(wrong, bg).item() == pytest.approx(0.75 * -math.log(1e-12), rel=1e-6)
    assert focal_loss(wrong, bg).item() == pytest.approx(0.75 * 40.0, rel=1e-6)  # BCE on logits keeps growing
    logits, y = _two_by_two()
    logits.requires_grad_(True)
    iou_mse_loss_release(torch.tensor([[0.5], [0.2]]), logits, y).backward()
    assert logits.grad.abs().sum() > 0  # not detached, unlike iou_mse_loss:
    assert not iou_mse_loss(torch.tensor([[0.5], [0.2]]), logits, y).requires_grad


def test_structure_weight_equals_the_31x31_box_mean():
    """The separable pooling is the 31 x 31 zero-padded box mean of the original (divided by 961 everywhere)."""
    # By hand: one foreground pixel at (20, 20) of 48 x 48. Its own window holds it once: w = 1 + 5 (1 - 1/961);
    # a background pixel within 15 rows and columns of it sees it: 1 + 5/961; one farther away: exactly 1.
    dot = torch.zeros(1, 1, 48, 48)
    dot[..., 20, 20] = 1
    w = structure_weight(dot)[0, 0]
    assert w[20, 20].item() == pytest.approx(1 + 5 * 960 / 961, rel=1e-6)
    assert w[35, 5].item() == pytest.approx(1 + 5 / 961, rel=1e-6) == w[5, 35].item()
    assert w[36, 20].item() == 1.0 and w[20, 4].item() == 1.0
    g = torch.Generator().manual_seed(0)
    for size in (8, 40, 64):
        y = (torch.rand(3, 1, size, size, generator=g) > 0.6).float()
        expected = 1 + 5 * (F.avg_pool2d(y, kernel_size=31, stride=1, padding=15) - y).abs()
        torch.testing.assert_close(structure_weight(y), expected, rtol=1e-6, atol=1e-6)  # float rounding
