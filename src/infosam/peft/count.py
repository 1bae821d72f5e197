"""Parameter counts per SAM part, all and trainable."""

from __future__ import annotations

from segment_anything.modeling import Sam

PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")


def count_parameters(model: Sam) -> dict[str, dict[str, int]]:
    """``{part: {"all": n, "trainable": n}}`` for image_encoder, prompt_encoder, mask_decoder and total.

    Parameters outside the three parts (none in Meta's Sam) count only in the total.
    """
    table = {}
    for part in PARTS:
        params = list(getattr(model, part).parameters())
        table[part] = {
            "all": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad),
        }
    params = list(model.parameters())
    table["total"] = {
        "all": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }
    return table


def student_parameters(model: str, methods: str, options: dict | None = None) -> dict:
    """Parameter counts of SAM ``model`` with PEFT ``methods`` applied, built on PyTorch's ``meta`` device (shapes
    only: no memory, no initialisation, no checkpoint).

    Returns ``{"model", "peft" (the applied spec as a dict), "parameters" (:func:`count_parameters`),
    "relation_module" (parameters of InfoSAM's relation module), "prompt_embed_dim"}``.
    """
    import torch

    from ..distill.relation import RelationModule
    from ..sam.build import build_sam
    from .registry import apply_peft

    with torch.device("meta"):
        sam = build_sam(model)
        spec = apply_peft(sam, methods, options)
        relation = RelationModule(sam.spec.prompt_embed_dim)
    return {
        "model": model,
        "peft": spec.to_dict(),
        "parameters": count_parameters(sam),
        "relation_module": sum(p.numel() for p in relation.parameters()),
        "prompt_embed_dim": sam.spec.prompt_embed_dim,
    }
