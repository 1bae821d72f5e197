"""SAM's transform: same pixels, coordinates and logits as Meta's SamPredictor path, masks resized alike."""

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from infosam.sam.specs import get_spec
from infosam.sam.transforms import TRANSFORMS, MetaSamTransform, get_transform, make_transform


def resize_longest_side_shape(height, width, size):
    return MetaSamTransform(size).input_shape(height, width)


def preprocess_image(image, size):
    return MetaSamTransform(size).image(image)


def preprocess_mask(mask, size):
    return MetaSamTransform(size).mask(mask)


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


def test_coords_and_boxes_match_meta_resize_longest_side():
    original = (100, 200)  # H, W -> resized to (32, 64) at S = 64
    box = np.array([[20.0, 10.0], [180.0, 90.0]])
    transform = MetaSamTransform(64)
    mapped = transform.coords(box, original)
    np.testing.assert_allclose(mapped, [[6.4, 3.2], [57.6, 28.8]])
    meta = ResizeLongestSide(64).apply_boxes(box.reshape(1, 4), original)
    np.testing.assert_allclose(transform.boxes(box.reshape(1, 4), original), meta)
    as_tensor = transform.boxes(torch.tensor(box.reshape(1, 4), dtype=torch.float32), original)
    torch.testing.assert_close(as_tensor, torch.tensor(meta, dtype=torch.float32))


@pytest.mark.parametrize("hw", [(37, 50), (50, 37), (64, 64)])
def test_postprocess_equals_meta_postprocess_masks(tiny_sam, hw):
    sam = tiny_sam()
    transform = get_transform(sam.spec)
    low = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    input_size = transform.input_shape(*hw)
    ours = transform.postprocess(low, input_size, hw)
    meta = sam.postprocess_masks(low, input_size, hw)
    assert ours.shape == (2, 1, *hw)
    torch.testing.assert_close(ours, meta, rtol=0, atol=1e-5)


def test_registry_and_spec_field():
    assert TRANSFORMS["sam"] is MetaSamTransform
    spec = get_spec("tiny")
    assert spec.transform == "sam"
    assert get_transform(spec) == MetaSamTransform(64)
    assert get_transform(get_spec("vit_b", image_size=512)).image_size == 512
    assert MetaSamTransform(64) != MetaSamTransform(32)
    assert MetaSamTransform(64).fingerprint()["family"] == "sam"
    with pytest.raises(ValueError, match="unknown SAM transform .nope.; known transforms: sam, litemedsam"):
        make_transform("nope", 64)
