"""Segment image files with a fine-tuned student (or zero-shot SAM) from prompts given in original pixels.

Prompts (a box, points, or a box taken from a mask file per image) are given in each image's ORIGINAL pixel
coordinates of the upright image; images and masks are read by :mod:`infosam.data.reading` (EXIF orientation
applied, masks binarised by its one rule) exactly as for training and evaluation, and the model's transform
(:func:`infosam.sam.transforms.get_transform`) maps image and prompt into its input frame and the logits back.
Masks come back at each image's original (upright) size.

Outputs, per image ``<stem>``: ``<out>/masks/<stem>.png`` (0/255) and ``<out>/overlays/<stem>.png`` (the image
with the mask tinted and the prompt drawn). Existing outputs are never overwritten unless asked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from segment_anything.modeling import Sam

from .data.prompts import tight_box
from .data.reading import IMAGE_EXTENSIONS, open_image, read_image, read_mask
from .files import atomic_save_image
from .sam.forward import decode, encode_images, sam_forward
from .sam.transforms import SamTransform, get_transform

_TINT = np.array([30, 144, 255], dtype=np.float32)  # mask colour in overlays
_BOX_COLOUR = (255, 215, 0)
_POINT_COLOURS = {1: (0, 220, 0), 0: (230, 0, 0)}


@dataclass(frozen=True)
class Prompt:
    """One prompt for one image, in that image's original pixel coordinates (x right, y down)."""

    box: tuple[float, float, float, float] | None = None
    """(x0, y0, x1, y1) with x0 < x1 and y0 < y1."""
    points: tuple[tuple[float, float], ...] = ()
    """(x, y) points."""
    labels: tuple[int, ...] = field(default=())
    """One label per point: 1 foreground, 0 background."""

    def __post_init__(self) -> None:
        if self.box is None and not self.points:
            raise ValueError("a prompt needs a box and/or points")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (x0 < x1 and y0 < y1):
                raise ValueError(f"box must be x0 y0 x1 y1 with x0 < x1 and y0 < y1; got {self.box}")
        if len(self.labels) != len(self.points):
            raise ValueError(f"{len(self.points)} point(s) need as many labels, got {len(self.labels)}")
        if any(label not in (0, 1) for label in self.labels):
            raise ValueError(
                f"point labels must be 1 (foreground) or 0 (background); got {list(self.labels)}"
            )

    def check_inside(self, width: int, height: int, name: str) -> None:
        """Raise ValueError naming ``name`` when the prompt lies outside a ``width`` x ``height`` image."""
        coords = list(self.points) + ([self.box[:2], self.box[2:]] if self.box is not None else [])
        for x, y in coords:
            if not (0 <= x <= width and 0 <= y <= height):
                raise ValueError(
                    f"prompt coordinate ({x:g}, {y:g}) lies outside {name} ({width}x{height} pixels, W x H)"
                )


