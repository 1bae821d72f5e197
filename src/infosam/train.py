"""Training: :func:`train` builds a run from a config and :func:`fit` runs it (epochs, evaluation, logging,
saving); one batch is :func:`infosam.step.train_step`. accelerate drives devices and DDP.

Resuming is exact: the data order of an epoch depends only on (seed, epoch), the prompts of a batch only on (seed,
process, epoch, batch index), and checkpoints hold the optimizer, scheduler and global RNG states, so a run that is
killed and resumed ends with bitwise the same weights as one that was not (same device and thread count).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from segment_anything.modeling import Sam
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from . import checkpoints, runs
from .config import Config
from .data.check import validate_dataset
from .data.formats import open_dataset
from .data.loading import EpochSampler, train_loader
from .data.prompts import TRAIN_PROMPT_MODES
from .distill.entropy import all_gather_rows
from .distill.loss import RELATION_STATS, InfoSAMLoss
from .distill.objective import Objective
from .distill.registry import build_objective
from .distill.relation import RelationModule
from .guard import NonFiniteGuard
from .lock import RunLock
from .metrics import METRIC_NAMES, best_of
from .model import build_configured, make_student, make_teacher
from .peft import PeftSpec, load_peft
from .peft.conv_lora import aux_loss_modules
from .prefix import open_step_caches
from .runtime import reset_accelerate_state
from .sam.checkpointing import enable_checkpointing
from .sam.specs import get_spec
from .sam.transforms import SamTransform, get_transform
from .signals import StopSignals
from .step import StepParts, Trainee, train_step

log = logging.getLogger(__name__)

METRIC_FIELDS = ["step", "epoch", "loss", "seg", "relation", "distill", "infosam", "lr", "images_per_s"]
BALANCE_FIELD = "balance"
"""The column of the PEFT layers' own training loss (Conv-LoRA's load balancing), added to the step's loss; in
metrics.csv (before ``lr``) only for a student that has such layers."""


def metric_fields(student: nn.Module, *, relation: bool = False) -> list[str]:
    """metrics.csv's columns for ``student``: :data:`METRIC_FIELDS`, with :data:`BALANCE_FIELD` when its PEFT
    layers keep a loss of their own (:func:`infosam.peft.conv_lora.aux_loss_modules`), so every term of the
    logged ``loss`` has its column, and with ``relation`` (InfoSAM on) the relation maps' statistics
    (:data:`infosam.distill.loss.RELATION_STATS`: S(r_t), S(r_s), I(r_t; r_s), ...) at the end."""
    fields = list(METRIC_FIELDS)
    if aux_loss_modules(student):
        at = fields.index("lr")
        fields = [*fields[:at], BALANCE_FIELD, *fields[at:]]
    return [*fields, *RELATION_STATS] if relation else fields


StepCallback = Callable[[int], None]
"""Called with the number of optimizer steps done, after each optimizer step (e.g. progress, or a test pausing
the run so that it can be killed mid-way)."""


@dataclass
class Position:
    """Where training stands: optimizer steps done, epoch in progress (0-based), its batches consumed."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    evaluated: dict[int, dict] = field(default_factory=dict)
    """Test summaries by 1-based epoch."""


@dataclass
class Parts:
    """What the loop works with, built once per run."""

    step: StepParts
    student: Sam
    peft_spec: PeftSpec
    relation: RelationModule | None
    """The relation module when it trains (saved with the weights); ``None`` for the baseline or a frozen one."""
    objective: Objective | None = None
    """A baseline distillation objective (``distill.method`` other than infosam/none); its learned parts, if any,
    go into every resume checkpoint's state (key ``distill``)."""


# --------------------------------------------------------------------------------------------- building a run


def open_split(config: Config, split: str, transform: SamTransform) -> Dataset:
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
        from .data.input_cache import CachedInputDataset, open_input_store

        dataset = CachedInputDataset(dataset, open_input_store(_inputs_dir(config), dataset))
    return dataset


def _inputs_dir(config: Config) -> Path:
    from .cache import cache_folders

    return cache_folders(config.cache.dir, config.cache.prefix_dir, config.cache.inputs_dir).inputs


def _base(config: Config) -> Sam:
    return build_configured(config)  # fast attention (ViT fold, TinyViT SDPA) unless model.attention is meta


