"""The models a page compares, each uploaded image encoded once per model (a small least-recently-used cache of
embeddings), so a click costs one prompt-encoder + mask-decoder call per model."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from segment_anything.modeling import Sam

from ..predict.prompts import Prompt
from ..predict.segment import EncodedImage, decode_prompt, encode_image


@dataclass
class Result:
    """One model's answer to one prompt."""

    name: str
    logits: np.ndarray
    """(H, W) float32 logits at the original image size."""
    iou: float
    """The model's predicted IoU of its mask."""

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool: probability above 0.5."""
        return self.logits > 0


class Segmenter:
    """The models to compare (name -> SAM, eval mode) and a small cache of image embeddings per model.

    Args:
        models: e.g. ``{"fine-tuned student": student, "zero-shot teacher": teacher}``; shown in this order.
        cache_size: how many images' embeddings to keep.
    """

    def __init__(self, models: dict[str, Sam], *, cache_size: int = 4) -> None:
        if not models:
            raise ValueError("Segmenter needs at least one model")
        self.models = dict(models)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, dict[str, EncodedImage]] = OrderedDict()
        self.encoder_calls = 0
        """How many image-encoder runs happened (one per model per new image)."""

    def encode(self, image: np.ndarray) -> str:
        """Encode ``image`` (H, W, 3) uint8 with every model unless cached; returns its cache key."""
        key = hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()
        if key in self._cache:
            self._cache.move_to_end(key)
            return key
        encoded = {}
        for name, model in self.models.items():
            encoded[name] = encode_image(model, image)
            self.encoder_calls += 1
        self._cache[key] = encoded
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return key

    def segment(self, image: np.ndarray, prompt: Prompt) -> list[Result]:
        """Every model's single mask for ``prompt`` (original pixels) on ``image``; encodes only a new image."""
        key = self.encode(image)
        return [
            Result(name, *decode_prompt(model, self._cache[key][name], prompt))
            for name, model in self.models.items()
        ]
