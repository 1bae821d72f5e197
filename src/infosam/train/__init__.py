"""Training: :func:`train` builds a run from a config and :func:`fit` runs it (epochs, evaluation, logging,
saving); one batch is :func:`infosam.step.train_step`. accelerate drives devices and DDP. Building a run is
:mod:`infosam.train.build`, its checkpoints :mod:`infosam.train.state`, what it logs :mod:`infosam.train.progress`.

Resuming is exact: the data order of an epoch depends only on (seed, epoch), the prompts of a batch only on (seed,
process, epoch, batch index), and checkpoints hold the optimizer, scheduler and global RNG states, so a run that is
killed and resumed ends with bitwise the same weights as one that was not (same device and thread count).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .. import runs
from ..config import Config
from ..data.loading import EpochSampler, train_loader
from ..lock import RunLock
from ..metrics import METRIC_NAMES
from ..runtime import reset_accelerate_state
from ..sam.transforms import get_transform
from ..signals import StopSignals
from ..step import train_step
from .build import Parts, build_parts, check_before_work, model_spec, open_split, startup_line
from .progress import (
    EpochLog,
    bar_label,
    metric_fields,
    metrics_row,
    progress_bar,
    reduce_terms,
    run_summary,
    tensorboard,
    write_tensorboard,
)
from .state import Position, restore, save_state, seed_everything

log = logging.getLogger(__name__)

StepCallback = Callable[[int], None]
"""Called with the number of optimizer steps done, after each optimizer step (e.g. progress, or a test pausing
the run so that it can be killed mid-way)."""


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
    check_before_work(config)
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
    transform = get_transform(model_spec(config))
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
            if train_set.is_instances:  # a sample is an object, drawn per epoch
                have = (
                    f"{sampler.length} object sample(s) per process and epoch from {len(train_set)} object(s)"
                )
            else:
                have = f"{len(train_set)} image(s)"
            raise ValueError(
                f"{config.data.path}: the training split has too few samples for one batch ({have}; "
                f"distill.method={config.distill_method} needs at least 2 per process)"
            )
        steps_total = math.ceil(sampler.batches / t.grad_accum) * t.epochs
        parts = build_parts(config, accelerator, steps_total, checkpoint)
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
            position = restore(run, checkpoint, parts)
        else:
            seed_everything(t.seed)
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


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


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
    objective = parts.objective
    stats = objective.stats if objective is not None else ()
    fields = metric_fields(parts.student, stats=stats)
    metrics = run.metrics_log(fields, resume_step=position.step) if main else None
    writer = tensorboard(run, position.step) if main else None
    bar = progress_bar(sampler.batches, t, position.step) if progress and main else None
    window: list[dict[str, Tensor]] = []  # the batches since the last metrics row
    step_terms: list[dict[str, Tensor]] = []  # the batches of the current optimizer step
    epoch_log = EpochLog(config, sampler.batches, position)
    tick = time.perf_counter()
    stop = stop if stop is not None else StopSignals("")  # not entered: never asked to stop
    for epoch in range(position.epoch, t.epochs):
        if bar is not None:
            bar.set_description(bar_label(config, epoch))
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
            step_row = reduce_terms(step_terms, acc)
            step_terms = []
            epoch_log.add(step_row)
            if main and (early := epoch_log.early_line(position.step)):
                log.info(early)
            if main and stats:  # the objective's statistics every step (metrics.csv has them per row)
                write_tensorboard(
                    writer, {k: step_row[k] for k in stats}, position.step, objective.stats_group
                )
            last = index + 1 == sampler.batches
            if position.step % t.log_every_steps == 0 or last:
                row = metrics_row(window, acc, position, epoch, lr, time.perf_counter() - tick, t.batch_size)
                window, tick = [], time.perf_counter()
                if main:
                    metrics.append(row)
                    write_tensorboard(writer, row, row["step"])
                    if bar is not None:
                        bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.1f}")
            saved = position.step % t.save_every_steps == 0 and not last
            if saved:
                save_state(parts, position, run)
            if not last and stop.requested(acc):  # SIGINT/SIGTERM: checkpoint at this step, then stop
                if not saved:
                    save_state(parts, position, run)
                raise stop.interrupted(f"checkpoint step-{position.step:06d} written")
        position.epoch, position.batch = epoch + 1, 0
        if main:
            log.info(epoch_log.line(epoch + 1))
        if epoch + 1 in config.eval_epochs() and main:
            run.save_weights(parts.student, parts.peft_spec, parts.relation, epoch=epoch + 1)
            position.evaluated[epoch + 1] = _evaluate(config, parts, test_set, run, epoch + 1)
        acc.wait_for_everyone()
        save_state(parts, position, run)
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


def _evaluate(config: Config, parts: Parts, test_set: Dataset, run: runs.RunDir, epoch: int) -> dict:
    from ..evaluate import evaluate
    from ..runtime import release_memory

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
