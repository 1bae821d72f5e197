"""Overlays: an image with a mask tinted and its prompt drawn (:func:`overlay`), or with each of several objects'
masks tinted and prompts drawn in the object's own colour (:func:`overlay_objects`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .prompts import Prompt

_TINT = np.array([30, 144, 255], dtype=np.float32)  # mask colour in overlays
_BOX_COLOUR = (255, 215, 0)
_POINT_COLOURS = {1: (0, 220, 0), 0: (230, 0, 0)}
_OBJECT_COLOURS = (
    (30, 144, 255),
    (255, 99, 71),
    (50, 205, 50),
    (255, 215, 0),
    (186, 85, 211),
    (0, 206, 209),
    (255, 140, 0),
    (255, 105, 180),
)
"""Object overlays: the i-th object's mask tint and box colour, cycling."""


def overlay(image: np.ndarray, mask: np.ndarray, prompt: Prompt, alpha: float = 0.5) -> Image.Image:
    """``image`` (H, W, 3) with the boolean ``mask`` (H, W) tinted and the prompt drawn (box, points)."""
    return _draw(image, [(mask, prompt, _TINT, _BOX_COLOUR)], alpha)


def overlay_objects(
    image: np.ndarray, masks: Sequence[np.ndarray], prompts: Sequence[Prompt], alpha: float = 0.5
) -> Image.Image:
    """``image`` (H, W, 3) with every object's boolean mask (H, W) tinted and its prompt drawn, each object in its
    own colour (eight, cycling; a later object's tint over an earlier one's where they overlap)."""
    colours = [_OBJECT_COLOURS[i % len(_OBJECT_COLOURS)] for i in range(len(masks))]
    objects = [
        (mask, prompt, np.array(colour, dtype=np.float32), colour)
        for mask, prompt, colour in zip(masks, prompts, colours, strict=True)
    ]
    return _draw(image, objects, alpha)


def _draw(image: np.ndarray, objects: list[tuple], alpha: float) -> Image.Image:
    """``image`` with each ``(mask, prompt, tint, box colour)`` tinted in turn, then the prompts drawn."""
    tinted = image.astype(np.float32)
    for mask, _, tint, _ in objects:
        tinted[mask] = (1 - alpha) * tinted[mask] + alpha * tint
    picture = Image.fromarray(np.clip(tinted, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    width = max(1, round(max(image.shape[:2]) / 200))
    radius = 2 * width + 1
    for _, prompt, _, box_colour in objects:
        if prompt.box is not None:
            draw.rectangle(prompt.box, outline=box_colour, width=width)
        for (x, y), label in zip(prompt.points, prompt.labels, strict=True):
            draw.ellipse(
                (x - radius, y - radius, x + radius, y + radius), outline=_POINT_COLOURS[label], width=width
            )
    return picture
