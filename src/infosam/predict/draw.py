"""Overlays: an image with a mask tinted and its prompt drawn."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .prompts import Prompt

_TINT = np.array([30, 144, 255], dtype=np.float32)  # mask colour in overlays
_BOX_COLOUR = (255, 215, 0)
_POINT_COLOURS = {1: (0, 220, 0), 0: (230, 0, 0)}


def overlay(image: np.ndarray, mask: np.ndarray, prompt: Prompt, alpha: float = 0.5) -> Image.Image:
    """``image`` (H, W, 3) with the boolean ``mask`` (H, W) tinted and the prompt drawn (box, points)."""
    tinted = image.astype(np.float32)
    tinted[mask] = (1 - alpha) * tinted[mask] + alpha * _TINT
    picture = Image.fromarray(np.clip(tinted, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    width = max(1, round(max(image.shape[:2]) / 200))
    if prompt.box is not None:
        draw.rectangle(prompt.box, outline=_BOX_COLOUR, width=width)
    radius = 2 * width + 1
    for (x, y), label in zip(prompt.points, prompt.labels, strict=True):
        draw.ellipse(
            (x - radius, y - radius, x + radius, y + radius), outline=_POINT_COLOURS[label], width=width
        )
    return picture
