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

Which caches a training step uses, and whether the student's prefix *is* the teacher's embeddings, is decided once,
by :func:`open_step_caches` (from a config) or :func:`open_caches` (from folders and models): the step, the
evaluation and the benchmarks take its :class:`StepCaches` and ask it, never the stores' types.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .cache import TEACHER_KIND, TeacherCache, TensorStore, cache_folders, content_keys
from .fingerprint import model_teacher_fingerprint, precision_name
from .sam.family import FAMILIES, Segment, family_of, family_of_encoder, labels

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

    from .config import Config
    from .sam.forward import SamOutput

PREFIX_KIND = "student-encoder-prefix"
_FEATURES = "features"


def encoder_segments(encoder: nn.Module) -> list[Segment]:
    """The segments of a SAM image encoder whose composition is its ``forward`` (tested bitwise equal), as its
    model family cuts it (:meth:`infosam.sam.family.Family.segments`).

    Meta's ``ImageEncoderViT``: ``patch_embed``, ``pos_embed`` (the addition), each of ``blocks``, ``neck``.
    :class:`~infosam.sam.tinyvit.TinyViTEncoder`: ``patch_embed``, each block of each stage and the stage's
    ``downsample`` (stage 0's blocks are convolutional), then ``neck`` (tokens -> (B, C, g, g) grid first).

    Raises:
        TypeError: another encoder class, or one of a family without segments (its forward order is unknown).
    """
    family = family_of_encoder(encoder)
    if family is None or not family.student_prefix:
        known = labels((f for f in FAMILIES.values() if f.student_prefix), "encoder_label")
        raise TypeError(f"the student prefix cache knows {known} encoders, got {type(encoder).__name__}")
    return family.segments(encoder)


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
        store: where the prefix outputs live, read and written through its one tensor (``store.get`` /
            ``store.put``): a store of kind :data:`PREFIX_KIND` fingerprinted by :func:`prefix_fingerprint`
            (:func:`open_prefix_store`), or the teacher cache when ``teacher_embeddings``.
        teacher_embeddings: the prefix is the whole encoder with the teacher's weights, so its output is the
            teacher's image embeddings and its entries are the teacher cache's (``store``); decided by
            :func:`open_caches`.

    Use: ``features = prefix.features(images, keys)`` (no gradients; float32 on ``images``' device), then
    ``split.rest(features)`` with gradients inside the student.
    """

    def __init__(self, split: EncoderSplit, store: TensorStore, *, teacher_embeddings: bool = False) -> None:
        if split.empty:
            raise ValueError("the student's first encoder segment trains: there is no frozen prefix to cache")
        if teacher_embeddings and not split.whole:
            raise ValueError(
                "only a whole-encoder prefix (the image embeddings) can live in the teacher cache"
            )
        if teacher_embeddings != (store.manifest["kind"] == TEACHER_KIND):
            raise ValueError(
                f"a prefix with teacher_embeddings={teacher_embeddings} cannot live in a store of kind "
                f"{store.manifest['kind']!r}"
            )
        self.split = split
        self.store = store
        self.teacher_embeddings = teacher_embeddings
        self.computed = 0
        """Images whose prefix was computed (not read) by this object: a warm store leaves it at 0."""

    def features(self, images: Tensor, keys: Sequence[str] | None = None) -> Tensor:
        """The prefix output of images (B, 3, S, S) for content ``keys`` (computed from ``images`` if not given):
        read from the store, or computed, stored and read back; float32 on ``images``' device, no gradients."""
        keys = list(keys) if keys is not None else self.store.keys(images)
        with torch.no_grad():
            found = self.store.get(keys)
            if found is None:
                self.store.put(keys, self.split.prefix(images))
                self.computed += len(keys)
                found = self.store.get(keys)
                if found is None:
                    raise RuntimeError(
                        f"prefix cache {self.store.directory}: entries just written cannot be read"
                    )
        return found.to(images.device)

    def encode(self, images: Tensor) -> Tensor:
        """The student's image embeddings of images (B, 3, S, S): the stored prefix, then the rest of the
        encoder (what evaluation runs: test images are computed once and read at every evaluation after)."""
        return self.split.rest(self.features(images))


@dataclass(frozen=True)
class StepCaches:
    """The caches a training step reads, as :func:`open_caches` decided them; empty when caching is off."""

    teacher: TeacherCache | None = None
    """The teacher's image embeddings, when a teacher runs and the cache is on."""
    prefix: StudentPrefix | None = None
    """The student's frozen encoder prefix, when it has one and ``cache.student_prefix`` is on."""

    def keys(self, images: Tensor) -> list[str] | None:
        """Content keys of images (B, 3, S, S), hashed once for every cache of the step; None without caches."""
        return content_keys(images) if self.teacher is not None or self.prefix is not None else None

    def features(
        self, images: Tensor, keys: list[str] | None, teacher: SamOutput | None = None
    ) -> Tensor | None:
        """The student's prefix features of ``images`` (None without a prefix). A prefix that is the teacher's
        embeddings takes them from ``teacher`` (the teacher's output of this batch, read through :attr:`teacher`,
        the same entries) rather than reading the entries twice."""
        if self.prefix is None:
            return None
        if self.prefix.teacher_embeddings and self.teacher is not None and teacher is not None:
            return teacher.image_embeddings
        return self.prefix.features(images, keys)


def open_prefix_store(
    directory: str | Path, fingerprint: Mapping[str, Any], dtype: torch.dtype
) -> TensorStore:
    """The prefix store in ``directory`` (created if missing; refused if it was made for another fingerprint); its
    one tensor per entry is the prefix's output (``store.get`` / ``store.put``)."""
    return TensorStore(Path(directory).expanduser(), PREFIX_KIND, fingerprint, dtype, tensor=_FEATURES)


# --------------------------------------------------------------------------------------------- opening


def open_caches(
    student: Sam,
    teacher: Sam | None,
    *,
    teacher_dir: str | Path,
    prefix_dir: str | Path | None,
    checkpoint: str | Path | None,
    precision: str | torch.dtype | None,
    prefix_dtype: str = "float16",
    teacher_cache: bool = True,
    student_prefix: bool = True,
    reference: Sam | None = None,
) -> StepCaches:
    """The caches of a step, and the one place that decides whether the student's prefix shares the teacher cache.

    Args:
        student: the student, its trainable parameters marked (``requires_grad``).
        teacher: the frozen teacher the step runs, or None (no teacher forward: plain baseline, evaluation).
        teacher_dir: the teacher cache's folder; prefix_dir: the prefix store's (see :func:`cache_folders`).
        checkpoint: the teacher's weights (a config's ``model.checkpoint``; None: fingerprinted by its state dict).
        precision: the compute precision (config ``train.precision``).
        prefix_dtype: storage dtype of the prefix store (float16 or float32).
        teacher_cache: open the teacher cache for ``teacher`` (ignored without a teacher).
        student_prefix: open the student's frozen prefix (None when nothing of its encoder is frozen).
        reference: the teacher's weights when ``teacher`` is None (built by the caller); needed only to compare a
            whole frozen student encoder with them and to fingerprint the prefix.

    A whole frozen student encoder (decoder-only, zero-shot) whose weights equal the teacher's computes the
    teacher's embeddings: its prefix reads and writes the teacher cache's entries (``teacher_embeddings``), in the
    step taken from the teacher's output. Any other prefix has its own store, fingerprinted by the teacher's
    fingerprint plus its boundary and weights (:func:`prefix_fingerprint`).

    Raises:
        ValueError: ``student_prefix`` on SAM 2 (no frozen encoder prefix exists).
    """
    reference = teacher if teacher is not None else reference
    fingerprint: dict | None = None

    def fingerprint_once() -> dict:  # hashing the weights file costs ~1 s (ViT-B): derived at most once
        nonlocal fingerprint
        if fingerprint is None:
            fingerprint = model_teacher_fingerprint(reference, checkpoint, precision)
        return fingerprint

    cache = None
    if teacher is not None and teacher_cache:
        cache = TeacherCache(Path(teacher_dir).expanduser(), fingerprint_once())
    split = _frozen_prefix(student) if student_prefix else None
    if split is None:
        return StepCaches(cache)
    if reference is None:
        raise ValueError("open_caches: a student prefix needs the teacher (teacher or reference)")
    if split.whole and _same_state(student.image_encoder, reference.image_encoder):
        store = (
            cache if cache is not None else TeacherCache(Path(teacher_dir).expanduser(), fingerprint_once())
        )
        return StepCaches(cache, StudentPrefix(split, store, teacher_embeddings=True))
    directory = prefix_dir or cache_folders(teacher_dir).prefix
    dtype = getattr(torch, precision_name(prefix_dtype))
    store = open_prefix_store(directory, prefix_fingerprint(fingerprint_once(), split), dtype)
    return StepCaches(cache, StudentPrefix(split, store))


def _frozen_prefix(student: Sam) -> EncoderSplit | None:
    """The student encoder's split at its frozen prefix, or None when its first segment trains."""
    family = family_of(student)
    if not family.student_prefix:
        raise ValueError(
            f"cache.student_prefix is not supported on {family.label} ({student.spec.name}): "
            f"{family.why_not['student_prefix']}; set cache.student_prefix: false (the teacher cache works)"
        )
    split = split_encoder(student.image_encoder)
    return None if split.empty else split


def open_step_caches(config: Config, student: Sam, teacher: Sam | None = None) -> StepCaches:
    """:func:`open_caches` as ``config`` sets them (``cache.*``, ``model.checkpoint``, ``train.precision``): the
    teacher cache for ``teacher`` and the student's prefix (``cache.student_prefix``); empty unless
    ``cache.enabled``. Without a teacher, the reference weights are built from ``config.model`` when needed."""
    if not config.cache.enabled:
        return StepCaches()
    return _open_configured(config, student, teacher, teacher_cache=True)


def open_student_prefix(config: Config, student: Sam, teacher: Sam | None = None) -> StudentPrefix | None:
    """The cached frozen encoder prefix of ``student`` (``cache.student_prefix``; :func:`open_caches` decides
    where its entries live), or None when it has none. ``teacher``: the teacher's weights (else built from
    ``config.model``). Evaluation (:func:`infosam.evaluate.evaluate_run` with ``cache``) opens it so."""
    return _open_configured(config, student, teacher, teacher_cache=False).prefix


def _open_configured(config: Config, student: Sam, teacher: Sam | None, *, teacher_cache: bool) -> StepCaches:
    from .model import build_configured, make_teacher

    c = config.cache
    reference = None
    if teacher is None and c.student_prefix and _frozen_prefix(student) is not None:
        reference = make_teacher(build_configured(config))  # built only when a prefix needs it
    folders = cache_folders(c.dir, c.prefix_dir, c.inputs_dir)
    return open_caches(
        student,
        teacher if teacher_cache else None,
        teacher_dir=folders.teacher,
        prefix_dir=folders.prefix,
        checkpoint=config.model.checkpoint,
        precision=config.train.precision,
        prefix_dtype=c.prefix_dtype,
        teacher_cache=teacher_cache,
        student_prefix=c.student_prefix,
        reference=teacher if teacher is not None else reference,
    )


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)
