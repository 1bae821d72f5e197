"""Running a model on one image and a prompt: the prompt mapped into the model's input frame, the mask logits
mapped back to the image's original size (the model's transform, :func:`infosam.sam.transforms.get_transform`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from segment_anything.modeling import Sam

from ..sam.forward import decode, encode_images, sam_forward
from ..sam.transforms import SamTransform, get_transform
from .prompts import Prompt


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