def _build_parts(
    config: Config, accelerator: Accelerator, steps_total: int, checkpoint: Path | None
) -> Parts:
    t, i = config.train, config.infosam
    student = _base(config)
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
    teacher, relation, infosam, objective = None, None, None, None
    method = config.distill_method
    if method == "infosam":
        teacher = make_teacher(_base(config)).to(accelerator.device)
        relation = _build_relation(config, student, checkpoint)
        infosam = InfoSAMLoss(relation, i.weights, gather=all_gather_rows if i.global_batch else None)
    elif method != "none":  # a baseline objective: built only when chosen, seeded like the relation module
        teacher = make_teacher(_base(config)).to(accelerator.device)
        torch.manual_seed(t.seed)
        objective = build_objective(method, config.distill.options.get(method), student).to(
            accelerator.device
        )
    caches = open_step_caches(config, student, teacher)  # empty unless cache.enabled
    split = caches.prefix.split if caches.prefix is not None else None
    trainee = Trainee(student, infosam, t.seg_loss, split=split, objective=objective)
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
    trained_relation = relation if i.frozen_relation is None else None
    return Parts(step, student, peft_spec, trained_relation, objective)


def _build_relation(config: Config, student: Sam, checkpoint: Path | None) -> RelationModule:
    if config.infosam.frozen_relation is not None:
        return RelationModule.load(config.infosam.frozen_relation, frozen=True)
    if checkpoint is not None:
        return RelationModule.load(checkpoints.relation_file(checkpoint), frozen=False)
    torch.manual_seed(config.train.seed)
    return RelationModule(student.spec.prompt_embed_dim)


def _spec(config: Config):
    overrides = {} if config.model.image_size is None else {"image_size": config.model.image_size}
    return get_spec(config.model.name, **overrides)


def train(
    config: Config,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    on_step: StepCallback | None = None,
) -> Path:
    """Train the student described by ``config``; returns the run folder (``config.output``).

    Args:
        config: a validated :class:`Config`.
        resume: continue the run in ``config.output`` from its newest checkpoint (same config).
        overwrite: write into an existing non-empty run folder (never deleted).
        progress: show a tqdm progress bar on the main process.
        on_step: called with the step count after every optimizer step.
    Raises:
        RunFolderError: the run folder exists and holds files (without ``overwrite`` or ``resume``).
    """
    _check_before_work(config)
    run = runs.RunDir(config.output)
    if resume and not run.is_run():
        raise FileNotFoundError(f"cannot resume: {run.config_file} is missing")
    lock = run.lock()  # one writer per run folder, for the whole run (main process)
    if resume and _is_main_process():
        lock.acquire()
        run.remove_temporaries()
    if not resume and _is_main_process():
        run.check_new(overwrite=overwrite)  # before any work
    try:
        checkpoint = run.latest_checkpoint() if resume else None
        if resume and checkpoint is None and _is_main_process():
            log.warning("no checkpoint in %s: the run starts over from step 0", run.checkpoints_dir)
        return _train(
            config,
            run,
            lock,
            checkpoint,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            on_step=on_step,
        )
    finally:
        lock.release()


