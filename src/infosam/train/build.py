"""Building a run: its data splits, the student, the teacher and the distillation objective, the optimizer and
schedule under accelerate (:func:`build_parts`), the checks before any work, and the run's first log line."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from segment_anything.modeling import Sam

from .. import checkpoints
from ..config import Config
from ..data.check import validate_dataset
from ..data.formats import SegmentationDataset, open_dataset
from ..data.prompts import TRAIN_PROMPT_MODES
from ..distill.objective import Objective
from ..distill.registry import build_objective
from ..guard import NonFiniteGuard
from ..model import build_configured, make_student, make_teacher
from ..peft import PeftSpec, load_peft
from ..prefix import open_step_caches
from ..sam.checkpointing import enable_checkpointing
from ..sam.specs import get_spec
from ..sam.transforms import SamTransform
from ..step import StepParts, Trainee


@dataclass
class Parts:
    """What the loop works with, built once per run."""

    step: StepParts
    student: Sam
    peft_spec: PeftSpec
    objective: Objective | None = None
    """The distillation objective (``distill.method``; ``None``: plain PEFT). What it learns is saved either in
    every resume checkpoint's state (key ``distill``) or, InfoSAM's relation module, as a weights file of its own
    (:attr:`relation`)."""

    @property
    def relation(self):
        """The objective's learned part saved as a weights file beside the student's (InfoSAM's relation module
        while it trains), or ``None``."""
        return self.objective.saved_module() if self.objective is not None else None


def open_split(config: Config, split: str, transform: SamTransform) -> SegmentationDataset:
    """Open and validate ``split`` of ``config.data.path``; refuses bad pairs unless ``data.skip_bad_pairs``. With
    ``cache.inputs`` (and the cache on) its samples are decoded once and read back from the input cache."""
    dataset = open_dataset(
        config.data.path,
        split=split,
        transform=transform,
        categories=config.data.categories,
        include_crowd=config.data.include_crowd,
    )
    dataset, _ = validate_dataset(dataset, skip_bad=config.data.skip_bad_pairs)
    if config.cache.enabled and config.cache.inputs:
        from ..data.input_cache import CachedInputDataset, open_input_store

        dataset = CachedInputDataset(dataset, open_input_store(inputs_dir(config), dataset))
    return dataset


def inputs_dir(config: Config) -> Path:
    """The folder of the decoded-input cache (``cache.inputs_dir``, or beside the teacher cache)."""
    from ..cache import cache_folders

    return cache_folders(config.cache.dir, config.cache.prefix_dir, config.cache.inputs_dir).inputs


def base_model(config: Config) -> Sam:
    """The configured base SAM (teacher and student start from it)."""
    return build_configured(config)  # fast attention (ViT fold, TinyViT SDPA) unless model.attention is meta


def build_parts(config: Config, accelerator: Accelerator, steps_total: int, checkpoint: Path | None) -> Parts:
    """The student (fresh PEFT, or the checkpoint's), the frozen teacher and the objective (unless
    ``distill.method`` is none: its learned parts drawn from torch's global generator seeded with
    ``train.seed``), the caches, the trainee, Adam and the cosine schedule, prepared by ``accelerator``."""
    t = config.train
    student = base_model(config)
    if checkpoint is None:
        peft_spec = make_student(
            student,
            config.peft.methods,
            config.peft.options,
            activation_checkpointing=t.activation_checkpointing,
        )
    else:
        peft_spec = load_peft(checkpoints.peft_file(checkpoint), student)
        if t.activation_checkpointing:
            enable_checkpointing(student.image_encoder)
    student.train()
    teacher, objective = None, None
    if config.teacher_on:  # the objective is built only when chosen, after the student's PEFT init
        teacher = make_teacher(base_model(config)).to(accelerator.device)
        torch.manual_seed(t.seed)
        objective = build_objective(config.distill_method, config.objective_options(), student).to(
            accelerator.device
        )
    caches = open_step_caches(config, student, teacher)  # empty unless cache.enabled
    split = caches.prefix.split if caches.prefix is not None else None
    trainee = Trainee(student, objective, t.seg_loss, split=split)
    params = [p for p in trainee.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=t.lr, weight_decay=0.0)
    # Stepped once per optimizer step by the step (accelerate's prepared scheduler would step once per process).
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps_total, eta_min=t.min_lr)
    trainee, optimizer = accelerator.prepare(trainee, optimizer)
    guard = NonFiniteGuard(
        t.nonfinite, t.nonfinite_max_skips, check_gradients=t.precision != "fp16", accelerator=accelerator
    )
    p_box = TRAIN_PROMPT_MODES[t.prompt]
    step = StepParts(
        accelerator,
        trainee,
        teacher,
        optimizer,
        scheduler,
        caches=caches,
        seed=t.seed,
        grad_clip=t.grad_clip,
        guard=guard,
        p_box=p_box,
        objective=objective,
        box_noise=t.box_noise,
    )
    return Parts(step, student, peft_spec, objective)


def model_spec(config: Config):
    """The SAM spec of ``config.model`` (with its ``image_size`` override)."""
    overrides = {} if config.model.image_size is None else {"image_size": config.model.image_size}
    return get_spec(config.model.name, **overrides)


def startup_line(
    config: Config, parts: Parts, images: int, batches: int, accelerator: Accelerator, done: int = 0
) -> str:
    """What a run is about to do, in one line: images, steps, device, threads, what trains, where it goes."""
    t = config.train
    per_epoch = math.ceil(batches / t.grad_accum)
    student = sum(p.numel() for p in parts.student.parameters() if p.requires_grad)
    trains = f"{student:,} parameters ({config.peft.methods})"
    objective = parts.objective
    if objective is None:
        teacher = "plain PEFT (no teacher)"
    else:
        teacher = f"{objective.title or f'distill.method={objective.name}'} (teacher on)"
        learned = sum(p.numel() for p in objective.parameters() if p.requires_grad)
        if learned:
            label = objective.learned_title or f"{objective.name} objective"
            trains = f"{student + learned:,} parameters ({config.peft.methods} + {label} {learned:,})"
    processes = f" x {accelerator.num_processes} processes" if accelerator.num_processes > 1 else ""
    start = f", resuming at step {done}" if done else ""
    return (
        f"training {teacher}: {images} images, {per_epoch} steps per epoch x {t.epochs} epochs = "
        f"{per_epoch * t.epochs} steps{start}; device {accelerator.device}{processes}, "
        f"{torch.get_num_threads()} thread(s); trains {trains}; run folder {config.output}"
    )


def check_before_work(config: Config) -> None:
    """What can fail without reading data: fp16 on the CPU (accelerate's CPU autocast ignores it, so the run would
    train fp32 under an fp16 label) and a missing base checkpoint."""
    from ..sam.checkpoint import check_checkpoint_path

    if config.model.checkpoint is not None:
        check_checkpoint_path(config.model.checkpoint)
    if (
        config.cache.enabled
    ):  # refused here, before the input cache beside it is created (a refusal leaves nothing)
        from ..cache import check_cache_folder

        check_cache_folder(config.cache.dir)
        if config.cache.inputs:
            check_cache_folder(inputs_dir(config), "cache.inputs_dir")
    if config.train.precision == "fp16" and (config.train.cpu or not torch.cuda.is_available()):
        raise ValueError(
            "train.precision=fp16 needs a CUDA GPU and this run trains on the CPU; use train.precision=bf16 "
            "(mixed precision the CPU supports) or no"
        )
    on_cpu = config.train.cpu or not torch.cuda.is_available()
    if config.train.precision == "bf16" and on_cpu and not config.train.allow_slow_bf16:
        from ..runtime import cpu_summary, native_bf16

        if not native_bf16():
            raise ValueError(
                f"train.precision=bf16 on this CPU ({cpu_summary()}) would be about 13x slower than float32 "
                "(PyTorch emulates bf16 without AVX512-BF16/AMX); use train.precision=no, or set "
                "train.allow_slow_bf16=true to train bf16 anyway"
            )
