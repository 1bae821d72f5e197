"""The student's frozen prefix: the part of its image encoder before the first trainable parameter, cached.

Everything the student's encoder computes before the first module that trains is a pure function of the input image
(frozen weights, BatchNorm in eval mode, no dropout), exactly like the teacher's embeddings. This module cuts the
encoder into *segments* in forward order (:func:`encoder_segments`), finds the longest leading run of frozen ones
(:func:`split_encoder`), and :class:`StudentPrefix` computes that run once per image and reads it back from a
:class:`~infosam.cache.TensorStore` afterwards, so a training step only runs the rest:

- decoder-only (any family): the whole encoder is frozen, the prefix output *is* the image embedding and equals the
  teacher's (same weights, same input, same precision): the teacher cache's entries are used, nothing is stored
  twice;
- TinyViT with PEFT from stage 1 (LoRA on every attention block): the patch embedding and the convolutional stage 0
  with its downsampling (LiteMedSAM: 64 channels on 256 x 256 tokens, about 60% of the encoder's forward), cached
  as 128 x 128 x 128 features;
- adapters from a later block (TinyViT or ViT): the blocks before the first adapted one as well.

Entries are keyed by the content of the preprocessed input image (the teacher cache's keys) and the store is
fingerprinted by the teacher's fingerprint (spec, weights file, transform, compute precision) plus the boundary and a
sha256 of the prefix's own weights, so a changed model, transform, precision, placement or weight is refused, never
served. Like the teacher cache, a computed prefix is stored and read back, so every epoch (and a resumed run) sees
the same stored values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from segment_anything.modeling import ImageEncoderViT
from torch import Tensor, nn

from .cache import TeacherCache, TensorStore

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

    from .config import Config

PREFIX_KIND = "student-encoder-prefix"
_FEATURES = "features"


@dataclass(frozen=True)
class Segment:
    """One piece of the image encoder in forward order."""

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


def encoder_segments(encoder: nn.Module) -> list[Segment]:
    """The segments of a SAM image encoder whose composition is its ``forward`` (tested bitwise equal).

    Meta's ``ImageEncoderViT``: ``patch_embed``, ``pos_embed`` (the addition), each of ``blocks``, ``neck``.
    :class:`~infosam.sam.tinyvit.TinyViTEncoder`: ``patch_embed``, each block of each stage and the stage's
    ``downsample`` (stage 0's blocks are convolutional), then ``neck`` (tokens -> (B, C, g, g) grid first).

    Raises:
        TypeError: another encoder class (its forward order is unknown).
    """
    from .sam.tinyvit import TinyViTEncoder

    if isinstance(encoder, TinyViTEncoder):
        return _tinyvit_segments(encoder)
    if isinstance(encoder, ImageEncoderViT):
        return _vit_segments(encoder)
    raise TypeError(
        f"the student prefix cache knows Meta's ImageEncoderViT and TinyViT encoders, got {type(encoder).__name__}"
    )


def _vit_segments(encoder: ImageEncoderViT) -> list[Segment]:
    segments = [Segment("patch_embed", encoder.patch_embed, (encoder.patch_embed,))]
    if encoder.pos_embed is not None:
        segments.append(Segment("pos_embed", lambda x: x + encoder.pos_embed, (), (encoder.pos_embed,)))
    for i, block in enumerate(encoder.blocks):
        segments.append(Segment(f"blocks.{i}", block, (block,)))
    segments.append(Segment("neck", lambda x: encoder.neck(x.permute(0, 3, 1, 2)), (encoder.neck,)))
    return segments


def _tinyvit_segments(encoder: nn.Module) -> list[Segment]:
    segments = [Segment("patch_embed", encoder.patch_embed, (encoder.patch_embed,))]
    for s, layer in enumerate(encoder.layers):
        if getattr(layer, "use_checkpoint", False):
            raise ValueError(
                f"TinyViT stage {s} uses the package's own checkpointing; the prefix cache needs it off "
                "(use train.activation_checkpointing instead)"
            )
        for j, block in enumerate(layer.blocks):
            segments.append(Segment(f"layers.{s}.blocks.{j}", block, (block,)))
        if layer.downsample is not None:
            segments.append(Segment(f"layers.{s}.downsample", layer.downsample, (layer.downsample,)))

    def neck(x: Tensor) -> Tensor:
        batch, tokens, channels = x.shape
        if tokens != encoder.grid * encoder.grid:
            raise RuntimeError(
                f"TinyViT produced {tokens} tokens, expected a {encoder.grid} x {encoder.grid} grid"
            )
        return encoder.neck(x.transpose(1, 2).reshape(batch, channels, encoder.grid, encoder.grid))

    segments.append(Segment("neck", neck, (encoder.neck,)))
    return segments


@dataclass(frozen=True)
class EncoderSplit:
    """An encoder cut into a frozen prefix (``segments[:boundary]``) and the rest."""

    segments: tuple[Segment, ...]
    boundary: int
    """How many leading segments hold no trainable parameter."""

    @property
    def whole(self) -> bool:
        """The whole encoder is frozen (decoder-only PEFT): the prefix output is the image embedding."""
        return self.boundary == len(self.segments)

    @property
    def empty(self) -> bool:
        """Nothing to cache: the first segment already trains."""
        return self.boundary == 0

    @property
    def last_frozen(self) -> str | None:
        """Name of the prefix's last segment (``None`` when empty)."""
        return self.segments[self.boundary - 1].name if self.boundary else None

    def prefix(self, images: Tensor) -> Tensor:
        """The frozen prefix: images (B, 3, S, S) -> its output features (shape depends on the boundary)."""
        x = images
        for segment in self.segments[: self.boundary]:
            x = segment.run(x)
        return x

    def rest(self, features: Tensor) -> Tensor:
        """The trainable rest: prefix features -> image embeddings (B, C, h, w) (the features when whole)."""
        x = features
        for segment in self.segments[self.boundary :]:
            x = segment.run(x)
        return x

    def prefix_sha256(self) -> str:
        """sha256 over the names and persistent state (parameters and buffers) of the prefix's segments."""
        digest = hashlib.sha256()
        for segment in self.segments[: self.boundary]:
            digest.update(segment.name.encode())
            state: dict[str, Tensor] = {}
            for i, module in enumerate(segment.modules):
                state.update({f"{i}.{k}": v for k, v in module.state_dict().items()})
            state.update({f"t{i}": t for i, t in enumerate(segment.tensors)})
            for key, value in state.items():
                digest.update(key.encode())
                digest.update(str(value.dtype).encode() + str(tuple(value.shape)).encode())
                digest.update(
                    value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                )
        return digest.hexdigest()


def split_encoder(encoder: nn.Module) -> EncoderSplit:
    """Cut ``encoder`` before its first segment with a trainable parameter (:func:`encoder_segments`)."""
    segments = tuple(encoder_segments(encoder))
    boundary = next((i for i, s in enumerate(segments) if s.trainable()), len(segments))
    return EncoderSplit(segments, boundary)


def prefix_fingerprint(teacher_fingerprint: Mapping[str, Any], split: EncoderSplit) -> dict:
    """The prefix store's fingerprint: the teacher's (spec, weights file, transform, precision) + the boundary and
    the sha256 of the prefix's own weights (so a different placement or weight is a different store)."""
    return {
        **dict(teacher_fingerprint),
        "prefix": {
            "last_segment": split.last_frozen,
            "segments": split.boundary,
            "state_sha256": split.prefix_sha256(),
        },
    }


class StudentPrefix:
    """The student's frozen prefix, computed once per image and then read from a store.

    Args:
        split: :func:`split_encoder` of the student's image encoder (not empty).
        store: where the prefix outputs live: a :class:`~infosam.cache.TensorStore` of kind
            :data:`PREFIX_KIND` fingerprinted by :func:`prefix_fingerprint`, or, when ``split.whole`` and the
            encoder's weights are the teacher's, the teacher cache (its embeddings are the same function).

    Use: ``features = prefix.features(images, keys)`` (no gradients; float32 on ``images``' device), then
    ``split.rest(features)`` with gradients inside the student.
    """

    def __init__(self, split: EncoderSplit, store: TensorStore) -> None:
        if split.empty:
            raise ValueError("the student's first encoder segment trains: there is no frozen prefix to cache")
        if isinstance(store, TeacherCache) and not split.whole:
            raise ValueError(
                "only a whole-encoder prefix (the image embeddings) can live in the teacher cache"
            )
        self.split = split
        self.store = store
        self.computed = 0
        """Images whose prefix was computed (not read) by this object: a warm store leaves it at 0."""

    def features(self, images: Tensor, keys: Sequence[str] | None = None) -> Tensor:
        """The prefix output of images (B, 3, S, S) for content ``keys`` (computed from ``images`` if not given):
        read from the store, or computed, stored and read back; float32 on ``images``' device, no gradients."""
        keys = list(keys) if keys is not None else self.store.keys(images)
        with torch.no_grad():
            found = self._get(keys)
            if found is None:
                self._put(keys, self.split.prefix(images))
                self.computed += len(keys)
                found = self._get(keys)
                if found is None:
                    raise RuntimeError(
                        f"prefix cache {self.store.directory}: entries just written cannot be read"
                    )
        return found.to(images.device)

    def encode(self, images: Tensor) -> Tensor:
        """The student's image embeddings of images (B, 3, S, S): the stored prefix, then the rest of the
        encoder (what evaluation runs: test images are computed once and read at every evaluation after)."""
        return self.split.rest(self.features(images))

    def _get(self, keys: list[str]) -> Tensor | None:
        if isinstance(self.store, TeacherCache):
            return self.store.get(keys)
        found = self.store.get_tensors(keys)
        return None if found is None else found[_FEATURES]

    def _put(self, keys: list[str], features: Tensor) -> None:
        if isinstance(self.store, TeacherCache):
            self.store.put(keys, features)
        else:
            self.store.put_tensors(keys, {_FEATURES: features})


def open_prefix_store(
    directory: str | Path, fingerprint: Mapping[str, Any], dtype: torch.dtype
) -> TensorStore:
    """The prefix store in ``directory`` (created if missing; refused if it was made for another fingerprint)."""
    return TensorStore(Path(directory).expanduser(), PREFIX_KIND, fingerprint, dtype)


# --------------------------------------------------------------------------------------------- from a config


def open_teacher_cache(config: Config, teacher: Sam) -> TeacherCache:
    """The teacher cache in ``config.cache.dir`` for ``teacher`` (built from ``config.model``), fingerprinted by
    its spec, weights file, preprocessing and ``config.train.precision``; a random teacher (no checkpoint) is
    fingerprinted by its weights, so two such teachers never share entries."""
    from .cache import teacher_fingerprint
    from .sam.checkpoint import resolve_checkpoint  # 'bundled' -> the package's verified file
    from .sam.transforms import get_transform

    preprocessing = get_transform(teacher.spec).fingerprint()
    model = teacher if config.model.checkpoint is None else None
    weights = None if config.model.checkpoint is None else resolve_checkpoint(config.model.checkpoint)
    fingerprint = teacher_fingerprint(
        teacher.spec, weights, preprocessing, precision=config.train.precision, model=model
    )
    return TeacherCache(Path(config.cache.dir).expanduser(), fingerprint)


def open_student_prefix(
    config: Config, student: Sam, teacher: Sam | None = None, cache: TeacherCache | None = None
) -> StudentPrefix | None:
    """The cached frozen encoder prefix of ``student`` (``cache.student_prefix``), or None when it has none.

    Which parameters are frozen is read from ``requires_grad``. A whole frozen encoder (decoder-only, or a
    zero-shot model) computes the teacher's embeddings: when its weights are the teacher's (``teacher``, else
    built from ``config.model``), its entries are the teacher cache's (``cache``, else opened here); otherwise,
    and for a partial prefix, the prefix has its own store (``cache.prefix_dir``) fingerprinted by the prefix's
    weights. Training and evaluation (:func:`infosam.evaluate.evaluate_run` with ``cache``) open it alike."""
    from .cache import precision_name, teacher_fingerprint
    from .model import build_configured, make_teacher
    from .sam.checkpoint import resolve_checkpoint
    from .sam.transforms import get_transform

    if not config.cache.student_prefix:
        return None
    from .sam.sam2 import is_sam2

    if is_sam2(student):
        raise ValueError(
            f"cache.student_prefix is not supported on SAM 2 ({student.spec.name}): its decoder's high-resolution "
            "projections run inside the encode step, so no encoder prefix is frozen; set cache.student_prefix: "
            "false (the teacher cache works)"
        )
    split = split_encoder(student.image_encoder)
    if split.empty:
        return None
    m = config.model
    reference = teacher if teacher is not None else make_teacher(build_configured(config))
    if split.whole and _same_state(student.image_encoder, reference.image_encoder):
        return StudentPrefix(split, cache if cache is not None else open_teacher_cache(config, reference))
    preprocessing = get_transform(reference.spec).fingerprint()
    weights = None if m.checkpoint is None else resolve_checkpoint(m.checkpoint)
    fingerprint = teacher_fingerprint(
        reference.spec,
        weights,
        preprocessing,
        precision=config.train.precision,
        model=reference if weights is None else None,
    )
    directory = config.cache.prefix_dir or f"{str(config.cache.dir).rstrip('/')}-prefix"
    dtype = getattr(torch, precision_name(config.cache.prefix_dtype))
    store = open_prefix_store(directory, prefix_fingerprint(fingerprint, split), dtype)
    return StudentPrefix(split, store)


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)