def _train(
    config: Config,
    run: runs.RunDir,
    lock: RunLock,
    checkpoint: Path | None,
    *,
    resume: bool,
    overwrite: bool,
    progress: bool,
    on_step: StepCallback | None,
) -> Path:
    transform = get_transform(_spec(config))
    train_set = open_split(config, config.data.train_split, transform)
    test_set = open_split(config, config.data.test_split, transform) if config.eval_epochs() else None

    # Unused parameters exist by design: the IoU head trains only under losses that use iou_predictions.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    accelerator = Accelerator(
        mixed_precision=config.train.precision, cpu=config.train.cpu, kwargs_handlers=[ddp]
    )
    try:
        t = config.train
        loader, sampler = train_loader(
            train_set,
            batch_size=t.batch_size,
            seed=t.seed,
            num_replicas=accelerator.num_processes,
            rank=accelerator.process_index,
            num_workers=t.num_workers,
            drop_single=config.min_batch() > 1,
            objects_per_image=config.data.objects_per_image,
            objects_per_batch_image=config.data.objects_per_batch_image,
        )
        if sampler.batches == 0 or (config.min_batch() > 1 and sampler.length < 2):
            raise ValueError(
                f"{config.data.path}: the training split has too few images for one batch ({len(train_set)} "
                f"image(s); distill.method={config.distill_method} needs at least 2 per process)"
            )
        steps_total = math.ceil(sampler.batches / t.grad_accum) * t.epochs
        parts = _build_parts(config, accelerator, steps_total, checkpoint)
        # The run folder is created only now: a start that fails above leaves nothing behind.
        if not resume:
            if accelerator.is_main_process:
                run.create(overwrite=overwrite)
                lock.acquire()
                run.check_new(overwrite=overwrite)  # another start may have filled it meanwhile
                run.write_config(config)
            accelerator.wait_for_everyone()
            if not run.is_run():
                raise runs.RunFolderError(f"the main process did not create the run folder {run.path}")
        if parts.step.guard is not None:
            parts.step.guard.has_checkpoint = run.is_resumable
        position = Position()
        if checkpoint is not None:
            position = _restore(run, checkpoint, parts)
        else:
            _seed_everything(t.seed)
        if accelerator.is_main_process:
            log.info(startup_line(config, parts, len(train_set), sampler.batches, accelerator, position.step))
        with StopSignals(f"continue with `infosam train --resume {run.path}`") as stop:
            fit(
                config,
                parts,
                run,
                loader,
                sampler,
                test_set,
                position,
                progress=progress,
                on_step=on_step,
                stop=stop,
            )
    finally:
        reset_accelerate_state()  # a later train() in this process may use another precision or device
    return run.path


def startup_line(
    config: Config, parts: Parts, images: int, batches: int, accelerator: Accelerator, done: int = 0
) -> str:
    """What a run is about to do, in one line: images, steps, device, threads, what trains, where it goes."""
    t = config.train
    per_epoch = math.ceil(batches / t.grad_accum)
    student = sum(p.numel() for p in parts.student.parameters() if p.requires_grad)
    relation = sum(p.numel() for p in parts.relation.parameters()) if parts.relation is not None else 0
    trains = f"{student + relation:,} parameters ({config.peft.methods}"
    trains += f" + relation module {relation:,})" if relation else ")"
    method = config.distill_method
    teacher = {"infosam": "InfoSAM (teacher on)", "none": "plain PEFT (no teacher)"}.get(
        method, f"distill.method={method} (teacher on)"
    )
    learned = sum(p.numel() for p in parts.objective.parameters()) if parts.objective is not None else 0
    if learned:
        trains = f"{student + learned:,} parameters ({config.peft.methods} + {method} objective {learned:,})"
    processes = f" x {accelerator.num_processes} processes" if accelerator.num_processes > 1 else ""
    start = f", resuming at step {done}" if done else ""
    return (
        f"training {teacher}: {images} images, {per_epoch} steps per epoch x {t.epochs} epochs = "
        f"{per_epoch * t.epochs} steps{start}; device {accelerator.device}{processes}, "
        f"{torch.get_num_threads()} thread(s); trains {trains}; run folder {config.output}"
    )


def _check_before_work(config: Config) -> None:
    """What can fail without reading data: fp16 on the CPU (accelerate's CPU autocast ignores it, so the run would
    train fp32 under an fp16 label) and a missing base checkpoint."""
    from .sam.checkpoint import check_checkpoint_path

    if config.model.checkpoint is not None:
        check_checkpoint_path(config.model.checkpoint)
    if (
        config.cache.enabled
    ):  # refused here, before the input cache beside it is created (a refusal leaves nothing)
        from .cache import check_cache_folder

        check_cache_folder(config.cache.dir)
        if config.cache.inputs:
            check_cache_folder(_inputs_dir(config), "cache.inputs_dir")
    if config.train.precision == "fp16" and (config.train.cpu or not torch.cuda.is_available()):
        raise ValueError(
            "train.precision=fp16 needs a CUDA GPU and this run trains on the CPU; use train.precision=bf16 "
            "(mixed precision the CPU supports) or no"
        )
    on_cpu = config.train.cpu or not torch.cuda.is_available()
    if config.train.precision == "bf16" and on_cpu and not config.train.allow_slow_bf16:
        from .runtime import cpu_summary, native_bf16

        if not native_bf16():
            raise ValueError(
                f"train.precision=bf16 on this CPU ({cpu_summary()}) would be about 13x slower than float32 "
                "(PyTorch emulates bf16 without AVX512-BF16/AMX); use train.precision=no, or set "
                "train.allow_slow_bf16=true to train bf16 anyway"
            )


