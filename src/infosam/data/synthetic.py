"""Deterministic synthetic image/mask pairs in two domains, for tests and the demo (numpy only, no downloads).

- ``source``: one bright, smooth ellipse on a dark, finely noisy, uniform background. High contrast, no clutter.
- ``target``: a shifted domain of the same task (one object per image, box-promptable): lobed and rectangular
  shapes, dimmer textured objects on a striped mid-tone background of another colour, low contrast, and
  distractor shapes of similar colour outside (and overlapping) the object's box.

A model trained on ``source`` segments ``target`` poorly but not hopelessly (the box still says where the object
is); a little fine-tuning on ``target`` closes much of the gap. Every pair depends only on (seed, domain, index),
so a set of n images is a prefix of a set of n + 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..files import atomic_save_image

DOMAINS = ("source", "target")
_DOMAIN_KEYS = {"source": 0, "target": 1}


def _check_domain(domain: str) -> None:
    if domain not in _DOMAIN_KEYS:
        raise ValueError(f"unknown synthetic domain {domain!r}; valid choices: {', '.join(DOMAINS)}")


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 16 or w < 16:
        raise ValueError(f"synthetic image size must be at least 16x16 pixels, got {h}x{w}")
    return h, w


def _polar_shape(
    h: int,
    w: int,
    center: tuple[float, float],
    radii: tuple[float, float],
    angle: float,
    lobes: int,
    depth: float,
) -> np.ndarray:
    """Boolean (H, W) mask of a rotated ellipse whose radius is modulated by ``lobes`` bumps of relative ``depth``."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dy, dx = yy - center[0], xx - center[1]
    c, s = np.cos(angle), np.sin(angle)
    u, v = (c * dx + s * dy) / radii[1], (-s * dx + c * dy) / radii[0]
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    bound = 1.0 + depth * np.cos(lobes * theta) if lobes > 0 else 1.0
    return rho <= bound


