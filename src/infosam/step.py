"""One InfoSAM training step, and its phases for whoever needs them apart (the step benchmark, the demo).

A step: batch -> train prompts -> teacher (no grad; its image embeddings from the teacher cache when filled) ->
student -> losses (segmentation on logits upsampled to the input size, plus the distillation objective of the
registry, :mod:`infosam.distill.registry`: with InfoSAM, the relation module on both -> L_r, L_d) -> backward ->
optimizer step when the accumulation window closes. With no teacher and no objective the same step trains the plain
PEFT baseline.

Prompts depend only on (seed, process, epoch, batch index), so a resumed run draws the same prompts as an
uninterrupted one and every process its own.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from segment_anything.modeling import Sam
from torch import Tensor, nn

from .data.prompts import DEFAULT_BOX_NOISE, train_prompts
from .distill.features import capture_features
from .losses import segmentation_loss
from .peft.base import collect_aux_loss
from .peft.registry import aux_loss_modules
from .prefix import StepCaches
from .sam.forward import SamOutput, decode, encode_images, sam_forward

if TYPE_CHECKING:
    from .cache import TeacherCache
    from .distill.objective import Objective
    from .guard import NonFiniteGuard
    from .prefix import EncoderSplit


# --------------------------------------------------------------------------------------------- phases


def batch_prompts(
    batch: dict,
    *,
    seed: int,
    rank: int,
    epoch: int,
    index: int,
    p_box: float = 0.5,
    box_noise: str = DEFAULT_BOX_NOISE,
) -> dict[str, Tensor]:
    """Train prompts for ``batch["mask"]`` (B, 1, S, S) from a generator seeded by (seed, process, epoch, batch
    index): ``boxes`` (B, 4) with probability ``p_box`` (noise rule ``box_noise``,
    :data:`infosam.data.prompts.BOX_NOISE_RULES`), else ``points`` (B, 1, 2) + ``point_labels`` (B, 1), in input
    pixels."""
    state = np.random.SeedSequence([seed, rank, epoch, index]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))
    return train_prompts(
        batch["mask"], generator, p_box=p_box, input_sizes=batch["input_size"], box_noise=box_noise
    )


def teacher_forward(
    teacher: Sam,
    images: Tensor,
    prompts: dict[str, Tensor],
    *,
    cache: TeacherCache | None = None,
    keys: list[str] | None = None,
    objective: Objective | None = None,
) -> SamOutput:
    """The frozen teacher's features for images (B, 3, S, S) without gradients: image embeddings and mask tokens
    (what InfoSAM uses of it; the decoder stops after its transformer, so logits and IoU are None). Its image
    embeddings come from ``cache`` when it holds all ``images`` (keyed by their content, ``keys`` if already
    computed), else they are computed, stored and read back (so every epoch and a resumed run see the stored
    values, e.g. float16-rounded). An ``objective`` may ask for more: the full decode (logits) and the
    encoder's intermediate features (then the encoder always runs, without the cache)."""
    if objective is not None and (objective.needs_logits or objective.needs_features):
        return _teacher_for(objective, teacher, images, prompts, cache=cache, keys=keys)
    with torch.no_grad():
        if cache is not None and keys is None:
            keys = cache.keys(images)
        embeddings = cache.get(keys) if cache is not None else None
        if embeddings is None:
            embeddings = encode_images(teacher, images)
            if cache is not None:
                cache.put(keys, embeddings)
                embeddings = cache.get(keys)
        return decode(teacher, embeddings.to(images.device), **prompts, tokens_only=True)


def _teacher_for(
    objective: Objective,
    teacher: Sam,
    images: Tensor,
    prompts: dict[str, Tensor],
    *,
    cache: TeacherCache | None,
    keys: list[str] | None,
) -> SamOutput:
    """The teacher outputs an objective reads: a full decode when it needs logits, and the tap blocks'
    outputs (scoped hooks) when it needs intermediate features."""
    with torch.no_grad():
        if objective.needs_features:
            with capture_features(teacher, objective.taps) as features:
                embeddings = encode_images(teacher, images)
            out = decode(teacher, embeddings, **prompts, tokens_only=not objective.needs_logits)
            out.features = features
            return out
        if cache is None:
            return decode(teacher, encode_images(teacher, images), **prompts)
        # The cache as teacher_forward uses it (same keys, same stored values), then a full decode.
        keys = cache.keys(images) if keys is None else keys
        embeddings = cache.get(keys)
        if embeddings is None:
            cache.put(keys, encode_images(teacher, images))
            embeddings = cache.get(keys)
        return decode(teacher, embeddings.to(images.device), **prompts)


