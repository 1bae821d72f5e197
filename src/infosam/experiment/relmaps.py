"""Relation maps: where the relation module sees the object, for teacher and student (the paper's figure).

The relation row ``r`` of an image (one value per image-embedding position, see
:class:`infosam.distill.relation.RelationModule`) reshaped to the embedding grid is a map of how strongly each
position relates to the mask token. With the relation module a run trained, the teacher's map shows what the
distillation asks the student to keep; the student's map what it kept.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from segment_anything.modeling import Sam
from torch import Tensor

from ..distill.relation import RelationModule
from ..sam.forward import sam_forward


@torch.no_grad()
def relation_maps(model: Sam, relation: RelationModule, images: Tensor, prompts: dict[str, Tensor]) -> Tensor:
    """Relation maps of ``model`` for a batch.

    Args:
        model: a SAM (teacher or student), put in eval mode here.
        relation: the relation module of a run (shared by teacher and student).
        images: ``(B, 3, S, S)`` normalised, padded images.
        prompts: one prompt per image, as for :func:`infosam.sam.forward.sam_forward`.
    Returns:
        ``(B, h, w)`` maps on the embedding grid (``h = w = S / patch``), each of unit L2 norm over the grid.
    """
    model.eval()
    relation.eval()
    out = sam_forward(model, images, **prompts)
    rows = relation(out.image_embeddings.float(), out.mask_tokens.float())  # (B, h*w)
    b, _, h, w = out.image_embeddings.shape
    return rows.reshape(b, h, w)


def valid_region(grid_side: int, input_size: tuple[int, int], image_size: int) -> tuple[int, int]:
    """Rows and columns of an embedding grid covering the resized image (the rest is padding)."""
    h, w = input_size
    return (
        min(grid_side, math.ceil(h / image_size * grid_side)),
        min(grid_side, math.ceil(w / image_size * grid_side)),
    )


def crop_valid(maps: Tensor, input_sizes: Tensor, image_size: int) -> list[np.ndarray]:
    """Each map ``(h, w)`` of ``maps`` (B, h, w) cropped to its image's unpadded part."""
    out = []
    for m, size in zip(maps, input_sizes, strict=True):
        rows, cols = valid_region(m.shape[-1], (int(size[0]), int(size[1])), image_size)
        out.append(m[:rows, :cols].cpu().numpy())
    return out
