"""SAM's input transform: resize the longest side, normalise with SAM's pixel statistics, pad bottom/right.

The image path is the same maths as Meta's ``ResizeLongestSide.apply_image`` followed by ``Sam.preprocess``
(PIL bilinear resize of the uint8 image, as torchvision's ``resize(to_pil_image(image))`` does), so a model
sees exactly what Meta's ``SamPredictor`` would feed it. Masks get the same resize (nearest) and zero padding.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .build import PIXEL_MEAN, PIXEL_STD

TRANSFORM_VERSION = 1
"""Bump when :func:`preprocess_image` changes what it outputs: caches of model outputs then miss instead of serving
results computed from the old inputs."""


def preprocessing_fingerprint(image_size: int) -> dict:
    """What :func:`preprocess_image` does, as a JSON-able dict for cache fingerprints (family, size, resize rule,
    interpolation, normalisation, padding, version)."""
    return {
        "family": "sam",
        "version": TRANSFORM_VERSION,
        "image_size": int(image_size),
        "resize": "longest side to image_size, int(side * scale + 0.5)",
        "interpolation": "PIL bilinear on uint8 RGB",
        "normalisation": {"mean": list(PIXEL_MEAN), "std": list(PIXEL_STD)},
        "padding": "zeros, bottom/right, after normalisation",
        "dtype": "float32",
    }


def resize_longest_side_shape(height: int, width: int, image_size: int) -> tuple[int, int]:
    """Size ``(h, w)`` after scaling ``(height, width)`` so that the longest side is ``image_size``.

    Same rounding as Meta's ``ResizeLongestSide.get_preprocess_shape``: ``int(side * scale + 0.5)``.
    """
    scale = image_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_image(image: np.ndarray, image_size: int) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 RGB image so its longest side is ``image_size`` (PIL bilinear)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"expected an (H, W, 3) uint8 RGB image, got shape {image.shape} dtype {image.dtype}"
        )
    h, w = resize_longest_side_shape(image.shape[0], image.shape[1], image_size)
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))


def normalize_and_pad(image: torch.Tensor, image_size: int) -> torch.Tensor:
    """Normalise a ``(3, h, w)`` 0-255 image with SAM's mean/std and zero-pad it to ``(3, S, S)``, S = image_size."""
    mean = torch.tensor(PIXEL_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD, dtype=torch.float32).view(3, 1, 1)
    x = (image.float() - mean) / std
    h, w = x.shape[-2:]
    return F.pad(x, (0, image_size - w, 0, image_size - h))


def preprocess_image(image: np.ndarray, image_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """SAM's model input for one image.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        image_size: side S of the square model input (1024 for the official models).

    Returns:
        ``(x, (h, w))``: ``x`` of shape ``(3, S, S)`` float32, normalised, zero-padded bottom/right;
        ``(h, w)`` the resized size before padding (the valid region of ``x``).
    """
    resized = resize_image(image, image_size)
    x = torch.from_numpy(np.array(resized, copy=True)).permute(2, 0, 1)
    return normalize_and_pad(x, image_size), (resized.shape[0], resized.shape[1])


def preprocess_mask(mask: np.ndarray, image_size: int) -> torch.Tensor:
    """Resize an ``(H, W)`` {0, 1} (or bool) mask like its image (nearest) and zero-pad it.

    Returns:
        ``(1, S, S)`` float32 with values in {0, 1}.
    """
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    h, w = resize_longest_side_shape(mask.shape[0], mask.shape[1], image_size)
    pil = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8))
    resized = np.asarray(pil.resize((w, h), Image.Resampling.NEAREST))
    out = torch.zeros(1, image_size, image_size, dtype=torch.float32)
    out[0, :h, :w] = torch.from_numpy(resized.astype(np.float32))
    return out
