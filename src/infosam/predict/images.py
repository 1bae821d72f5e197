"""One mask and one overlay per image file: every input and output checked first (:func:`plan_predictions`), then
each image segmented and its files written (:func:`write_predictions`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from segment_anything.modeling import Sam

from ..data.reading import read_image
from ..files import atomic_save_image
from .draw import overlay
from .outputs import check_out_folder, check_targets, refuse
from .prompts import Prompt, list_images, mask_prompt
from .segment import predict_logits, probability_to_logit

if TYPE_CHECKING:
    from ..load import ModelSource


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
    check_out_folder(out_dir)
    paths = list_images(images)
    jobs = []
    for path in paths:
        mask_path, overlay_path = (
            out_dir / "masks" / f"{path.stem}.png",
            out_dir / "overlays" / f"{path.stem}.png",
        )
        check_targets((mask_path, overlay_path), overwrite)
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
    refuse(problems, "inputs")
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
    from ..load import open_model

    # What the source is, and whether the options fit it, is known before anything else is read or built.
    source = resolve_source(run_dir, model_name, checkpoint, weights, image_size, require_final)
    # Every input and output is checked before the model loads (seconds to minutes for ViT-H) or anything is written.
    jobs = plan_predictions(
        images, out_dir, prompt=prompt, masks_dir=masks_dir, overwrite=overwrite, threshold=threshold
    )
    model = open_model(source, device=device).model
    return write_predictions(model, jobs, threshold, on_image=on_image)


def resolve_source(
    run_dir: str | Path | None,
    model_name: str | None,
    checkpoint: str | Path | None,
    weights: str | Path | None,
    image_size: int | None,
    require_final: bool,
) -> ModelSource:
    """The model both predict paths (:func:`predict`, :func:`~infosam.predict.objects.predict_objects`) load,
    looked at (:func:`infosam.load.resolve`) but not built: exactly one of ``run_dir`` and ``model_name``, a
    zero-shot SAM with its ``checkpoint`` and no ``weights``, ``image_size`` only for a SAM model name."""
    from ..load import resolve

    if (run_dir is None) == (model_name is None):
        raise ValueError("give exactly one of a run folder and a SAM model name")
    if model_name is not None:
        if checkpoint is None:
            raise ValueError("a zero-shot SAM needs its checkpoint (the official SAM weights)")
        if weights is not None:
            raise ValueError("PEFT weights belong to a run folder; they cannot be used with a SAM model name")
    elif image_size is not None:
        raise ValueError("image_size belongs to a SAM model name; a run's input size comes from its config")
    return resolve(
        run_dir if run_dir is not None else model_name,
        checkpoint=checkpoint,
        weights=weights,
        image_size=image_size,
        require_final=require_final,
    )
