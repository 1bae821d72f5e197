"""One SAM forward with gradients that also returns the single-mask output token.

Meta's ``Sam.forward`` runs under ``torch.no_grad`` and its decoder never returns its output tokens, so this module
calls the three parts directly (image encoder, prompt encoder, mask decoder) and captures the decoder's
two-way-transformer tokens ``hs`` with a forward hook that lives only for the duration of the call. Teacher and
student both go through :func:`sam_forward`; the caller decides about ``torch.no_grad`` and eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from segment_anything.modeling import Sam
from torch import Tensor

from . import sam2
from .sam2 import Sam2Model, is_sam2


@dataclass
class SamOutput:
    """What one SAM forward returns for a batch of B images with one prompt each."""

    image_embeddings: Tensor
    """(B, C, h, w) image encoder output; C = spec.prompt_embed_dim (256), h = w = spec.embedding_size (64)."""
    mask_tokens: Tensor
    """(B, 1, C) single-mask output token after the two-way transformer (``hs[:, 1]``)."""
    low_res_logits: Tensor | None
    """(B, 1, 4h, 4w) single-mask logits (256 x 256 for the official 1024 input); None from a tokens-only decode."""
    iou_predictions: Tensor | None
    """(B, 1) predicted IoU of the single mask; None from a tokens-only decode."""
    features: list[Tensor] | None = None
    """Intermediate encoder feature maps (B, C_l, h_l, w_l), only where a distillation objective asked for them
    (:func:`infosam.distill.features.capture_features`); None otherwise."""


class _TokensCaptured(Exception):
    """Raised by the transformer hook of a tokens-only decode: the rest of the decoder is not needed."""


def encode_images(model: Sam, images: Tensor) -> Tensor:
    """Image embeddings (B, C, h, w) of ``images`` (B, 3, S, S), already normalised and padded to S = image size.

    SAM 2 (:mod:`infosam.sam.sam2`): the embedding and the decoder's two high-resolution feature maps packed into
    one (B, 4C, h, w) tensor, which :func:`decode` unpacks; ``SamOutput.image_embeddings`` is then the C-channel
    embedding.
    """
    size = model.image_encoder.img_size
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (size, size):
        raise ValueError(
            f"images must be (B, 3, {size}, {size}) normalised and padded to the model's image size {size}; "
            f"got {tuple(images.shape)}"
        )
    if is_sam2(model):
        return sam2.encode(model, images)
    return model.image_encoder(images)


def decode(
    model: Sam,
    image_embeddings: Tensor,
    *,
    boxes: Tensor | None = None,
    points: Tensor | None = None,
    point_labels: Tensor | None = None,
    tokens_only: bool = False,
) -> SamOutput:
    """Decode one prompt per image into a single mask, its predicted IoU and its output token.

    Args:
        model: a SAM (any PEFT applied).
        image_embeddings: (B, C, h, w) from :func:`encode_images`.
        boxes: (B, 4) xyxy boxes in input-pixel coordinates of the padded S x S image.
        points: (B, N, 2) xy points in the same coordinates; needs ``point_labels`` (B, N), 1 foreground, 0
            background. Boxes and points may be given together (Meta's prompt encoder then drops its padding
            point, as in ``SamPredictor``).
        tokens_only: stop each decoder call right after its two-way transformer (the hook raises, Meta's code
            stays untouched): the mask token is all InfoSAM needs of the teacher, and the mask upscaling, the
            hypernetwork and the IoU head (about a third of the decoder's time at 256 px) are skipped. The
            logits and IoU of the result are then None; the tokens are the same as from a full decode.

    Returns:
        :class:`SamOutput` with ``image_embeddings`` passed through.
    """
    batch = image_embeddings.shape[0]
    _check_prompts(batch, boxes, points, point_labels)
    if is_sam2(model):
        return _decode_sam2(model, image_embeddings, boxes, points, point_labels, tokens_only)
    sparse, dense = model.prompt_encoder(
        points=None if points is None else (points, point_labels), boxes=boxes, masks=None
    )
    image_pe = model.prompt_encoder.get_dense_pe()

    hs_tokens: list[Tensor] = []

    def capture(_module, _inputs, output) -> None:
        hs_tokens.append(output[0][:, 1:2])  # hs: (1, T, C); token 1 = mask 0
        if tokens_only:
            raise _TokensCaptured

    handle = model.mask_decoder.transformer.register_forward_hook(capture)
    try:
        # One decoder call per image: Meta's predict_masks repeats the image embeddings once per prompt (it is
        # written for one image and many prompts), so a call with B images and B prompts would pair every image
        # with every prompt. Looping keeps Meta's decoder untouched and exactly equal to SamPredictor; the
        # decoder is small next to the encoder, so the loop costs little.
        logits, ious = [], []
        for b in range(batch):
            try:
                low_res, iou = model.mask_decoder(
                    image_embeddings=image_embeddings[b : b + 1],
                    image_pe=image_pe,
                    sparse_prompt_embeddings=sparse[b : b + 1],
                    dense_prompt_embeddings=dense[b : b + 1],
                    multimask_output=False,
                )
            except _TokensCaptured:
                continue
            logits.append(low_res)
            ious.append(iou)
    finally:
        handle.remove()
    if len(hs_tokens) != batch:
        raise RuntimeError(
            f"expected one two-way-transformer call per image ({batch}), saw {len(hs_tokens)}; "
            "was model.mask_decoder.transformer replaced or called elsewhere?"
        )
    return SamOutput(
        image_embeddings=image_embeddings,
        mask_tokens=torch.cat(hs_tokens),
        low_res_logits=None if tokens_only else torch.cat(logits),
        iou_predictions=None if tokens_only else torch.cat(ious),
    )


def _decode_sam2(
    model: Sam2Model,
    packed: Tensor,
    boxes: Tensor | None,
    points: Tensor | None,
    point_labels: Tensor | None,
    tokens_only: bool,
) -> SamOutput:
    """:func:`decode` for SAM 2: what ``SAM2ImagePredictor._predict`` does with one prompt per image.

    SAM 2's decoder takes B images with B prompts in one call (``repeat_image=False``), so no per-image loop.
    """
    embedding, high_res = sam2.unpack(model, packed)
    sparse, dense = model.sam_prompt_encoder(
        points=sam2.prompt_points(boxes, points, point_labels), boxes=None, masks=None
    )
    index = sam2.mask_token_index(model)
    tokens: list[Tensor] = []

    def capture(_module, _inputs, output) -> None:
        tokens.append(output[0][:, index : index + 1])
        if tokens_only:
            raise _TokensCaptured

    handle = model.sam_mask_decoder.transformer.register_forward_hook(capture)
    logits = ious = None
    try:
        logits, ious, _, _ = model.sam_mask_decoder(
            image_embeddings=embedding,
            image_pe=model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
            repeat_image=False,
            high_res_features=high_res,
        )
    except _TokensCaptured:
        pass
    finally:
        handle.remove()
    if len(tokens) != 1:
        raise RuntimeError(f"expected one two-way-transformer call, saw {len(tokens)}")
    return SamOutput(embedding, tokens[0], logits, ious)


def sam_forward(
    model: Sam,
    images: Tensor,
    *,
    boxes: Tensor | None = None,
    points: Tensor | None = None,
    point_labels: Tensor | None = None,
) -> SamOutput:
    """:func:`encode_images` then :func:`decode`, with gradients: images (B, 3, S, S) normalised and padded."""
    return decode(model, encode_images(model, images), boxes=boxes, points=points, point_labels=point_labels)


def _check_prompts(
    batch: int, boxes: Tensor | None, points: Tensor | None, point_labels: Tensor | None
) -> None:
    """Raise ValueError, naming the argument, unless the prompts are one per image with the documented shapes."""
    if boxes is None and points is None:
        raise ValueError(
            "decode needs a prompt: pass boxes (B, 4) and/or points (B, N, 2) with point_labels (B, N)"
        )
    if boxes is not None and tuple(boxes.shape) != (batch, 4):
        raise ValueError(f"boxes must be ({batch}, 4) xyxy, one per image; got {tuple(boxes.shape)}")
    if points is not None:
        if point_labels is None:
            raise ValueError("points need point_labels (B, N): 1 foreground, 0 background")
        if points.ndim != 3 or points.shape[0] != batch or points.shape[2] != 2:
            raise ValueError(f"points must be ({batch}, N, 2) xy; got {tuple(points.shape)}")
        if tuple(point_labels.shape) != tuple(points.shape[:2]):
            raise ValueError(
                f"point_labels must be {tuple(points.shape[:2])} to match points; got {tuple(point_labels.shape)}"
            )
    elif point_labels is not None:
        raise ValueError("point_labels were given without points")