def _restore(run: runs.RunDir, checkpoint: Path, parts: Parts) -> Position:
    state = run.load_state(checkpoint)
    if parts.objective is not None:
        if "distill" not in state:
            raise checkpoints.CheckpointError(
                f"{checkpoint} holds no state of the distill.method objective (was it written by another method?)"
            )
        parts.objective.load_state_dict(state["distill"])
    parts.step.optimizer.load_state_dict(state["optimizer"])
    parts.step.scheduler.load_state_dict(state["scheduler"])
    checkpoints.set_rng_state(state["rng"])
    evaluated = {int(k): v for k, v in state["evaluated"].items()}
    position = Position(state["step"], state["epoch"], state["batch"], evaluated)
    log.info(
        "resuming %s from %s (step %d, epoch %d)",
        run.path,
        checkpoint.name,
        position.step,
        position.epoch + 1,
    )
    return position


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------- the loop


def fit(
    config: Config,
    parts: Parts,
    run: runs.RunDir,
    loader: DataLoader,
    sampler: EpochSampler,
    test_set: Dataset | None,
    position: Position,
    *,
    progress: bool = False,
    on_step: StepCallback | None = None,
    stop: StopSignals | None = None,
) -> None:
    """Run the epochs from ``position``: a step per batch, a metrics row every ``train.log_every_steps`` steps,
    a resume checkpoint every ``train.save_every_steps`` steps and at each epoch end, evaluation after the
    configured epochs, and the final weights and summary. When ``stop`` (entered) receives SIGINT/SIGTERM, a
    checkpoint is written at the next step boundary and :class:`~infosam.signals.RunInterrupted` is raised."""
    acc, t = parts.step.accelerator, config.train
    main = acc.is_main_process
    with_stats = config.distill_method == "infosam"
    fields = metric_fields(parts.student, relation=with_stats)
    metrics = run.metrics_log(fields, resume_step=position.step) if main else None
    writer = _tensorboard(run, position.step) if main else None
    bar = _progress_bar(sampler.batches, t, position.step) if progress and main else None
    window: list[dict[str, Tensor]] = []  # the batches since the last metrics row
    step_terms: list[dict[str, Tensor]] = []  # the batches of the current optimizer step
    epoch_log = EpochLog(config, sampler.batches, position)
    tick = time.perf_counter()
    stop = stop if stop is not None else StopSignals("")  # not entered: never asked to stop
    for epoch in range(position.epoch, t.epochs):
        if bar is not None:
            bar.set_description(_bar_label(config, epoch))
        sampler.set_epoch(epoch)
        sampler.skip = position.batch * t.batch_size if epoch == position.epoch else 0
        for index, batch in enumerate(loader, start=sampler.skip // t.batch_size):
            if t.log_samples:
                run.log_samples(acc.process_index, epoch, index, batch["id"])
            start = index - index % t.grad_accum
            size = min(t.grad_accum, sampler.batches - start)
            sync = index + 1 == start + size
            lr = parts.step.scheduler.get_last_lr()[0]
            terms = train_step(parts.step, batch, epoch=epoch, index=index, window=size, sync=sync)
            window.append(terms)
            step_terms.append(terms)
            if not sync:
                continue
            position.step += 1
            position.epoch, position.batch = epoch, index + 1
            if on_step is not None:
                on_step(position.step)
            if bar is not None:
                bar.update(1)
            step_row = _reduce_terms(step_terms, acc)
            step_terms = []
            epoch_log.add(step_row)
            if main and (early := epoch_log.early_line(position.step)):
                log.info(early)
            if main and with_stats:  # the relation's statistics every step (metrics.csv has them per row)
                _write_tensorboard(
                    writer, {k: step_row[k] for k in RELATION_STATS}, position.step, "relation"
                )
            last = index + 1 == sampler.batches
            if position.step % t.log_every_steps == 0 or last:
                row = _metrics_row(window, acc, position, epoch, lr, time.perf_counter() - tick, t.batch_size)
                window, tick = [], time.perf_counter()
                if main:
                    metrics.append(row)
                    _write_tensorboard(writer, row, row["step"])
                    if bar is not None:
                        bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.1f}")
            saved = position.step % t.save_every_steps == 0 and not last
            if saved:
                _save(parts, position, run)
            if not last and stop.requested(acc):  # SIGINT/SIGTERM: checkpoint at this step, then stop
                if not saved:
                    _save(parts, position, run)
                raise stop.interrupted(f"checkpoint step-{position.step:06d} written")
        position.epoch, position.batch = epoch + 1, 0
        if main:
            log.info(epoch_log.line(epoch + 1))
        if epoch + 1 in config.eval_epochs() and main:
            run.save_weights(parts.student, parts.peft_spec, parts.relation, epoch=epoch + 1)
            position.evaluated[epoch + 1] = _evaluate(config, parts, test_set, run, epoch + 1)
        acc.wait_for_everyone()
        _save(parts, position, run)
        if epoch + 1 < t.epochs and stop.requested(acc):
            raise stop.interrupted(
                f"checkpoint step-{position.step:06d} written at the end of epoch {epoch + 1}"
            )
        tick = time.perf_counter()  # evaluation time is not training throughput
    if main:
        run.save_weights(parts.student, parts.peft_spec, parts.relation)
        run.write_summary(run_summary(config, position))
        log.info("run folder: %s (weights in %s)", run.path, run.weights_dir())
        writer.close()
    if bar is not None:
        bar.close()
    acc.wait_for_everyone()
    acc.end_training()


