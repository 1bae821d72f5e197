"""What a model family is: the questions the rest of the project asks about a model, answered once per family.

A :class:`Family` owns everything that differs between SAM ViT, TinyViT and SAM 2: how a spec becomes a model,
how a model encodes images and decodes prompts, which encoder blocks PEFT methods adapt and activation
checkpointing wraps (in forward order), the segments the student-prefix cache cuts the encoder into, the feature
taps the distillation baselines and HQ-SAM read, how an official checkpoint's weights are recognised, and what the
family supports (capability flags, each refusal with its reason). The registry and the lookups
(``family_of(model)``, ``family_of_spec(spec)``, ``FAMILIES[name]``) are in :mod:`infosam.sam.family`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from torch import Tensor, nn

from ..specs import SPECS, SamSpec

if TYPE_CHECKING:
    from ..output import SamOutput


class EncoderBlock(NamedTuple):
    """One attention block of the image encoder, as PEFT methods see it (every family)."""

    index: int
    """Position among the encoder's attention blocks, 0-based, in forward order."""
    name: str
    """Qualified name in the model, e.g. ``image_encoder.blocks.3`` or ``image_encoder.layers.2.blocks.0``."""
    block: nn.Module
    """The block; it has ``attn`` and ``mlp`` children mapping (..., dim) tokens to the same shape."""
    stage: int
    """ViT: 0 (one stage). TinyViT: the stage (``image_encoder.layers`` index, 1..3; stage 0 is convolutional).
    SAM 2: the Hiera stage, 0..3."""
    dim: int
    """Token width of the block's attention output and MLP (Hiera: ``dim_out``; a stage's first block widens)."""
    norms: tuple[nn.Module, ...]
    """The block's LayerNorms before attention and before the MLP (ViT: norm1, norm2; TinyViT: attn.norm,
    mlp.norm; found through any wrapper a method put around attn/mlp)."""


@dataclass(frozen=True)
class Segment:
    """One piece of the image encoder in forward order (what the student-prefix cache cuts at)."""

    name: str
    """Qualified name below the encoder, e.g. ``layers.0.downsample`` (``pos_embed`` for ViT's position add)."""
    run: Callable[[Tensor], Tensor]
    """Maps the previous segment's output to this one's."""
    modules: tuple[nn.Module, ...]
    """The modules whose parameters and buffers the segment uses (its trainability and its weights)."""
    tensors: tuple[Tensor, ...] = ()
    """Parameters the segment uses outside ``modules`` (ViT's ``pos_embed``)."""

    def trainable(self) -> bool:
        """Whether any parameter of the segment requires gradients."""
        params = [p for m in self.modules for p in m.parameters()] + list(self.tensors)
        return any(isinstance(p, nn.Parameter) and p.requires_grad for p in params)


def unwrapped(module: nn.Module) -> nn.Module:
    """The module a PEFT wrapper holds as ``base_layer`` (through any number of wrappers), or ``module``."""
    while hasattr(module, "base_layer"):
        module = module.base_layer
    return module


