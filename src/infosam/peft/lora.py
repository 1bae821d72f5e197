"""LoRA (Hu et al., 2022) through the ``peft`` library, injected into the image encoder only.

``peft.inject_adapter_in_model`` replaces each matched ``nn.Linear`` with ``peft``'s LoRA layer, which keeps
the original as ``base_layer`` and adds ``lora_A.default`` / ``lora_B.default`` (B zero-initialised, so the
student starts as the pretrained SAM). Injection is scoped to ``model.image_encoder``: the mask decoder and
the prompt encoder are never matched, whatever ``target_modules`` says (compose ``"lora+decoder"`` to train
the decoder).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from segment_anything.modeling import Sam
from torch import nn

from ..options import check_value
from ..sam.family import encoder_blocks
from .base import MethodConfig, check_block_range

# LoraConfig fields that make no sense here: the model type is fixed and peft's bookkeeping is ours.
_RESERVED = {
    "peft_type",
    "task_type",
    "base_model_name_or_path",
    "revision",
    "inference_mode",
    "auto_mapping",
    "peft_version",
}


def lora_config_fields() -> list[str]:
    """Names of the ``peft.LoraConfig`` keywords that may be passed through as ``lora.<name>`` options."""
    from peft import LoraConfig  # imported on use: peft takes seconds to import

    return sorted(f.name for f in dataclasses.fields(LoraConfig) if f.init and f.name not in _RESERVED)


@dataclass(frozen=True)
class LoraMethodConfig(MethodConfig):
    """``lora``: low-rank updates on the image encoder's ``qkv`` projections (paper: rank 4, alpha 4).

    Every other ``peft.LoraConfig`` keyword (``use_dora``, ``use_rslora``, ``lora_dropout``, ``bias``, ...) is
    accepted as an option and passed through unchanged. The paper's LoRA student is ``"lora+decoder"``.
    """

    name = "lora"
    r: int = 4
    """Rank of each low-rank update (paper: 4)."""
    lora_alpha: int = 4
    """Scale numerator: the update is multiplied by lora_alpha / r (paper: 4, so 1)."""
    target_modules: tuple[str, ...] = ("qkv",)
    """Names (suffixes) of the image-encoder Linear layers to adapt; 'qkv' is every block's attention
    projection."""
    first_block: int = 0
    """Adapt only layers inside attention blocks first_block..depth-1 (the block numbering of ``adapter``:
    TinyViT's attention blocks across stages 1..3, ViT's blocks); 0 with first_stage 0: every matching layer of
    the encoder, as peft would."""
    first_stage: int = 0
    """Adapt only layers inside attention blocks of encoder stage >= first_stage as well (TinyViT: 1..3; e.g. 2
    keeps LoRA out of stage 1's 128 x 128-token blocks)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further LoraConfig keywords, passed through as given (set them as plain lora.<keyword> options)."""

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None) -> LoraMethodConfig:
        options = dict(options or {})
        extra = options.pop("extra", None) or {}  # the nested form that to_options() flattens
        options = {**extra, **options}
        own = {"r", "lora_alpha", "target_modules", "first_block", "first_stage"}
        valid = lora_config_fields()
        unknown = sorted(set(options) - own - set(valid))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for PEFT method 'lora'; valid options: r, lora_alpha, "
                f"target_modules, first_block, first_stage and any peft.LoraConfig keyword: {', '.join(valid)}"
            )
        for key in ("r", "lora_alpha", "first_block", "first_stage"):
            if key in options:
                options[key] = check_value(f"option lora.{key}", int, options[key])
        targets = options.pop("target_modules", cls.target_modules)
        if isinstance(targets, str):
            targets = (targets,)
        kept = {k: options.pop(k) for k in ("r", "lora_alpha", "first_block", "first_stage") if k in options}
        return cls(**kept, target_modules=tuple(targets), extra=options)

    def to_options(self) -> dict[str, Any]:
        return {
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "target_modules": list(self.target_modules),
            **({"first_block": self.first_block} if self.first_block else {}),
            **({"first_stage": self.first_stage} if self.first_stage else {}),
            **self.extra,
        }

    def _targets(self, model: Sam) -> list[str]:
        """``target_modules`` as peft takes them: the suffixes as given, or, when first_block / first_stage
        restrict the blocks, the full names (below ``image_encoder``) of the matching layers in the chosen
        blocks."""
        if not self.first_block and not self.first_stage:
            return list(self.target_modules)
        blocks = list(encoder_blocks(model))
        check_block_range(self.name, self.first_block, len(blocks))
        chosen = [b for b in blocks if b.index >= self.first_block and b.stage >= self.first_stage]
        prefix = "image_encoder."
        names = []
        for entry in chosen:
            base = entry.name[len(prefix) :] if entry.name.startswith(prefix) else entry.name
            for sub, module in entry.block.named_modules():
                if (
                    sub
                    and isinstance(module, nn.Linear)
                    and any(sub == t or sub.endswith("." + t) for t in self.target_modules)
                ):
                    names.append(f"{base}.{sub}")
        if not names:
            stages = sorted({b.stage for b in blocks})
            raise ValueError(
                f"options lora.first_block={self.first_block} and lora.first_stage={self.first_stage} with "
                f"target_modules={list(self.target_modules)} select no layer of this model (its attention "
                f"blocks are in stages {stages})"
            )
        return names

    def apply(self, model: Sam) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(
            r=self.r, lora_alpha=self.lora_alpha, target_modules=self._targets(model), **self.extra
        )
        # peft freezes every non-LoRA parameter of the module it injects into: keep what earlier methods
        # unfroze.
        trainable_before = [p for p in model.parameters() if p.requires_grad]
        try:
            inject_adapter_in_model(config, model.image_encoder)
        except ValueError as err:
            raise ValueError(
                f"PEFT method 'lora' (target_modules={list(self.target_modules)}): {err}"
            ) from err
        for p in trainable_before:
            p.requires_grad_(True)