def map_prompt(
    prompt: Prompt, original_size: tuple[int, int], transform: SamTransform
) -> dict[str, torch.Tensor]:
    """The prompt as :func:`infosam.sam.forward.decode` keywords for a batch of one image.

    Returns ``boxes`` (1, 4) and/or ``points`` (1, N, 2) + ``point_labels`` (1, N), in input-pixel coordinates.
    """
    out: dict[str, torch.Tensor] = {}
    if prompt.box is not None:
        box = transform.boxes(np.asarray(prompt.box, dtype=np.float64)[None], original_size)
        out["boxes"] = torch.as_tensor(box, dtype=torch.float32)
    if prompt.points:
        points = transform.coords(np.asarray(prompt.points, dtype=np.float64), original_size)
        out["points"] = torch.as_tensor(points, dtype=torch.float32)[None]
        out["point_labels"] = torch.as_tensor(prompt.labels, dtype=torch.int64)[None]
    return out


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named in ``inputs`` (files, or folders whose image files are taken in sorted order).

    Raises:
        FileNotFoundError: an input does not exist, or a folder holds no image file.
        ValueError: two images share a stem (their outputs would collide).
    """
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise FileNotFoundError(f"{item} holds no image file ({', '.join(IMAGE_EXTENSIONS)})")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"image {item} does not exist")
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise ValueError(
                f"{seen[path.stem]} and {path} share the stem {path.stem!r}; their outputs would collide"
            )
        seen[path.stem] = path
    return files


def mask_prompt(masks_dir: Path, image_path: Path) -> Prompt:
    """A box prompt from the mask with the same stem as ``image_path`` in ``masks_dir`` (any image suffix): the
    tight box of the mask read and oriented as a dataset reads it (:func:`infosam.data.reading.read_mask`)."""
    candidates = [masks_dir / f"{image_path.stem}{s}" for s in IMAGE_EXTENSIONS]
    found = [p for p in candidates if p.is_file()]
    if not found:
        raise FileNotFoundError(
            f"no mask for {image_path.name} in {masks_dir} (looked for {image_path.stem}.png etc.)"
        )
    image, image_info = open_image(image_path)
    image.close()
    box = tight_box(read_mask(found[0], image_info))
    if box is None:
        raise ValueError(f"mask {found[0]} is empty: no box can be derived from it")
    return Prompt(box=tuple(box.tolist()))


@torch.no_grad()
def predict_logits(model: Sam, image: np.ndarray, prompt: Prompt) -> np.ndarray:
    """Mask logits (H, W) float32 at the original size of ``image`` (H, W, 3) uint8 RGB (upright, as
    :func:`infosam.data.reading.read_image` returns it); ``> 0`` is the mask."""
    device = next(model.parameters()).device
    transform = get_transform(model.spec)
    original_size = (int(image.shape[0]), int(image.shape[1]))
    pixels, input_size = transform.image(image)
    prompts = {k: v.to(device) for k, v in map_prompt(prompt, original_size, transform).items()}
    output = sam_forward(model, pixels[None].to(device), **prompts)
    logits = transform.postprocess(output.low_res_logits, input_size, original_size)
    return logits.float().reshape(original_size).cpu().numpy()


@dataclass
class EncodedImage:
    """One image run through a model's image encoder: what every prompt on that image reuses."""

    embeddings: torch.Tensor
    """(1, C, h, w) image embeddings."""
    input_size: tuple[int, int]
    """(h, w) of the resized image inside the model's input frame."""
    original_size: tuple[int, int]
    """(H, W) of the original image."""


@torch.no_grad()
def encode_image(model: Sam, image: np.ndarray) -> EncodedImage:
    """Run the image encoder once on ``image`` (H, W, 3) uint8 RGB, transformed as :func:`predict_logits` does."""
    device = next(model.parameters()).device
    pixels, input_size = get_transform(model.spec).image(image)
    embeddings = encode_images(model, pixels[None].to(device))
    return EncodedImage(embeddings, input_size, (int(image.shape[0]), int(image.shape[1])))


@torch.no_grad()
def decode_prompt(model: Sam, encoded: EncodedImage, prompt: Prompt) -> tuple[np.ndarray, float]:
    """Mask logits (H, W) float32 at the original size and the predicted IoU for one prompt on an encoded image:
    :func:`predict_logits` split so that many prompts share one encoder run."""
    transform = get_transform(model.spec)
    device = encoded.embeddings.device
    prompts = {k: v.to(device) for k, v in map_prompt(prompt, encoded.original_size, transform).items()}
    output = decode(model, encoded.embeddings, **prompts)
    logits = transform.postprocess(output.low_res_logits, encoded.input_size, encoded.original_size)
    return logits.float().reshape(encoded.original_size).cpu().numpy(), float(output.iou_predictions[0, 0])


def predict_probabilities(model: Sam, image: np.ndarray, prompt: Prompt) -> np.ndarray:
    """Foreground probabilities (H, W) float32 at the original size of ``image`` (H, W, 3) uint8 RGB (for display:
    binarise :func:`predict_logits` instead, see :func:`probability_to_logit`)."""
    return torch.sigmoid(torch.from_numpy(predict_logits(model, image, prompt))).numpy()


def probability_to_logit(threshold: float) -> float:
    """The logit ``log(t / (1 - t))`` of a probability threshold ``t`` in (0, 1); exactly 0 for 0.5.

    Masks are ``logits > probability_to_logit(t)``: thresholding ``sigmoid(logits) > t`` in float32 instead loses
    logits in (0, 6e-8) at t = 0.5 (their sigmoid rounds to 0.5) and saturates near 0 and 1.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be a probability strictly between 0 and 1, got {threshold}")
    return 0.0 if threshold == 0.5 else math.log(threshold) - math.log1p(-threshold)


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


@dataclass
class Prediction:
    """The files written for one image."""

    image: Path
    mask: Path
    overlay: Path
    prompt: Prompt | None
    """The prompt in the image's pixels (``None`` only while a plan reads it from a masks folder)."""


