"""The table of SAM architectures the project can build.

Each row holds every hyper-parameter Meta's ``segment_anything/build_sam.py`` fixes for ViT-B/L/H, so one builder
makes all of them; ``tiny`` is a few-thousand-parameter variant of the same architecture for tests and the demo.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class SamSpec:
    """Hyper-parameters of one SAM variant (names follow Meta's builder)."""

    name: str
    encoder_embed_dim: int
    """Width of the ViT image encoder."""
    encoder_depth: int
    """Number of ViT blocks."""
    encoder_num_heads: int
    """Attention heads per ViT block."""
    encoder_global_attn_indexes: tuple[int, ...]
    """Blocks that attend globally; the others use windowed attention."""
    image_size: int = 1024
    """Side of the square padded input image."""
    patch_size: int = 16
    """ViT patch size; the image embedding is image_size // patch_size on a side."""
    window_size: int = 14
    """Window side of the windowed-attention blocks."""
    mlp_ratio: float = 4.0
    """Hidden width of each ViT MLP relative to encoder_embed_dim."""
    prompt_embed_dim: int = 256
    """Channels of the image embeddings, prompt embeddings and decoder tokens (C in method.md)."""
    decoder_depth: int = 2
    """Layers of the two-way transformer."""
    decoder_mlp_dim: int = 2048
    """Hidden width of the two-way transformer's MLPs."""
    decoder_num_heads: int = 8
    """Heads of the two-way transformer."""
    iou_head_depth: int = 3
    """Layers of the IoU prediction MLP."""
    iou_head_hidden_dim: int = 256
    """Hidden width of the IoU prediction MLP."""
    mask_in_chans: int = 16
    """Hidden channels of the prompt encoder's mask-input downscaler."""
    transform: str = "sam"
    """Pre/post-processing family (a key of :data:`infosam.sam.transforms.TRANSFORMS`)."""

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for the official 1024 / 16)."""
        return self.image_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-resolution logits (4x the embedding grid: 256 officially)."""
        return 4 * self.embedding_size


SPECS: dict[str, SamSpec] = {
    "vit_b": SamSpec("vit_b", 768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamSpec("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamSpec("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    # Same architecture, shrunk everywhere: 64x64 input, 8x8 embedding grid, four blocks alternating windowed and
    # global attention like ViT-B, so block-indexed PEFT (adapters from block 2 on) has something to adapt.
    "tiny": SamSpec(
        "tiny",
        encoder_embed_dim=32,
        encoder_depth=4,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1, 3),
        image_size=64,
        patch_size=8,
        window_size=4,
        prompt_embed_dim=32,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_hidden_dim=32,
        mask_in_chans=4,
    ),
}


def get_spec(spec: str | SamSpec, **overrides) -> SamSpec:
    """Return the spec named ``spec`` (or ``spec`` itself) with ``overrides`` applied.

    Raises:
        ValueError: unknown spec name or unknown override field; the message lists the valid choices.
    """
    if isinstance(spec, SamSpec):
        base = spec
    else:
        if spec not in SPECS:
            raise ValueError(f"unknown SAM model {spec!r}; known models: {', '.join(SPECS)}")
        base = SPECS[spec]
    if not overrides:
        return base
    fields = {f.name for f in dataclasses.fields(SamSpec)} - {"name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown SAM spec override(s) {unknown}; valid fields: {', '.join(sorted(fields))}")
    if "encoder_global_attn_indexes" in overrides:
        overrides["encoder_global_attn_indexes"] = tuple(overrides["encoder_global_attn_indexes"])
    return dataclasses.replace(base, **overrides)
