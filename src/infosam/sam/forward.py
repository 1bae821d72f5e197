"""One SAM forward with gradients that also returns the single-mask output token.

Meta's ``Sam.forward`` runs under ``torch.no_grad`` and its decoder never returns its output tokens, so this module
calls the three parts directly (image encoder, prompt encoder, mask decoder) and captures the decoder's
two-way-transformer tokens ``hs`` with a forward hook that lives only for the duration of the call. Teacher and
student both go through :func:`sam_forward`; the caller decides about ``torch.no_grad`` and eval mode. The model's
family (:mod:`infosam.sam.family`) does the encoding and decoding (SAM 2 packs its features and decodes in one call).
"""

from __future__ import annotations

from segment_anything.modeling import Sam
from torch import Tensor

from .family import family_of
from .output import SamOutput

__all__ = ["SamOutput", "decode", "encode_images", "sam_forward"]


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
    return family_of(model).encode(model, images)


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
    _check_prompts(image_embeddings.shape[0], boxes, points, point_labels)
    return family_of(model).decode(model, image_embeddings, boxes, points, point_labels, tokens_only)


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