def plan_predictions(
    images: Sequence[str | Path],
    out_dir: str | Path,
    *,
    prompt: Prompt | None = None,
    masks_dir: str | Path | None = None,
    overwrite: bool = False,
    threshold: float = 0.5,
) -> list[Prediction]:
    """Check everything a prediction needs, without a model and without writing: the threshold, the output folder,
    every output file, every prompt, and every image decoded in full (a truncated file fails here, not after other
    masks were written). Returns one job per image for :func:`write_predictions`.

    Raises:
        ValueError: bad threshold or prompt, ``out_dir`` is a file, or unreadable inputs (all of them listed).
        FileExistsError: an output exists and ``overwrite`` is False.
        FileNotFoundError: a missing input or mask.
    """
    probability_to_logit(threshold)
    if (prompt is None) == (masks_dir is None):
        raise ValueError("give exactly one of a prompt (box and/or points) and a masks folder")
    out_dir = Path(out_dir)
    for folder in (out_dir, out_dir / "masks", out_dir / "overlays"):
        if folder.exists() and not folder.is_dir():
            raise ValueError(
                f"output {folder} is a file; --out takes a folder (it gets masks/ and overlays/)"
            )
    paths = list_images(images)
    jobs = []
    for path in paths:
        mask_path, overlay_path = (
            out_dir / "masks" / f"{path.stem}.png",
            out_dir / "overlays" / f"{path.stem}.png",
        )
        for target in (mask_path, overlay_path):
            if target.exists() and not overwrite:
                raise FileExistsError(f"{target} exists; pass --overwrite (overwrite=True) to replace it")
        jobs.append(Prediction(path, mask_path, overlay_path, prompt))
    problems = []
    for job in jobs:
        try:
            image, _ = read_image(job.image)  # decoded in full, then dropped: written only when all are good
            if masks_dir is not None:
                job.prompt = mask_prompt(Path(masks_dir), job.image)
            job.prompt.check_inside(image.shape[1], image.shape[0], str(job.image))
        except FileNotFoundError:
            raise
        except (ValueError, OSError) as err:
            problems.append(str(err))
    if len(problems) == 1:
        raise ValueError(problems[0])
    if problems:
        raise ValueError(
            f"{len(problems)} inputs cannot be predicted (nothing written):\n  " + "\n  ".join(problems)
        )
    return jobs


def write_predictions(
    model: Sam,
    jobs: Sequence[Prediction],
    threshold: float = 0.5,
    *,
    on_image: Callable[[int, int], None] | None = None,
) -> list[Prediction]:
    """Segment each planned image (:func:`plan_predictions`) with ``model`` and write its mask and overlay;
    ``on_image(done, total)`` is called after each (the CLI's progress)."""
    cut = probability_to_logit(threshold)  # masks are logits > cut (exactly 0 for 0.5, as SAM does)
    for done, job in enumerate(jobs, 1):
        job.mask.parent.mkdir(parents=True, exist_ok=True)
        job.overlay.parent.mkdir(parents=True, exist_ok=True)
        image, _ = read_image(job.image)
        mask = predict_logits(model, image, job.prompt) > cut
        atomic_save_image(job.mask, Image.fromarray(mask.astype(np.uint8) * 255))
        atomic_save_image(job.overlay, overlay(image, mask, job.prompt))
        if on_image is not None:
            on_image(done, len(jobs))
    return list(jobs)


def predict_files(
    model: Sam,
    images: Sequence[str | Path],
    out_dir: str | Path,
    *,
    prompt: Prompt | None = None,
    masks_dir: str | Path | None = None,
    overwrite: bool = False,
    threshold: float = 0.5,
    on_image: Callable[[int, int], None] | None = None,
) -> list[Prediction]:
    """Segment every image in ``images`` (files or folders) and write masks and overlays under ``out_dir``.

    Exactly one of ``prompt`` (the same prompt, in original pixels, for every image) and ``masks_dir`` (a box from
    the same-stem mask per image) must be given. Every input and output is checked first
    (:func:`plan_predictions`), so a bad prompt, an unreadable image or an existing output fails without leaving
    half a folder.

    Raises:
        FileExistsError: an output exists and ``overwrite`` is False.
        FileNotFoundError / ValueError: unreadable inputs or prompts outside an image; the message names the file.
    """
    jobs = plan_predictions(
        images, out_dir, prompt=prompt, masks_dir=masks_dir, overwrite=overwrite, threshold=threshold
    )
    return write_predictions(model, jobs, threshold, on_image=on_image)