def _rectangle(
    h: int, w: int, center: tuple[float, float], half: tuple[float, float], angle: float
) -> np.ndarray:
    """Boolean (H, W) mask of a rotated rectangle with half-sides ``half`` = (half height, half width)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dy, dx = yy - center[0], xx - center[1]
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    return (np.abs(u) <= half[1]) & (np.abs(v) <= half[0])


def _smooth(x: np.ndarray) -> np.ndarray:
    """3x3 box blur over the first two axes (edge-replicated), to soften hard synthetic edges."""
    pad = np.pad(x, ((1, 1), (1, 1)) + ((0, 0),) * (x.ndim - 2), mode="edge")
    h, w = x.shape[:2]
    return sum(pad[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


def _random_center(rng: np.random.Generator, h: int, w: int, margin: float) -> tuple[float, float]:
    return (rng.uniform(margin * h, (1 - margin) * h), rng.uniform(margin * w, (1 - margin) * w))


def _source_pair(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    side = min(h, w)
    center = _random_center(rng, h, w, 0.3)
    radii = (rng.uniform(0.12, 0.26) * side, rng.uniform(0.12, 0.26) * side)
    mask = _polar_shape(h, w, center, radii, rng.uniform(0, np.pi), lobes=0, depth=0.0)

    background = rng.uniform(15, 50) + rng.normal(0, 8, size=(h, w, 1)) + rng.normal(0, 3, size=(h, w, 3))
    colour = rng.uniform(190, 250, size=3)
    yy, xx = np.mgrid[0:h, 0:w]
    shade = 1.0 - 0.25 * np.hypot((yy - center[0]) / side, (xx - center[1]) / side)  # smooth radial shading
    foreground = colour * shade[..., None]
    image = np.where(mask[..., None], foreground, background)
    return _smooth(image), mask


def _target_object(rng: np.random.Generator, h: int, w: int, center: tuple[float, float]) -> np.ndarray:
    side = min(h, w)
    angle = rng.uniform(0, np.pi)
    if rng.random() < 0.6:
        radii = (rng.uniform(0.12, 0.25) * side, rng.uniform(0.12, 0.25) * side)
        return _polar_shape(
            h, w, center, radii, angle, lobes=int(rng.integers(3, 7)), depth=rng.uniform(0.2, 0.4)
        )
    half = (rng.uniform(0.08, 0.2) * side, rng.uniform(0.1, 0.25) * side)
    return _rectangle(h, w, center, half, angle)


def _target_pair(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    side = min(h, w)
    center = _random_center(rng, h, w, 0.3)
    mask = _target_object(rng, h, w, center)

    # Striped, coloured mid-tone background.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    period = rng.uniform(0.12, 0.3) * side
    direction = rng.uniform(0, np.pi)
    stripes = np.sin(2 * np.pi * (np.cos(direction) * xx + np.sin(direction) * yy) / period)
    base = rng.uniform(70, 130, size=3)
    background = base + 22 * stripes[..., None] + rng.normal(0, 12, size=(h, w, 3))

    # Low contrast object: the background colour brightened by a small offset (the same polarity as the source,
    # so a source model is poor here but not hopeless), with its own fine texture.
    offset = rng.uniform(35, 60) * np.ones(3) + rng.normal(0, 8, size=3)
    object_colour = base + offset
    foreground = object_colour + rng.normal(0, 14, size=(h, w, 3))

    # Clutter: two or three distractors in the object's colour, never on the object itself.
    clutter = np.zeros((h, w), dtype=bool)
    for _ in range(int(rng.integers(2, 4))):
        c = (center[0] + rng.uniform(-0.45, 0.45) * h, center[1] + rng.uniform(-0.45, 0.45) * w)
        r = rng.uniform(0.05, 0.12) * side
        clutter |= _polar_shape(h, w, c, (r, r * rng.uniform(0.6, 1.4)), rng.uniform(0, np.pi), 0, 0.0)
    clutter &= ~_dilate(mask, 2)

    image = np.where((mask | clutter)[..., None], foreground, background)
    return _smooth(image), mask


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    padded = np.pad(mask, radius)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for i in range(2 * radius + 1):
        for j in range(2 * radius + 1):
            out |= padded[i : i + h, j : j + w]
    return out


def synthetic_pair(
    index: int, *, domain: str = "source", size: int | tuple[int, int] = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Pair number ``index`` of ``domain``: image (H, W, 3) uint8 RGB and mask (H, W) uint8 in {0, 1}.

    ``size`` is H = W or (H, W). The pair depends only on (seed, domain, index, size).
    """
    _check_domain(domain)
    h, w = _size_hw(size)
    rng = np.random.default_rng([int(seed), _DOMAIN_KEYS[domain], int(index)])
    make = _source_pair if domain == "source" else _target_pair
    image, mask = make(rng, h, w)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask.astype(np.uint8)


def write_synthetic_dataset(
    path: str | Path,
    n: int,
    *,
    domain: str = "source",
    size: int | tuple[int, int] = 64,
    seed: int = 0,
    start: int = 0,
) -> Path:
    """Write ``n`` pairs as a plain folder dataset: ``path/images/<stem>.png`` and ``path/masks/<stem>.png``.

    Masks are single-channel 0/255 PNGs. Stems are ``<domain>_<index:05d>`` for indices ``start .. start+n-1``
    (use disjoint ranges or seeds for train and test sets). Refuses to write into a folder that already holds
    images, so two sets never mix silently. Returns ``path``.
    """
    _check_domain(domain)
    if n < 1:
        raise ValueError(f"number of synthetic images must be >= 1, got {n}")
    root = Path(path)
    images, masks = root / "images", root / "masks"
    for folder in (images, masks):
        if folder.is_dir() and any(folder.iterdir()):
            raise FileExistsError(
                f"{folder} already holds files; choose an empty folder for the synthetic set"
            )
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for index in range(start, start + n):
        image, mask = synthetic_pair(index, domain=domain, size=size, seed=seed)
        stem = f"{domain}_{index:05d}"
        atomic_save_image(images / f"{stem}.png", Image.fromarray(image))
        atomic_save_image(masks / f"{stem}.png", Image.fromarray(mask * 255))
    return root
