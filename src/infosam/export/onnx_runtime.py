"""Running an ONNX export (:func:`infosam.export.formats.export_onnx`) with onnxruntime, no torch model needed:
:func:`onnx_prompt` turns a :class:`~infosam.predict.Prompt` into the decoder graph's arrays and
:class:`OnnxSegmenter` runs the project's preprocessing, the encoder graph, then the decoder graph."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..sam.transforms import SamTransform, make_transform
from .formats import DECODER_FILE, ENCODER_FILE, ONNX_INFO_FILE

if TYPE_CHECKING:
    from ..predict import Prompt


def onnx_prompt(
    prompt: Prompt, original_size: tuple[int, int], transform: SamTransform
) -> tuple[np.ndarray, np.ndarray]:
    """``point_coords`` (1, N, 2) float32 and ``point_labels`` (1, N) float32 for the decoder graph.

    Coordinates go through the model's ``transform`` (as :func:`infosam.predict.map_prompt`): points first, then
    the box as two corners labelled 2 and 3; without a box, one padding point labelled -1 is appended, as Meta's
    prompt encoder does, so the graph sees the same tokens as the project's decode.
    """
    coords, labels = [], []
    if prompt.points:
        coords += transform.coords(np.asarray(prompt.points, dtype=np.float64), original_size).tolist()
        labels += list(prompt.labels)
    if prompt.box is not None:
        corners = np.asarray(prompt.box, dtype=np.float64).reshape(2, 2)
        coords += transform.coords(corners, original_size).tolist()
        labels += [2, 3]
    else:
        coords.append([0.0, 0.0])
        labels.append(-1)
    return np.asarray([coords], dtype=np.float32), np.asarray([labels], dtype=np.float32)


@dataclass
class OnnxSegmenter:
    """Run the two exported graphs with onnxruntime: the project's preprocessing, then encoder, then decoder."""

    folder: Path

    def __post_init__(self) -> None:
        from ..extras import require

        ort = require("onnxruntime", "running an ONNX export")

        self.folder = Path(self.folder)
        info_path = self.folder / ONNX_INFO_FILE
        if not info_path.is_file():
            raise FileNotFoundError(f"{info_path} not found: is {self.folder} an infosam ONNX export?")
        self.info = json.loads(info_path.read_text(encoding="utf-8"))
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(self.folder / ENCODER_FILE), providers=providers)
        self.decoder = ort.InferenceSession(str(self.folder / DECODER_FILE), providers=providers)
        self.transform = make_transform(self.info["transform"], self.info["image_size"])

    def encode(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Embeddings (1, C, h, w) of ``image`` (H, W, 3) uint8 RGB and its resized size (h, w)."""
        pixels, input_size = self.transform.image(image)
        (embeddings,) = self.encoder.run(None, {"image": pixels[None].numpy()})
        return embeddings, input_size

    def decode(
        self, embeddings: np.ndarray, coords: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Low-res logits (B, 1, 4h, 4w) and IoU (B, 1) for ``coords`` (B, N, 2) and ``labels`` (B, N)."""
        logits, iou = self.decoder.run(
            None,
            {
                "image_embeddings": embeddings,
                "point_coords": coords.astype(np.float32),
                "point_labels": labels.astype(np.float32),
            },
        )
        return logits, iou

    def segment(self, image: np.ndarray, prompt: Prompt) -> tuple[np.ndarray, float]:
        """Logits (H, W) at the original size of ``image`` and the predicted IoU, for one prompt."""
        original = (int(image.shape[0]), int(image.shape[1]))
        embeddings, input_size = self.encode(image)
        logits, iou = self.decode(embeddings, *onnx_prompt(prompt, original, self.transform))
        full = self.transform.postprocess(torch.from_numpy(logits[:1]), input_size, original)
        return full[0, 0].numpy(), float(iou[0, 0])
