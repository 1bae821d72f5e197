"""One mask per object (from a COCO file or a box list), one overlay per image with all of its objects, and a COCO
results file: every object checked first (:func:`plan_object_predictions`), each image encoded once
(:func:`write_object_predictions`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from segment_anything.modeling import Sam

from ..data.reading import read_image
from ..files import atomic_save_image
from .draw import overlay_objects
from .outputs import check_out_folder, check_targets, refuse
from .prompts import Prompt
from .segment import decode_prompt, encode_image, probability_to_logit

RESULTS_FILE = "results.json"
"""COCO results file written by object predictions: one entry per object, ``segmentation`` a compressed RLE."""
BOX_LIST_COLUMNS = ("image", "x0", "y0", "x1", "y1")


@dataclass
class ObjectJob:
    """One object to segment: its image, its id and prompt, and where its mask goes."""

    image: Path
    object_id: int
    prompt: Prompt
    mask: Path
    image_id: int | str
    """The image's id in the results JSON (the COCO file's image id; for a box list its ``image_id`` column, else
    the image's file name)."""
    category_id: int | None = None
    overlay: Path | None = None
    """The overlay of the object's image (every object of that image drawn on it); None: no overlay."""


def plan_object_predictions(
    objects: Sequence[tuple], out_dir: str | Path, *, overwrite: bool = False, threshold: float = 0.5
) -> list[ObjectJob]:
    """Check everything before any model loads or anything is written: every image decoded, every prompt inside
    its image, no two objects of one image with one id, no output (``<out>/masks/<stem>/<object id>.png``,
    ``<out>/overlays/<stem>.png`` and ``<out>/results.json``) existing unless ``overwrite``. ``objects`` as
    :func:`coco_object_prompts` gives."""
    probability_to_logit(threshold)
    out_dir = Path(out_dir)
    check_out_folder(out_dir)
    if not objects:
        raise ValueError("no object to predict (the COCO file or box list lists none)")
    targets = [out_dir / RESULTS_FILE]
    jobs, seen, stems = [], set(), {}
    for image, object_id, prompt, image_id, category in objects:
        image = Path(image)
        if stems.setdefault(image.stem, image) != image:
            raise ValueError(
                f"{stems[image.stem]} and {image} share the stem {image.stem!r}; outputs would collide"
            )
        if (image, object_id) in seen:
            raise ValueError(f"{image}: object id {object_id} is given twice")
        seen.add((image, object_id))
        mask, drawn = (
            out_dir / "masks" / image.stem / f"{object_id}.png",
            out_dir / "overlays" / f"{image.stem}.png",
        )
        targets.append(mask)
        jobs.append(ObjectJob(image, object_id, prompt, mask, image_id, category, drawn))
    check_targets([*targets, *dict.fromkeys(j.overlay for j in jobs)], overwrite)
    problems = []
    for image in dict.fromkeys(j.image for j in jobs):
        try:
            pixels, _ = read_image(image)
        except (ValueError, OSError) as err:
            problems.append(str(err))
            continue
        for job in (j for j in jobs if j.image == image):
            try:
                job.prompt.check_inside(pixels.shape[1], pixels.shape[0], f"{image} (object {job.object_id})")
            except ValueError as err:
                problems.append(str(err))
    refuse(problems, "object(s)", one_as_is=False)
    return jobs


def write_object_predictions(
    model: Sam,
    jobs: Sequence[ObjectJob],
    out_dir: str | Path,
    threshold: float = 0.5,
    *,
    on_image: Callable[[int, int], None] | None = None,
) -> Path:
    """Segment each planned object (each image encoded once), write its 0/255 mask at the image's original size
    and, per image, its overlay (:func:`~infosam.predict.draw.overlay_objects`: every object's mask and box in the
    object's own colour), then ``<out>/results.json``: COCO results (``image_id``, ``category_id``, ``segmentation`` as compressed RLE,
    ``score`` = the model's predicted IoU, and ``object_id``), which ``pycocotools``' ``COCO.loadRes`` reads."""
    import json

    from ..data.instances import encode_rle
    from ..files import atomic_write_text

    cut = probability_to_logit(threshold)
    results = []
    images = list(dict.fromkeys(j.image for j in jobs))
    for done, image_path in enumerate(images, 1):
        image, _ = read_image(image_path)
        encoded = encode_image(model, image)
        drawn: dict[Path, list] = {}
        for job in (j for j in jobs if j.image == image_path):
            logits, score = decode_prompt(model, encoded, job.prompt)
            mask = logits > cut
            job.mask.parent.mkdir(parents=True, exist_ok=True)
            atomic_save_image(job.mask, Image.fromarray(mask.astype(np.uint8) * 255))
            if job.overlay is not None:
                drawn.setdefault(job.overlay, []).append((mask, job.prompt))
            entry = {"image_id": job.image_id, "segmentation": encode_rle(mask), "score": score}
            if job.category_id is not None:
                entry["category_id"] = job.category_id
            results.append({**entry, "object_id": job.object_id})
        for target, objects in drawn.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            masks, prompts = zip(*objects, strict=True)
            atomic_save_image(target, overlay_objects(image, masks, prompts))
        if on_image is not None:
            on_image(done, len(images))
    target = Path(out_dir) / RESULTS_FILE
    atomic_write_text(target, json.dumps(results) + "\n")
    return target


def predict_objects(
    objects: Sequence[tuple],
    out_dir: str | Path,
    *,
    run_dir: str | Path | None = None,
    model_name: str | None = None,
    checkpoint: str | Path | None = None,
    weights: str | Path | None = None,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
    threshold: float = 0.5,
    require_final: bool = False,
    on_image: Callable[[int, int], None] | None = None,
) -> Path:
    """:func:`predict` for objects (:func:`coco_object_prompts` or :func:`box_list_prompts`): one mask per object,
    one overlay per image and the COCO results JSON (:func:`write_object_predictions`), the model's options
    checked as :func:`predict`'s and every input before the model loads. Returns the results file."""
    from ..load import open_model
    from .images import resolve_source

    source = resolve_source(run_dir, model_name, checkpoint, weights, image_size, require_final)
    jobs = plan_object_predictions(objects, out_dir, overwrite=overwrite, threshold=threshold)
    model = open_model(source, device=device).model
    return write_object_predictions(model, jobs, out_dir, threshold, on_image=on_image)