def _save(parts: Parts, position: Position, run: runs.RunDir) -> None:
    acc = parts.step.accelerator
    if acc.is_main_process:
        state = {
            "step": position.step,
            "epoch": position.epoch,
            "batch": position.batch,
            "evaluated": {str(k): v for k, v in position.evaluated.items()},
            "optimizer": parts.step.optimizer.state_dict(),
            "scheduler": parts.step.scheduler.state_dict(),
            "rng": checkpoints.rng_state(),
        }
        if (
            parts.objective is not None
        ):  # learned parts of a baseline objective (VID's variance, ...), for resume
            state["distill"] = {k: v.detach().cpu() for k, v in parts.objective.state_dict().items()}
        run.save_checkpoint(position.step, parts.student, parts.peft_spec, parts.relation, state)
    acc.wait_for_everyone()


def _evaluate(config: Config, parts: Parts, test_set: Dataset, run: runs.RunDir, epoch: int) -> dict:
    from .evaluate import evaluate
    from .runtime import release_memory

    release_memory()  # the steps' freed activations, kept by malloc, would stay under the evaluation's own memory
    e, acc = config.eval, parts.step.accelerator
    try:
        with torch.no_grad(), acc.autocast():
            rows, summary = evaluate(
                parts.student,
                test_set,
                **e.scoring(),
                device=acc.device,
                encode=parts.step.caches.prefix.encode if parts.step.caches.prefix is not None else None,
            )
    finally:
        parts.student.train()
    summary["cached_features"] = parts.step.caches.prefix is not None  # as evaluate_run's summary says it
    run.write_evaluation(epoch, summary, rows)
    scores = ", ".join(f"{k} {summary[k]:.4f}" for k in METRIC_NAMES if k in summary)
    log.info("epoch %d test (%d images): %s", epoch, summary.get("n_images", len(rows)), scores)
    return summary


def run_summary(config: Config, position: Position) -> dict:
    """summary.json: the reported epoch (the last evaluated one), every evaluated epoch, and the best of each."""
    evaluated = dict(sorted(position.evaluated.items()))
    reported = max(evaluated) if evaluated else None
    return {
        "reported_epoch": reported,
        "reported_rule": "the last evaluated epoch (the paper evaluates the last five epochs, reports the last)",
        "reported": evaluated.get(reported) if reported is not None else None,
        "paper_metrics": config.eval.metrics or list(METRIC_NAMES),
        "epochs": {str(k): v for k, v in evaluated.items()},
        "best": best_of(evaluated),
        "steps": position.step,
    }


def _reduce_terms(terms: list[dict[str, Tensor]], acc: Accelerator) -> dict[str, float]:
    """The batches' terms as one float each, averaged over the batches and the processes; a ``*_min`` / ``*_max``
    statistic takes the smallest / largest batch value (this process's)."""
    out = {}
    for name in terms[0]:
        values = torch.stack([t[name].float() for t in terms])
        if name.endswith("_min"):
            out[name] = float(values.min())
        elif name.endswith("_max"):
            out[name] = float(values.max())
        else:
            out[name] = float(acc.reduce(values.mean().to(acc.device), reduction="mean"))
    return out


