"""Tiny synthetic instance datasets (COCO JSON, instance-label images) for the instance-format tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def rect_polygon(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def write_coco(
    root: Path, images: list[dict], annotations: list[dict], categories=None, name="annotations.json"
):
    """``images``: dicts with ``file_name``, ``width``, ``height`` (and ``id``); their pixels are written as random
    RGB unless ``write: False``. Returns the annotation file path."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    entries = []
    for i, im in enumerate(images, start=1):
        entry = {
            "id": im.get("id", i),
            "file_name": im["file_name"],
            "width": im["width"],
            "height": im["height"],
        }
        entries.append(entry)
        if im.get("write", True):
            size = im.get("pixels", (im["height"], im["width"]))
            Image.fromarray(rgb(*size, seed=i)).save(root / "images" / im["file_name"])
    categories = categories or [{"id": 1, "name": "cell"}, {"id": 2, "name": "nucleus"}]
    path = root / name
    path.write_text(json.dumps({"images": entries, "annotations": annotations, "categories": categories}))
    return path


def two_object_coco(root: Path, n_images: int = 3, size: int = 48) -> Path:
    """``n_images`` images with two objects each: a polygon rectangle (category cell) on the left and an
    uncompressed-RLE rectangle (category nucleus) on the right; plus one crowd annotation on the first image."""
    images = [{"file_name": f"im{i}.png", "width": size, "height": size} for i in range(n_images)]
    anns = []
    aid = 1
    for i in range(n_images):
        anns.append(
            {
                "id": aid,
                "image_id": i + 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentation": [rect_polygon(4 + i, 6, 20 + i, 30)],
            }
        )
        right = np.zeros((size, size), np.uint8)
        right[10 + i : 40, 28:44] = 1
        anns.append(
            {
                "id": aid + 1,
                "image_id": i + 1,
                "category_id": 2,
                "iscrowd": 0,
                "segmentation": uncompressed_rle(right),
            }
        )
        aid += 2
    anns.append(
        {"id": 999, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": [rect_polygon(0, 0, 5, 5)]}
    )
    return write_coco(root, images, anns)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (column-major run lengths starting with zeros)."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def label_dataset(root: Path, n_images: int = 2, size: int = 40, bits: int = 16) -> Path:
    """images/ + labels/ with objects 1..3 (16-bit PNG ids 1, 2, 300 when ``bits`` is 16; 1, 2, 3 at 8 bits)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    third = 300 if bits == 16 else 3
    for i in range(n_images):
        Image.fromarray(rgb(size, size, seed=10 + i)).save(root / "images" / f"s{i}.png")
        lab = np.zeros((size, size), np.uint16 if bits == 16 else np.uint8)
        lab[2:12, 2:12] = 1
        lab[20:35, 5:15] = 2
        lab[22:30, 22 + i : 36] = third
        Image.fromarray(lab).save(root / "labels" / f"s{i}.png")
    return root