def predict(
    images: Sequence[str | Path],
    out_dir: str | Path,
    *,
    run_dir: str | Path | None = None,
    model_name: str | None = None,
    checkpoint: str | Path | None = None,
    weights: str | Path | None = None,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    prompt: Prompt | None = None,
    masks_dir: str | Path | None = None,
    overwrite: bool = False,
    threshold: float = 0.5,
    require_final: bool = False,
    on_image: Callable[[int, int], None] | None = None,
) -> list[Prediction]:
    """Load a model (:func:`infosam.load.open_model`) and :func:`predict_files` with it: the student of ``run_dir``
    (a run folder, ``checkpoint`` replacing its base SAM's path and ``weights`` its PEFT weights, an unfinished run
    giving its newest intact checkpoint with a warning, or :class:`infosam.runs.UnfinishedRunError` with
    ``require_final``; or a self-contained ``infosam`` export file), or zero-shot SAM ``model_name`` from
    ``checkpoint``. Exactly one of ``run_dir`` and ``model_name``."""
    from .load import open_model, resolve

    if (run_dir is None) == (model_name is None):
        raise ValueError("give exactly one of a run folder and a SAM model name")
    if model_name is not None:
        if checkpoint is None:
            raise ValueError("a zero-shot SAM needs its checkpoint (the official SAM weights)")
        if weights is not None:
            raise ValueError("PEFT weights belong to a run folder; they cannot be used with a SAM model name")
    elif image_size is not None:
        raise ValueError("image_size belongs to a SAM model name; a run's input size comes from its config")
    # What the source is, and whether the options fit it, is known before anything else is read or built.
    source = resolve(
        run_dir if run_dir is not None else model_name,
        checkpoint=checkpoint,
        weights=weights,
        image_size=image_size,
        require_final=require_final,
    )
    # Every input and output is checked before the model loads (seconds to minutes for ViT-H) or anything is written.
    jobs = plan_predictions(
        images, out_dir, prompt=prompt, masks_dir=masks_dir, overwrite=overwrite, threshold=threshold
    )
    model = open_model(source, device=device).model
    return write_predictions(model, jobs, threshold, on_image=on_image)


# --------------------------------------------------------------------------------------------- one mask per object

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


def coco_object_prompts(annotation_file: str | Path, *, include_crowd: bool = False) -> list[tuple]:
    """``(image path, annotation id, box Prompt, COCO image id, category id)`` for every annotation of a COCO file:
    the box is the annotation's ``bbox`` (``x, y, w, h``), or the tight box of its segmentation when it has no
    bbox. Images resolve as for training (:func:`infosam.data.instances.coco_image_dir`)."""
    import json

    from .data.instances import coco_image_dir, decode_segmentation

    path = Path(annotation_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        images = {im["id"]: im for im in data["images"]}
        annotations = data["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a COCO file with 'images' and 'annotations' ({err})") from err
    folder = coco_image_dir(path)
    out = []
    for ann in annotations:
        if ann.get("iscrowd", 0) and not include_crowd:
            continue
        aid = ann.get("id")
        im = images.get(ann.get("image_id"))
        if im is None:
            raise ValueError(f"{path}: annotation {aid}: image_id {ann.get('image_id')} is not listed")
        if ann.get("bbox"):
            x, y, w, h = (float(v) for v in ann["bbox"])
            box = (x, y, x + w, y + h)
        else:
            mask = decode_segmentation(ann["segmentation"], int(im["height"]), int(im["width"]))
            found = tight_box(mask)
            if found is None:
                raise ValueError(f"{path}: annotation {aid}: empty segmentation and no bbox")
            box = tuple(found.tolist())
        try:
            prompt = Prompt(box=box)
        except ValueError as err:
            raise ValueError(f"{path}: annotation {aid}: {err}") from err
        out.append((folder / im["file_name"], int(aid), prompt, im["id"], ann.get("category_id")))
    return out


def box_list_prompts(box_list: str | Path) -> list[tuple]:
    """Prompts of a box list: a CSV with columns ``image`` (path, relative to the CSV's folder), ``x0 y0 x1 y1``
    (original pixels) and optionally ``object_id`` (default: the row's number among its image's rows, from 1),
    ``image_id`` and ``category_id`` (copied into the results JSON)."""
    import csv

    path = Path(box_list)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in BOX_LIST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {missing}; a box list needs {list(BOX_LIST_COLUMNS)}"
            )
        rows = list(reader)
    out, counts = [], {}
    for line, row in enumerate(rows, start=2):
        image = path.parent / row["image"]
        counts[image] = counts.get(image, 0) + 1
        try:
            box = tuple(float(row[c]) for c in BOX_LIST_COLUMNS[1:])
            prompt = Prompt(box=box)
            object_id = int(row["object_id"]) if row.get("object_id") else counts[image]
            category = int(row["category_id"]) if row.get("category_id") else None
        except ValueError as err:
            raise ValueError(f"{path}:{line}: {err}") from err
        image_id = row.get("image_id") or image.name
        image_id = int(image_id) if str(image_id).isdigit() else image_id
        out.append((image, object_id, prompt, image_id, category))
    return out