def _metrics_row(
    window: list[dict[str, Tensor]],
    acc: Accelerator,
    position: Position,
    epoch: int,
    lr: float,
    seconds: float,
    batch_size: int,
) -> dict:
    row: dict = {"step": position.step, "epoch": epoch + 1, "lr": lr}
    row.update(_reduce_terms(window, acc))
    row["images_per_s"] = len(window) * batch_size * acc.num_processes / max(seconds, 1e-9)
    return row


class EpochLog:
    """The line ``infosam train`` logs at each epoch end: the epoch's mean loss terms (with InfoSAM, the
    relation's entropy S(r_t) and I(r_t; r_s) in bits, so a user sees what L_r and L_d do), its time, and the
    time left for training at that pace (evaluations not counted)."""

    def __init__(self, config: Config, batches: int, position: Position) -> None:
        self.epochs = config.train.epochs
        self.steps_per_epoch = math.ceil(batches / config.train.grad_accum)
        self.rows: list[dict[str, float]] = []
        self.started = time.perf_counter()
        self.first_step = position.step

    def add(self, row: dict[str, float]) -> None:
        self.rows.append(row)

    EARLY_STEPS = 5
    """After this many steps of a run (or of a resumed run), one line gives a first pace and time left."""

    def early_line(self, step: int) -> str | None:
        """The first estimate, once: after :data:`EARLY_STEPS` steps, long before the first epoch ends (a CPU
        epoch can take many minutes). Those steps fill the caches when they are on, so it errs long."""
        if step - self.first_step != self.EARLY_STEPS or len(self.rows) < self.EARLY_STEPS:
            return None
        pace = (time.perf_counter() - self.started) / len(self.rows)
        left = self.epochs * self.steps_per_epoch - step
        return (
            f"first {self.EARLY_STEPS} steps: {pace:.1f} s/step; training left ~{_clock(left * pace)} at that pace "
            "(steps that fill caches are slower, so this errs long)"
        )

    def line(self, epoch: int) -> str:
        seconds = time.perf_counter() - self.started
        mean = {k: float(np.mean([r[k] for r in self.rows])) for k in self.rows[0]} if self.rows else {}
        parts = [f"epoch {epoch}/{self.epochs}", f"loss {mean.get('loss', math.nan):.4f}"]
        for key, label in (("seg", "L_seg"), ("relation", "L_r"), ("distill", "L_d")):
            if key in mean:
                parts.append(f"{label} {mean[key]:+.4f}")
        if "s_rt" in mean:
            parts.append(f"S(r_t) {mean['s_rt']:.3f} bit, I(r_t; r_s) {mean['i_rt_rs']:.3f} bit")
        steps = len(self.rows)
        left = (self.epochs - epoch) * self.steps_per_epoch
        pace = seconds / steps if steps else math.nan
        parts.append(f"{_clock(seconds)} ({pace:.1f} s/step), training left ~{_clock(left * pace)}")
        self.rows, self.started = [], time.perf_counter()
        return "; ".join(parts)


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _tensorboard(run: runs.RunDir, step: int):
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events a killed run wrote after its last checkpoint.
    return SummaryWriter(str(run.tensorboard_dir), purge_step=step or None)


def _write_tensorboard(writer, row: dict, step: int, group: str = "train") -> None:
    for name, value in row.items():
        if name not in ("step", "epoch"):
            writer.add_scalar(f"{group}/{name}", value, step)
    writer.flush()


def _bar_label(config: Config, epoch: int) -> str:
    """The progress bar's label: the first epoch of a cached run fills the caches, 2-3x slower than the epochs that
    read them, so the ETA shown during it (extrapolated from cold steps) is that much too long; say so. Later
    epochs' ETA follows tqdm's moving average of the warm steps."""
    if config.cache.enabled and epoch == 0 and config.train.epochs > 1:
        return (
            "train (epoch 1 fills the caches: slower than later epochs, so the ETA is too long until epoch 2)"
        )
    return "train"


def _progress_bar(batches_per_epoch: int, t, done: int):
    from tqdm.auto import tqdm

    total = math.ceil(batches_per_epoch / t.grad_accum) * t.epochs
    return tqdm(total=total, initial=done, unit="step", desc="train", dynamic_ncols=True)
