"""Conv-LoRA (Zhong et al., "Convolution Meets LoRA: Parameter Efficient Finetuning for Segment Anything Model",
ICLR 2024): LoRA whose bottleneck holds a mixture of scale-specific convolution experts chosen by a gate.

On each adapted ``nn.Linear`` (default: every encoder block's ``qkv``), with ``z = A x`` (rank r) folded back into
its spatial layout (ViT: (B, h, w, r); TinyViT: (B * windows, ws * ws, r) -> (B', r, ws, ws))::

    y = W x + (alpha / r) * B( sum_e g_e(z) * E_e(z) )
    E_e(z) = avgpool_{s_e}( GELU( conv3x3_e( upsample_{s_e}(z) ) ) )          scales s_e = 1, 2, ..., n_experts
    g(z) = top-k renormalised softmax( W_g GAP(z) )                            (per sample / window)

and the load-balancing loss of the mixture (Shazeer et al. 2017), per adapted layer and summed over layers::

    L_balance = balance_weight * (cv^2(importance) + cv^2(load)),  importance_e = sum_b softmax(W_g GAP(z_b))_e,
                load_e = #samples routed to e,  cv^2 = variance / mean^2

``B`` starts at zero, so the student starts as the pretrained SAM. *Ours* (the paper's text does not pin them):
the gate is noise-free and its importance uses the full softmax (so the gate gets a gradient with top-1 routing);
each expert is upsample (bilinear) -> 3x3 conv -> GELU -> average pool back; the expert scales are 1..n_experts.
Paper's setting: 8 experts, rank 4, top-1, gating loss weight 1 (method.md section 6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import Tensor, nn

from ..sam.family import encoder_blocks
from .base import MethodConfig, mark_trainable, replace_child


def cv_squared(x: Tensor) -> Tensor:
    """Squared coefficient of variation ``var(x) / mean(x)^2`` (unbiased variance; 0 for one element)."""
    if x.numel() <= 1:
        return x.new_zeros(())
    return x.float().var() / (x.float().mean() ** 2 + 1e-10)


class ScaleExpert(nn.Module):
    """(B, r, h, w) -> (B, r, h, w) at scale s: bilinear upsample by s, 3x3 conv, GELU, average pool by s."""

    def __init__(self, rank: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.conv = nn.Conv2d(rank, rank, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        if self.scale > 1:
            z = F.interpolate(z, scale_factor=self.scale, mode="bilinear", align_corners=False)
        z = F.gelu(self.conv(z))
        return F.avg_pool2d(z, self.scale) if self.scale > 1 else z


class ConvLoraLinear(nn.Module):
    """``base_layer`` (a Linear on spatial tokens) plus the Conv-LoRA delta; keeps its last balancing loss in
    ``aux_loss`` for the training step to collect (:func:`infosam.peft.base.collect_aux_loss`)."""

    def __init__(
        self, base_layer: nn.Linear, rank: int, alpha: float, experts: int, top_k: int, balance_weight: float
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.gate = nn.Linear(rank, experts, bias=False)
        self.experts = nn.ModuleList(ScaleExpert(rank, s) for s in range(1, experts + 1))
        self.scaling = alpha / rank
        self.top_k = top_k
        self.balance_weight = balance_weight
        self.aux_loss: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, h, w, C) or (B, N, C) with N square -> the base layer's output plus the delta."""
        z = self.lora_A(x)
        if z.dim() == 4:
            zmap = z.permute(0, 3, 1, 2)
        else:
            side = math.isqrt(z.shape[1])
            if z.dim() != 3 or side * side != z.shape[1]:
                raise ValueError(
                    f"Conv-LoRA needs spatial tokens (B, h, w, C) or (B, N, C), got {tuple(x.shape)}"
                )
            zmap = z.transpose(1, 2).reshape(z.shape[0], -1, side, side)
        probs = torch.softmax(self.gate(zmap.mean(dim=(2, 3))), dim=-1)  # (B, E)
        top, index = probs.topk(self.top_k, dim=-1)
        gates = torch.zeros_like(probs).scatter(1, index, top / top.sum(dim=-1, keepdim=True))
        mixed = torch.zeros_like(zmap)
        for e in torch.unique(index).tolist():
            mixed = mixed + gates[:, e].view(-1, 1, 1, 1) * self.experts[e](zmap)
        load = (gates > 0).float().sum(0)
        self.aux_loss = self.balance_weight * (cv_squared(probs.sum(0)) + cv_squared(load))
        delta = mixed.permute(0, 2, 3, 1) if z.dim() == 4 else mixed.flatten(2).transpose(1, 2)
        return self.base_layer(x) + self.scaling * self.lora_B(delta)


@dataclass(frozen=True)
class ConvLoraConfig(MethodConfig):
    """``conv_lora``: Conv-LoRA on the image encoder's Linear layers named ``target`` (paper: qkv, 8 experts,
    rank 4); compose ``conv_lora+decoder`` for the paper's ConvLoRA-SAM student."""

    name = "conv_lora"
    r: int = 4
    """Rank of the bottleneck (paper: 4)."""
    alpha: float = 4.0
    """Scale numerator: the delta is multiplied by alpha / r."""
    experts: int = 8
    """Number of convolution experts, at scales 1..experts (paper: 8)."""
    top_k: int = 1
    """Experts each sample (window) is routed to."""
    balance_weight: float = 1.0
    """Weight of the load-balancing loss added to the training loss (paper: 1)."""
    target: str = "qkv"
    """Name of the Linear child of each block's attention to adapt."""

    @classmethod
    def aux_loss_modules(cls, model: nn.Module) -> list[nn.Module]:
        """The Conv-LoRA layers of ``model`` (each keeps its load-balancing loss)."""
        return [m for m in model.modules() if isinstance(m, ConvLoraLinear)]

    def apply(self, model: Sam) -> None:
        if self.r < 1 or self.experts < 1 or not 1 <= self.top_k <= self.experts:
            raise ValueError(
                f"options conv_lora.r and conv_lora.experts must be >= 1 and conv_lora.top_k in 1..experts; got "
                f"r={self.r}, experts={self.experts}, top_k={self.top_k}"
            )
        adapted = 0
        for entry in encoder_blocks(model):
            attn = entry.block.attn
            while hasattr(attn, "base_layer"):
                attn = attn.base_layer
            layer = getattr(attn, self.target, None)
            if not isinstance(layer, nn.Linear):
                continue
            wrapper = ConvLoraLinear(layer, self.r, self.alpha, self.experts, self.top_k, self.balance_weight)
            for part in (wrapper.lora_A, wrapper.lora_B, wrapper.gate, wrapper.experts):
                mark_trainable(part)
            replace_child(attn, self.target, wrapper)
            adapted += 1
        if not adapted:
            raise ValueError(
                f"option conv_lora.target={self.target!r} names no Linear of the encoder's attention"
            )