def plan_object_predictions(
    objects: Sequence[tuple], out_dir: str | Path, *, overwrite: bool = False, threshold: float = 0.5
) -> list[ObjectJob]:
    """Check everything before any model loads or anything is written: every image decoded, every prompt inside
    its image, no two objects of one image with one id, no output (``<out>/masks/<stem>/<object id>.png`` and
    ``<out>/results.json``) existing unless ``overwrite``. ``objects`` as :func:`coco_object_prompts` gives."""
    probability_to_logit(threshold)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output {out_dir} is a file; --out takes a folder")
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
        mask = out_dir / "masks" / image.stem / f"{object_id}.png"
        targets.append(mask)
        jobs.append(ObjectJob(image, object_id, prompt, mask, image_id, category))
    for target in targets:
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists; pass --overwrite (overwrite=True) to replace it")
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
    if problems:
        raise ValueError(
            f"{len(problems)} object(s) cannot be predicted (nothing written):\n  " + "\n  ".join(problems)
        )
    return jobs


def write_object_predictions(
    model: Sam,
    jobs: Sequence[ObjectJob],
    out_dir: str | Path,
    threshold: float = 0.5,
    *,
    on_image: Callable[[int, int], None] | None = None,
) -> Path:
    """Segment each planned object (each image encoded once), write its 0/255 mask at the image's original size,
    then ``<out>/results.json``: COCO results (``image_id``, ``category_id``, ``segmentation`` as compressed RLE,
    ``score`` = the model's predicted IoU, and ``object_id``), which ``pycocotools``' ``COCO.loadRes`` reads."""
    import json

    from .data.instances import encode_rle
    from .files import atomic_write_text

    cut = probability_to_logit(threshold)
    results = []
    images = list(dict.fromkeys(j.image for j in jobs))
    for done, image_path in enumerate(images, 1):
        image, _ = read_image(image_path)
        encoded = encode_image(model, image)
        for job in (j for j in jobs if j.image == image_path):
            logits, score = decode_prompt(model, encoded, job.prompt)
            mask = logits > cut
            job.mask.parent.mkdir(parents=True, exist_ok=True)
            atomic_save_image(job.mask, Image.fromarray(mask.astype(np.uint8) * 255))
            entry = {"image_id": job.image_id, "segmentation": encode_rle(mask), "score": score}
            if job.category_id is not None:
                entry["category_id"] = job.category_id
            results.append({**entry, "object_id": job.object_id})
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
    """:func:`predict` for objects (:func:`coco_object_prompts` or :func:`box_list_prompts`): one mask per object
    and the COCO results JSON (:func:`write_object_predictions`), every input checked before the model loads.
    Returns the results file."""
    from .load import open_model, resolve

    if (run_dir is None) == (model_name is None):
        raise ValueError("give exactly one of a run folder and a SAM model name")
    source = resolve(
        run_dir if run_dir is not None else model_name,
        checkpoint=checkpoint,
        weights=weights,
        image_size=image_size,
        require_final=require_final,
    )
    jobs = plan_object_predictions(objects, out_dir, overwrite=overwrite, threshold=threshold)
    model = open_model(source, device=device).model
    return write_object_predictions(model, jobs, out_dir, threshold, on_image=on_image)
