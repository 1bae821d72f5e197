"""LiteMedSAM's transform (upstream training recipe): sizes, normalisation, padding, prompts, post-processing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from infosam.sam.transforms import LiteMedSamTransform


def test_input_shape_rounds_like_upstream():
    t = LiteMedSamTransform(256)
    assert t.input_shape(1070, 1348) == (203, 256)  # 1070 * 256 / 1348 = 203.2
    assert t.input_shape(423, 640) == (169, 256)  # 169.2
    assert t.input_shape(529, 622) == (218, 256)  # 217.7 -> 218 (+0.5 rounding, not truncation)
    assert t.input_shape(300, 100) == (256, 85)  # 85.33
    assert t.input_shape(256, 256) == (256, 256)


def test_image_is_area_resized_min_max_normalised_and_zero_padded():
    rng = np.random.default_rng(0)
    image = rng.integers(30, 200, size=(150, 400, 3)).astype(np.uint8)
    x, (h, w) = LiteMedSamTransform(256).image(image)
    assert x.shape == (3, 256, 256) and x.dtype == torch.float32 and (h, w) == (96, 256)
    valid = x[:, :h, :w]
    assert valid.min().item() == 0.0 and valid.max().item() == 1.0  # whole image, not per channel
    assert torch.count_nonzero(x[:, h:, :]) == 0 and torch.count_nonzero(x[:, :, w:]) == 0
    area = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA).astype(np.float64)
    expected = (area - area.min()) / (area.max() - area.min())
    assert np.allclose(valid.permute(1, 2, 0).numpy(), expected, atol=1e-6)
    linear = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float64)
    assert not np.allclose(
        valid.permute(1, 2, 0).numpy(), (linear - linear.min()) / np.ptp(linear), atol=1e-3
    )
    assert torch.count_nonzero(LiteMedSamTransform(256).image(np.full((20, 30, 3), 7, np.uint8))[0]) == 0


def test_mask_follows_the_image_geometry():
    mask = np.zeros((150, 400), dtype=bool)
    mask[30:90, 100:300] = True
    m = LiteMedSamTransform(256).mask(mask)
    assert m.shape == (1, 256, 256) and set(m.unique().tolist()) == {0.0, 1.0}
    assert torch.count_nonzero(m[:, 96:, :]) == 0
    ys, xs = torch.nonzero(m[0], as_tuple=True)
    assert (ys.min().item(), ys.max().item()) == pytest.approx((19, 57), abs=1)  # 30 * 0.64, 89 * 0.64
    assert (xs.min().item(), xs.max().item()) == pytest.approx((64, 191), abs=1)
    with pytest.raises(ValueError, match=r"\(H, W\) mask"):
        LiteMedSamTransform(256).mask(np.zeros((2, 3, 4)))


def test_boxes_scale_by_the_longest_side():
    t = LiteMedSamTransform(256)
    box = torch.tensor([[100.0, 50.0, 300.0, 149.0]])
    assert torch.allclose(t.boxes(box, (150, 400)), box * 0.64)
    assert np.allclose(t.coords(np.array([[400.0, 150.0]]), (150, 400)), [[256.0, 96.0]])
    with pytest.raises(ValueError, match="uint8 RGB"):
        t.image(np.zeros((4, 4, 3), dtype=np.float32))


def test_postprocess_crops_the_padding_then_resizes():
    t = LiteMedSamTransform(256)
    logits = torch.full((1, 1, 256, 256), -5.0)
    logits[..., :96, :] = 3.0
    logits[..., 96:, :] = 100.0  # padding rows: must not leak into the result
    out = t.postprocess(logits, (96, 256), (150, 400))
    assert out.shape == (1, 1, 150, 400)
    assert torch.allclose(out, torch.full_like(out, 3.0))
    # Logits at another side (e.g. a tiny model's 64 x 64 at S = 64) come back at the original size too.
    assert LiteMedSamTransform(64).postprocess(torch.zeros(2, 1, 64, 64), (24, 64), (150, 400)).shape == (
        2,
        1,
        150,
        400,
    )
    assert t.fingerprint()["family"] == "litemedsam" and "INTER_AREA" in t.fingerprint()["interpolation"]


def test_registered_for_the_tinyvit_specs_and_fingerprinted_apart_from_sam():
    from infosam.sam.specs import get_spec
    from infosam.sam.transforms import TRANSFORMS, MetaSamTransform, SamTransform, get_transform

    assert TRANSFORMS["litemedsam"] is LiteMedSamTransform and issubclass(LiteMedSamTransform, SamTransform)
    assert get_transform(get_spec("litemedsam")) == LiteMedSamTransform(256)
    assert get_transform(get_spec("tiny_tinyvit")).family == get_spec("tiny_tinyvit").transform
    assert type(get_transform(get_spec("mobile_sam"))) is TRANSFORMS[get_spec("mobile_sam").transform]
    # Same size, other recipe: the teacher cache must never mix their embeddings.
    assert LiteMedSamTransform(256).fingerprint() != MetaSamTransform(256).fingerprint()
    assert LiteMedSamTransform(256) != MetaSamTransform(256)