def step_losses(
    student: SamOutput,
    teacher: SamOutput | None,
    masks: Tensor,
    *,
    seg_loss: str = "structure",
    objective: Objective | None = None,
) -> dict[str, Tensor]:
    """Scalar loss terms of one batch: ``loss``, ``seg`` and, with an ``objective``, what it reports
    (:meth:`~infosam.distill.objective.Objective.step_terms`: with InfoSAM ``relation``, ``distill``, ``infosam``
    and the relation maps' statistics, :data:`infosam.distill.loss.RELATION_STATS`, detached; with a baseline
    ``distill``, its weighted total). The segmentation loss is taken on the student's logits upsampled to the
    masks' (B, 1, S, S)."""
    logits = F.interpolate(
        student.low_res_logits.float(), size=masks.shape[-2:], mode="bilinear", align_corners=False
    )
    seg = segmentation_loss(seg_loss, logits, masks, student.iou_predictions.float())
    if objective is None:
        return {"loss": seg, "seg": seg}
    terms = objective(teacher, student, masks)  # with InfoSAM: the relation module on both -> L_r, L_d
    return {"loss": seg + terms["total"], "seg": seg, **objective.step_terms(terms)}


class Trainee(nn.Module):
    """Everything with gradients behind one ``forward`` (student -> losses), so DDP sees exactly the parameters
    that produced the loss (the IoU head, unused by the structure loss, is then simply skipped).

    Args:
        student: the PEFT student SAM.
        objective: the distillation objective (:mod:`infosam.distill.registry`: InfoSAM, which owns the relation
            module, or a baseline), or ``None`` for plain PEFT. Its learned parts are parameters of this module
            (after the student's), so they train with the student; it is held under its ``module_name``
            (``infosam`` or ``objective``), the prefix of its keys in the state dict.
        seg_loss: name of the segmentation loss (:func:`infosam.losses.segmentation_loss`).
        split: the student's encoder cut at its frozen prefix (:func:`infosam.prefix.split_encoder`), needed to
            accept precomputed prefix ``features`` in :meth:`forward`.
    """

    def __init__(
        self,
        student: Sam,
        objective: Objective | None = None,
        seg_loss: str = "structure",
        split: EncoderSplit | None = None,
    ) -> None:
        super().__init__()
        self.student = student
        # Registered only when there is one, under the objective's own name: the plain trainee holds the
        # student alone, InfoSAM's keys are infosam.relation.*, a baseline's objective.*.
        self.objective_name = objective.module_name if objective is not None else None
        if objective is not None:
            setattr(self, objective.module_name, objective)
        self.seg_loss = seg_loss
        self.split = split
        # PEFT layers that keep a training loss of their own (Conv-LoRA's load balancing); a plain list, not
        # submodules. Empty for every other method, and then the step's loss is untouched.
        self.aux_modules = aux_loss_modules(student)

    @property
    def distill_objective(self) -> Objective | None:
        """The objective this trainee holds, or ``None``."""
        return getattr(self, self.objective_name) if self.objective_name is not None else None

    def forward(
        self,
        images: Tensor,
        masks: Tensor,
        prompts: dict[str, Tensor],
        teacher: SamOutput | None,
        features: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """images (B, 3, S, S), masks (B, 1, S, S) -> the loss terms of :func:`step_losses`. With ``features``
        (the output of the student's frozen encoder prefix for ``images``), only the rest of the encoder runs;
        the student's tap features are captured when the objective reads them (the student-prefix cache is then
        refused by the config)."""
        objective = self.distill_objective
        taps = objective.taps if objective is not None and objective.needs_features else None
        with capture_features(self.student, taps) as captured:
            if features is None:
                student = sam_forward(self.student, images, **prompts)
            else:
                student = decode(self.student, self.split.rest(features), **prompts)
        if taps:
            student.features = captured
        terms = step_losses(student, teacher, masks, seg_loss=self.seg_loss, objective=objective)
        if self.aux_modules:
            aux = collect_aux_loss(self.aux_modules)
            if aux is not None:
                terms["loss"] = terms["loss"] + aux
                terms["balance"] = aux
        return terms


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    *,
    accelerator: Accelerator | None = None,
    parameters: list[nn.Parameter] | None = None,
    grad_clip: float | None = None,
) -> None:
    """Clip the gradient norm of ``parameters`` to ``grad_clip`` (if set), step the optimizer, clear the
    gradients, step the scheduler (once per optimizer step)."""
    if grad_clip is not None:
        clip = accelerator.clip_grad_norm_ if accelerator is not None else nn.utils.clip_grad_norm_
        clip(parameters, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()


# --------------------------------------------------------------------------------------------- the step


@dataclass
class StepParts:
    """What a step works with, built once per run."""

    accelerator: Accelerator
    trainee: nn.Module
    """The (possibly DDP-wrapped) :class:`Trainee`."""
    teacher: Sam | None
    """The frozen teacher, or ``None`` for plain PEFT."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    caches: StepCaches = StepCaches()
    """The teacher cache and the student's cached frozen prefix (:func:`infosam.prefix.open_step_caches`);
    empty: the teacher and the whole student encoder run every step."""
    seed: int = 42
    """Seed of the train prompts."""
    grad_clip: float | None = None
    guard: NonFiniteGuard | None = None
    """Checks losses and gradients before each optimizer step (stop, or skip the step); ``None``: no check."""
    p_box: float = 0.5
    """Probability that a batch's train prompts are noisy boxes (else one foreground point per image)."""
    objective: Objective | None = None
    """The distillation objective (the same module the trainee holds), or ``None``; it says what the teacher
    must give (:func:`teacher_forward`)."""
    box_noise: str = DEFAULT_BOX_NOISE
    """How the train boxes are drawn from the tight box (:data:`infosam.data.prompts.BOX_NOISE_RULES`)."""


def train_step(parts: StepParts, batch: dict, *, epoch: int, index: int, window: int, sync: bool) -> dict:
    """One batch: forward, backward, and the optimizer step when ``sync`` closes the accumulation window.

    Args:
        batch: ``image`` (B, 3, S, S), ``mask`` (B, 1, S, S), ``input_size`` (B, 2), ``id`` (B strings).
        epoch, index: 0-based epoch and batch index (they seed the prompts).
        window: batches in this accumulation window (the loss is divided by it).
        sync: the last batch of the window: gradients are synchronised and the optimizer steps (unless
            ``parts.guard`` finds a non-finite loss or gradient in the window: it stops the run or skips the step).
    Returns:
        the detached loss terms of :func:`step_losses` (``loss``, ``seg``, what the objective reports) and, with
        PEFT layers that keep a loss of their own (Conv-LoRA), ``balance`` (part of ``loss``).
    """
    acc = parts.accelerator
    prompts = batch_prompts(
        batch,
        seed=parts.seed,
        rank=acc.process_index,
        epoch=epoch,
        index=index,
        p_box=parts.p_box,
        box_noise=parts.box_noise,
    )
    prompts = {k: v.to(acc.device) for k, v in prompts.items()}
    images, masks = batch["image"].to(acc.device), batch["mask"].to(acc.device)
    with contextlib.nullcontext() if sync else acc.no_sync(parts.trainee):
        with acc.autocast():
            caches = parts.caches
            keys = caches.keys(images)  # content keys, hashed once for every cache
            teacher = None
            if parts.teacher is not None:
                teacher = teacher_forward(
                    parts.teacher, images, prompts, cache=caches.teacher, keys=keys, objective=parts.objective
                )
            features = caches.features(images, keys, teacher)  # None: the whole student encoder runs
            terms = parts.trainee(images, masks, prompts, teacher, features)  # student -> losses
        acc.backward(terms["loss"] * (1.0 / window))
    if parts.guard is not None:
        parts.guard.observe(terms)
    if sync:
        params = list(parts.trainee.parameters())
        step = parts.scheduler.last_epoch + 1  # the scheduler steps once per optimizer step, skipped ones too
        if parts.guard is None or parts.guard.allow_step(params, step):
            optimizer_step(
                parts.optimizer,
                parts.scheduler,
                accelerator=acc,
                parameters=params,
                grad_clip=parts.grad_clip,
            )
        else:  # skipped: weights untouched, the schedule keeps its length
            parts.optimizer.zero_grad(set_to_none=True)
            parts.scheduler.step()
    return {k: v.detach() for k, v in terms.items()}
