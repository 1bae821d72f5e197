"""Independent float64 NumPy versions of the relation module (docs/method.md section 2), written from the formula
and shared by the tests that pin the torch implementation against them."""

from __future__ import annotations

import math

import numpy as np


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """LayerNorm over the last axis with affine ``weight`` and ``bias``."""
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def relation_rows(
    params: dict[str, np.ndarray], image_embeddings: np.ndarray, mask_tokens: np.ndarray
) -> np.ndarray:
    """Unit relation rows (B, HW) from a RelationModule's state dict as float64 arrays, image embeddings
    (B, C, h, w) and mask tokens (B, 1, C)."""
    b, c = image_embeddings.shape[:2]
    z_i = layer_norm(
        image_embeddings.reshape(b, c, -1).transpose(0, 2, 1),
        params["norm_image.weight"],
        params["norm_image.bias"],
    )
    z_m = layer_norm(mask_tokens, params["norm_token.weight"], params["norm_token.bias"])
    q = z_m @ params["query.weight"].T + params["query.bias"]
    k = z_i @ params["key.weight"].T + params["key.bias"]
    r = (q @ k.transpose(0, 2, 1) / math.sqrt(c) + z_m @ z_i.transpose(0, 2, 1))[:, 0, :]
    return r / np.linalg.norm(r, axis=1, keepdims=True)
