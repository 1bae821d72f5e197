"""SAM's input transform: same pixels as Meta's SamPredictor path, masks resized alike."""

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from infosam.sam.preprocess import preprocess_image, preprocess_mask, resize_longest_side_shape


@pytest.mark.parametrize(
    "hw, size, expected",
    [
        ((529, 622), 1024, (871, 1024)),
        ((1072, 1920), 1024, (572, 1024)),
        ((37, 50), 64, (47, 64)),
        ((64, 64), 64, (64, 64)),
    ],
)
def test_resize_longest_side_shape_matches_meta(hw, size, expected):
    assert resize_longest_side_shape(*hw, size) == expected
    assert resize_longest_side_shape(*hw, size) == ResizeLongestSide.get_preprocess_shape(*hw, size)


@pytest.mark.parametrize("hw", [(37, 50), (50, 37), (64, 64), (90, 130)])
def test_preprocess_image_equals_meta_predictor_path(tiny_sam, hw):
    sam = tiny_sam()
    size = sam.image_encoder.img_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)

    resized = ResizeLongestSide(size).apply_image(image)
    meta = sam.preprocess(torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None].float())[0]
    ours, input_size = preprocess_image(image, size)

    assert input_size == resized.shape[:2]
    assert ours.shape == (3, size, size) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, meta, rtol=0, atol=1e-5)


def test_preprocess_mask_resizes_nearest_and_pads():
    mask = np.zeros((30, 60), dtype=bool)
    mask[10:20, 20:40] = True
    out = preprocess_mask(mask, 64)
    assert out.shape == (1, 64, 64) and out.dtype == torch.float32
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    h, w = resize_longest_side_shape(30, 60, 64)
    assert out[0, h:].sum() == 0 and out[0, :, w:].sum() == 0  # padding is background
    # Nearest resize by ~1.067 keeps the rectangle's area close to scale^2 times the original.
    assert abs(out.sum().item() - 200 * (64 / 60) ** 2) < 30