class Family:
    """One model family. Subclasses set the class attributes and implement the methods that raise here; one
    instance of each is registered in :data:`infosam.sam.family.FAMILIES`."""

    name: ClassVar[str]
    """The ``SamSpec.family`` value of its specs."""
    label: ClassVar[str]
    """Its name in messages, e.g. ``SAM 2``."""
    encoder_label: ClassVar[str]
    """Its image encoder's name in messages, e.g. ``Meta's ImageEncoderViT``."""

    # Capabilities: what the rest of the project may do with a model of the family.
    student_prefix: ClassVar[bool] = True
    """The student-prefix cache can cut its encoder into segments (:meth:`segments`)."""
    hq_token: ClassVar[bool] = True
    """The ``hq_token`` PEFT method applies (it wraps segment_anything's MaskDecoder)."""
    distill_baselines: ClassVar[bool] = True
    """The distillation baselines (``distill.method`` other than infosam and none) apply."""
    onnx_export: ClassVar[bool] = True
    """``infosam export --format onnx`` is implemented."""
    meta_device: ClassVar[bool] = False
    """Its models can be built on PyTorch's ``meta`` device (shapes only), for counting parameters."""
    export_format: ClassVar[str] = "sam"
    """The ``infosam export`` format that writes the family's official checkpoint layout."""
    export_key: ClassVar[str | None] = None
    """The key official checkpoint files keep the state dict under (None: a plain state dict)."""
    why_not: ClassVar[Mapping[str, str]] = {}
    """Why a capability is False, where its refusal gives a reason (``student_prefix``, ``distill_baselines``): a
    clause for the message."""

    # ------------------------------------------------------------------------------------------------------------
    # recognising a model

    def owns_encoder(self, encoder: object) -> bool:
        """Whether ``encoder`` is an image encoder of this family."""
        raise NotImplementedError

    def owns(self, model: object) -> bool:
        """Whether ``model`` is a SAM of this family (by default: by its image encoder)."""
        return self.owns_encoder(getattr(model, "image_encoder", None))

    def specs(self) -> list[str]:
        """Names of the ``SPECS`` rows of this family, in table order."""
        return [name for name, spec in SPECS.items() if spec.family == self.name]

    # ------------------------------------------------------------------------------------------------------------
    # building and running

    def build(self, spec: SamSpec) -> nn.Module:
        """A model of ``spec`` with random weights and ``model.spec = spec`` (the caller sets eval mode)."""
        raise NotImplementedError

    def encode(self, model: nn.Module, images: Tensor) -> Tensor:
        """What :func:`infosam.sam.forward.encode_images` returns for checked ``images`` (B, 3, S, S)."""
        return model.image_encoder(images)

    def decode(
        self,
        model: nn.Module,
        image_embeddings: Tensor,
        boxes: Tensor | None,
        points: Tensor | None,
        point_labels: Tensor | None,
        tokens_only: bool,
    ) -> SamOutput:
        """What :func:`infosam.sam.forward.decode` returns for checked prompts."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------------------
    # the encoder's blocks, segments and feature taps

    def blocks(self, encoder: nn.Module) -> list[EncoderBlock]:
        """Every attention block of ``encoder`` (a model's ``image_encoder``) in forward order, named as in the
        model. Blocks themselves are never wrapped by a PEFT method, so this also works after one is applied."""
        raise NotImplementedError

    def segments(self, encoder: nn.Module) -> list[Segment]:
        """The segments whose composition is ``encoder``'s forward (only where :attr:`student_prefix`)."""
        raise TypeError(f"{self.label}'s encoder is not cut into segments")

    def feature_taps(self, model: nn.Module) -> tuple[int, ...]:
        """Indices (in :meth:`blocks` order) of the blocks whose outputs are the encoder's feature levels (by
        default the last block of each stage)."""
        last: dict[int, int] = {}
        for b in self.blocks(model.image_encoder):
            last[b.stage] = b.index
        return tuple(last[s] for s in sorted(last))

    def early_block(self, model: nn.Module) -> EncoderBlock:
        """The early encoder block whose output HQ-SAM fuses (by default the first feature tap)."""
        return self.blocks(model.image_encoder)[self.feature_taps(model)[0]]

    # ------------------------------------------------------------------------------------------------------------
    # official checkpoints

    def claims_weights(self, state: Mapping[str, Tensor]) -> bool:
        """Whether a state dict's keys are this family's layout."""
        raise NotImplementedError

    def architecture(self, state: Mapping[str, Tensor]) -> dict:
        """What the weights reveal (see :func:`infosam.sam.checkpoint.inspect_checkpoint`)."""
        raise NotImplementedError

    def shape_words(self, arch: Mapping) -> str:
        """:meth:`architecture` in a few words, for messages."""
        raise NotImplementedError

    def fits(self, spec: SamSpec, arch: Mapping) -> bool:
        """Whether the weights described by ``arch`` are those of ``spec`` (a row of this family)."""
        raise NotImplementedError

    def describe(self, state: Mapping[str, Tensor]) -> tuple[str | None, str]:
        """(name of the first ``SPECS`` row of this family the weights fit, or None; their shape in words)."""
        arch = self.architecture(state)
        shape = self.shape_words(arch)
        for name in self.specs():
            if self.fits(SPECS[name], arch):
                return name, shape
        return None, shape

    def __repr__(self) -> str:
        return f"<model family {self.name!r}>"
