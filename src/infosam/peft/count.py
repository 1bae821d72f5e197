"""Parameter counts per SAM part, all and trainable."""

from __future__ import annotations

from segment_anything.modeling import Sam

PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")


def count_parameters(model: Sam) -> dict[str, dict[str, int]]:
    """``{part: {"all": n, "trainable": n}}`` for image_encoder, prompt_encoder, mask_decoder and total.

    Parameters outside the three parts (none in Meta's Sam) count in the total and, when there are any (SAM 2's
    memory attention, memory encoder and memory-path embeddings, which image segmentation never runs), in an extra
    ``"other"`` row.
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
    other = {k: table["total"][k] - sum(table[part][k] for part in PARTS) for k in ("all", "trainable")}
    if other["all"]:
        table["other"] = other
    return table


def peft_parameters(model: str, methods: str, options: dict | None = None) -> dict:
    """Parameter counts of SAM ``model`` with PEFT ``methods`` applied, without any checkpoint.

    Models are built on PyTorch's ``meta`` device (shapes only: no memory, no initialisation) where their family
    allows it (ViT); TinyViT and SAM 2 models on the CPU, since the packages' constructors cannot run on the meta
    device (SAM 2: measured on Meta's built model).

    Returns ``{"model", "peft" (the applied spec as a dict), "parameters" (:func:`count_parameters`, each part
    with an extra ``"stored"``: the elements of every tensor the base model's weights file holds for the part,
    parameters plus persistent buffers such as BatchNorm statistics, counted before PEFT; the numbers
    LiteMedSAM's release quotes), "prompt_embed_dim", "base_parameters" (SAM's parameters before PEFT),
    "release_head" (parameters of a classifier head the release model carries and this package does not build:
    MobileSAM's, else 0)}``. :func:`infosam.model.student_parameters` adds InfoSAM's relation module.
    """
    import torch

    from ..sam.build import build_sam
    from ..sam.tinyvit import release_head_parameters
    from .registry import apply_peft

    with torch.device(count_device(model)):
        sam = build_sam(model)
        stored = {part: _elements(getattr(sam, part)) for part in PARTS}
        stored["total"] = _elements(sam)
        stored["other"] = stored["total"] - sum(stored[part] for part in PARTS)
        base = sum(p.numel() for p in sam.parameters())
        spec = apply_peft(sam, methods, options)
    table = count_parameters(sam)
    for key in table:
        table[key]["stored"] = stored[key]
    return {
        "model": model,
        "peft": spec.to_dict(),
        "parameters": table,
        "prompt_embed_dim": sam.spec.prompt_embed_dim,
        "base_parameters": base,
        "release_head": release_head_parameters(sam.spec),
    }


def count_device(model: str) -> str:
    """Where :func:`peft_parameters` builds SAM ``model`` (a spec name): ``meta`` if its family allows, else
    ``cpu``."""
    from ..sam.family import family_of_spec
    from ..sam.specs import get_spec

    return "meta" if family_of_spec(get_spec(model)).meta_device else "cpu"


def _elements(module) -> int:
    """Elements of every tensor in ``module.state_dict()`` (parameters and persistent buffers)."""
    return sum(t.numel() for t in module.state_dict().values())
