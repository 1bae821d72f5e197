"""The model families, one registered :class:`~infosam.sam.family.base.Family` each, and the lookups.

Every module outside this package asks the family (``family_of(model).blocks(...)``, ``.student_prefix``, ...)
and never compares family names. Adding a family: one module here with its :class:`Family` subclass, one line in
:data:`FAMILIES`, its rows in ``sam/specs.py`` (``family=<name>``) and one row in the family test matrices
(``tests/test_family.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from ..specs import SamSpec
from .base import EncoderBlock, Family, Segment, unwrapped
from .sam2 import Sam2Family
from .tinyvit import TinyViTFamily
from .vit import VitFamily

FAMILIES: dict[str, Family] = {f.name: f for f in (VitFamily(), TinyViTFamily(), Sam2Family())}
"""Every model family by its ``SamSpec.family`` name."""

FALLBACK = "vit"
"""The family that reads a model, or describes weights, that no family claims (Meta's ``Sam`` and its layout)."""

__all__ = [
    "FAMILIES",
    "EncoderBlock",
    "Family",
    "Segment",
    "encoder_blocks",
    "family_of",
    "family_of_encoder",
    "family_of_spec",
    "family_of_weights",
    "labels",
    "unwrapped",
]


def family_of_spec(spec: SamSpec) -> Family:
    """The family of ``spec``; ValueError names an unknown ``family``."""
    if spec.family not in FAMILIES:
        raise ValueError(
            f"SAM spec {spec.name!r} has unknown family {spec.family!r}; known families: {', '.join(FAMILIES)}"
        )
    return FAMILIES[spec.family]


def family_of(model: nn.Module) -> Family:
    """The family of a built SAM, by its class and its image encoder's class (not by its spec).

    A model no family owns is read through Meta's ``Sam`` interface, as the :data:`FALLBACK` family (SAM ViT)
    reads it: e.g. mobile_sam's own ``Sam``, which the tests run through :func:`infosam.sam.forward.sam_forward`.
    """
    return next((f for f in FAMILIES.values() if f.owns(model)), FAMILIES[FALLBACK])


def family_of_encoder(encoder: object) -> Family | None:
    """The family whose image encoder ``encoder`` is, or None (callers name what they expected)."""
    return next((f for f in FAMILIES.values() if f.owns_encoder(encoder)), None)


def family_of_weights(state: Mapping[str, Tensor]) -> Family:
    """The family whose key layout a state dict has (:data:`FALLBACK` when none claims it)."""
    return next((f for f in FAMILIES.values() if f.claims_weights(state)), FAMILIES[FALLBACK])


def encoder_blocks(model: nn.Module) -> list[EncoderBlock]:
    """Every attention block of ``model``'s image encoder in forward order (:meth:`Family.blocks`)."""
    return family_of(model).blocks(model.image_encoder)


def labels(families, attribute: str = "label") -> str:
    """``families``' labels in words: ``SAM ViT and TinyViT``, ``A, B and C``."""
    names = [getattr(f, attribute) for f in families]
    if not names:
        return "none"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
