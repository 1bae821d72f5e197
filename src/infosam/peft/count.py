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
