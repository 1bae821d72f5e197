"""Metrics on hand-made masks whose answers are known, the logits-to-original path and the release mode."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from infosam.metrics import (
    MetricAccumulator,
    image_metrics,
    iou_dice,
    logits_to_map,
    summarize,
    to_uint8,
)
from infosam.sam.transforms import MetaSamTransform


def gt_20x20():
    """20 foreground pixels away from the border (the weighted F-measure's 7x7 filter pads with zeros)."""
    gt = np.zeros((20, 20), bool)
    gt[8:12, 7:12] = True
    return gt


def perfect(n_pixels):
    # py_sod_metrics' E-measure divides by (N - 1), like the original MATLAB code: perfect is N / (N - 1).
    e = n_pixels / (n_pixels - 1)
    return {
        "S": 1.0,
        "E_adp": e,
        "E_mean": pytest.approx(e, abs=0.01),
        "Fw": 1.0,
        "MAE": 0.0,
        "IoU": 1.0,
        "Dice": 1.0,
    }


def test_iou_dice_mae_by_hand():
    gt = gt_20x20()
    pred = np.zeros((20, 20))
    pred[8:10, 7:12] = 1.0  # 10 of the 20 ground-truth pixels
    pred[16:18, 0:5] = 1.0  # 10 false positives
    m = image_metrics(pred, gt)
    assert m["IoU"] == pytest.approx(10 / 30)
    assert m["Dice"] == pytest.approx(2 * 10 / 40)
    assert m["MAE"] == pytest.approx(20 / 400)


def test_perfect_prediction_is_perfect():
    gt = gt_20x20()
    m = image_metrics(gt.astype(float), gt)
    assert m == pytest.approx(perfect(gt.size))


def test_all_background_prediction():
    gt = gt_20x20()
    m = image_metrics(np.zeros((20, 20)), gt)
    assert m["IoU"] == 0 and m["Dice"] == 0 and m["Fw"] == pytest.approx(0.0, abs=1e-6)
    assert m["MAE"] == pytest.approx(20 / 400)  # |0 - 1| on the 20 foreground pixels
    assert m["S"] < 0.5
    # Empty ground truth, empty prediction: nothing to find, nothing found.
    empty = image_metrics(np.zeros((20, 20)), np.zeros((20, 20), bool))
    assert empty["IoU"] == 1 and empty["Dice"] == 1 and empty["S"] == 1 and empty["MAE"] == 0


def test_compat_thresholds_average():
    gt = gt_20x20()
    pred = gt * 0.4  # above 0.1 and 0.3 only
    assert iou_dice(pred, gt) == (0.0, 0.0)
    assert image_metrics(pred, gt, compat=True)["IoU"] == pytest.approx(2 / 5)
    assert image_metrics(pred, gt, compat=True)["Dice"] == pytest.approx(2 / 5)


def test_uint8_rounding_and_map_modes():
    assert to_uint8(np.array([0.0, 0.5, 0.999, 1.0, 1.7, -3.0])).tolist() == [0, 128, 255, 255, 255, 0]
    logits = torch.tensor([-2.0, 0.0, 0.5, 3.0])
    torch.testing.assert_close(logits_to_map(logits), torch.sigmoid(logits))
    assert logits_to_map(logits, compat=True).tolist() == [0.0, 0.0, 0.5, 1.0]


def test_logits_to_original_crops_padding_and_resizes():
    h_orig, w_orig = 30, 50
    gt = np.zeros((h_orig, w_orig), bool)
    gt[5:25, 10:35] = True
    transform = MetaSamTransform(64)
    padded = transform.mask(gt)[None]  # (1, 1, 64, 64)
    low = F.avg_pool2d(padded, 4)  # (1, 1, 16, 16) like SAM's low-res logits
    logits = (low - 0.5) * 40
    full = transform.postprocess(logits, transform.input_shape(h_orig, w_orig), (h_orig, w_orig))[0, 0]
    assert full.shape == (h_orig, w_orig)
    prob = logits_to_map(full).numpy()
    assert iou_dice(prob, gt)[0] > 0.9
    # Constant logits stay constant.
    const = transform.postprocess(torch.full((1, 1, 16, 16), 2.0), (38, 64), (30, 50))
    torch.testing.assert_close(const, torch.full((1, 1, 30, 50), 2.0))


def test_accumulator_rows_and_summary():
    acc = MetricAccumulator()
    gt = np.ones((64, 64), bool)
    acc.add("a", torch.full((64, 64), 10.0), gt)
    acc.add("b", torch.full((64, 64), -10.0), gt)
    assert [r["id"] for r in acc.rows] == ["a", "b"]
    s = acc.summary()
    assert s["n_images"] == 2 and s["IoU"] == pytest.approx(0.5)
    assert summarize([]) == {"n_images": 0}


def test_perfect_and_empty_on_real_kvasir(kvasir_dir):
    from infosam.data.formats import open_dataset

    ds = open_dataset(kvasir_dir, image_size=1024)
    _, gt = ds.read_pair(3)
    m = image_metrics(gt.astype(float), gt)
    assert m == pytest.approx(perfect(gt.size))
    m0 = image_metrics(np.zeros(gt.shape), gt)
    assert m0["IoU"] == 0 and m0["Dice"] == 0 and m0["MAE"] == pytest.approx(gt.mean())


def test_best_of_prefers_lower_mae_and_higher_others():
    from infosam.metrics import LOWER_IS_BETTER, best_of

    assert LOWER_IS_BETTER == {"MAE"}
    summaries = {
        3: {"IoU": 0.5, "MAE": 0.2, "S": 0.7},
        4: {"IoU": 0.6, "MAE": 0.3},
        5: {"IoU": 0.6, "MAE": 0.1},
    }
    best = best_of(summaries)
    assert best["IoU"] == {"epoch": 4, "value": 0.6}  # ties keep the earlier epoch
    assert best["MAE"] == {"epoch": 5, "value": 0.1}
    assert best["S"] == {"epoch": 3, "value": 0.7} and "Dice" not in best


def test_iou_dice_threshold_logits_at_zero_not_float32_sigmoid():
    """Logits in (0, 6e-8) are foreground (SAM's ``logits > 0``); float32 sigmoid rounds them to 0.5 exactly."""
    gt = np.zeros((64, 64), bool)
    gt[:, :32] = True
    logits = torch.full((64, 64), -1e-8)
    logits[..., :32] = 1e-8
    acc = MetricAccumulator()
    row = acc.add("tiny", logits, gt)
    assert row["IoU"] == 1.0 and row["Dice"] == 1.0
    # The release-compatible mode keeps its own rule (clipped logits over five thresholds): 1e-8 is background.
    compat = MetricAccumulator(compat=True).add("tiny", logits, gt)
    assert compat["IoU"] == 0.0
    with pytest.raises(ValueError, match="foreground shape"):
        image_metrics(np.zeros((4, 4)), np.zeros((4, 4), bool), foreground=np.zeros((3, 4), bool))


def test_reports_show_percent_except_lower_is_better_metrics():
    """One rule for the units of every report table and figure (metrics.display_scale): Dice and the other
    higher-is-better metrics in percent, MAE as a fraction; small differences keep two significant digits."""
    from infosam.experiment.page import _pct, _pm, _points
    from infosam.metrics import display_scale

    assert display_scale("Dice") == (100.0, "Dice (%)")
    assert display_scale("MAE") == (1.0, "MAE")
    assert _pct("Dice", 0.70345) == "70.3" and _pct("MAE", 0.01234) == "0.012"
    assert _pm("IoU", 0.5, float("nan")) == "50.0 ± -"
    assert _points("Dice", -0.0132) == "-1.32" and _points("MAE", 0.00123) == "+0.0012"
    assert _points("Dice", 4e-7) == "+4.0e-05"  # 4e-5 points: would print as +0.00
    assert _pct("Dice", float("nan")) == "n/a" and _points("Dice", None) == "-"
