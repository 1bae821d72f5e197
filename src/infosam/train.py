"""Training: one step that reads top to bottom, and the loop around it (accelerate drives devices and DDP).

A step: batch -> train prompts -> student forward -> teacher forward (no grad; or cached teacher embeddings +
teacher decoder) -> segmentation loss on logits upsampled to the input size -> relation module on both -> L_r, L_d
-> backward -> clip -> optimizer step -> scheduler step. With ``infosam.enabled: false`` the teacher and the relation
module are skipped and the same loop trains the plain PEFT baseline.

Resuming is exact: the data order of an epoch depends only on (seed, epoch), the prompts of a batch only on (seed,
process, epoch, batch index), and checkpoints hold the optimizer, scheduler and global RNG states, so a run that is
killed and resumed ends with bitwise the same weights as one that was not (same device and thread count).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState, GradientState
from segment_anything.modeling import Sam
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import runs
from .config import Config, load_config, save_config
from .data.check import validate_dataset
from .data.formats import open_dataset
from .data.prompts import train_prompts
from .distill.entropy import all_gather_rows
from .distill.loss import InfoSAMLoss, InfoSAMWeights
from .distill.relation import RelationModule
from .losses import segmentation_loss
from .metrics import METRIC_NAMES
from .model import build_base, build_student, build_teacher
from .peft import PeftSpec, load_peft, save_peft
from .sam.forward import SamOutput, decode, encode_images, sam_forward

if TYPE_CHECKING:
    from .cache import TeacherCache

log = logging.getLogger(__name__)

METRIC_FIELDS = ["step", "epoch", "loss", "seg", "relation", "distill", "infosam", "lr", "images_per_s"]
PEFT_FILE = "peft.safetensors"
RELATION_FILE = "relation.safetensors"
SAMPLE_LOG = "samples-rank{rank}.txt"
LOWER_IS_BETTER = {"MAE"}
# Seconds to pause after each optimizer step: lets tests kill a tiny run mid-way, however fast the machine.
_STEP_DELAY = float(os.environ.get("INFOSAM_STEP_DELAY", "0") or 0)


class Trainee(nn.Module):
    """Everything with gradients behind one ``forward`` that returns the losses, so DDP sees exactly the
    parameters that produced the loss (the IoU head, unused by the structure loss, is then simply skipped).

    Args:
        student: the PEFT student SAM.
        infosam: the InfoSAM loss module (owns the relation module), or ``None`` for the plain baseline.
        seg_loss: name of the segmentation loss (:func:`infosam.losses.segmentation_loss`).
    """

    def __init__(self, student: Sam, infosam: InfoSAMLoss | None, seg_loss: str = "structure") -> None:
        super().__init__()
        self.student = student
        self.infosam = infosam
        self.seg_loss = seg_loss

    def forward(
        self, images: Tensor, masks: Tensor, prompts: dict[str, Tensor], teacher: SamOutput | None
    ) -> dict[str, Tensor]:
        """images (B, 3, S, S), masks (B, 1, S, S) -> scalar terms ``loss``, ``seg`` (+ ``relation``,
        ``distill``, ``infosam`` with InfoSAM)."""
        student = sam_forward(self.student, images, **prompts)
        logits = F.interpolate(  # (B, 1, S, S): the loss is taken at the input resolution
            student.low_res_logits.float(), size=images.shape[-2:], mode="bilinear", align_corners=False
        )
        seg = segmentation_loss(self.seg_loss, logits, masks, student.iou_predictions.float())
        if self.infosam is None:
            return {"loss": seg, "seg": seg}
        info = self.infosam(teacher, student)  # relation module on both -> L_r, L_d
        return {
            "loss": seg + info["total"],
            "seg": seg,
            "relation": info["relation"],
            "distill": info["distill"],
            "infosam": info["total"],
        }


@dataclass
class Position:
    """Where training stands: optimizer steps done, epoch in progress (0-based), its batches consumed."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    evaluated: dict[int, dict] = field(default_factory=dict)
    """Test summaries by 1-based epoch."""


# --------------------------------------------------------------------------------------------- one step


def batch_prompts(batch: dict, *, seed: int, rank: int, epoch: int, index: int) -> dict[str, Tensor]:
    """Train prompts for ``batch["mask"]`` (B, 1, S, S) from a generator seeded by (seed, process, epoch, batch
    index), so a resumed run draws the same prompts and every process its own."""
    state = np.random.SeedSequence([seed, rank, epoch, index]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))
    return train_prompts(batch["mask"], generator, input_sizes=batch["input_size"])


def teacher_forward(
    teacher: Sam,
    images: Tensor,
    prompts: dict[str, Tensor],
    *,
    cache: TeacherCache | None = None,
) -> SamOutput:
    """The frozen teacher's outputs (no grad); image embeddings come from ``cache`` when it holds all ``images``
    (keyed by their content)."""
    with torch.no_grad():
        keys = cache.keys(images) if cache is not None else None
        embeddings = cache.get(keys) if cache is not None else None
        if embeddings is None:
            embeddings = encode_images(teacher, images)
            if cache is not None:
                cache.put(keys, embeddings)
                # Read back what was stored (e.g. float16), so every epoch and a resumed run see the same values.
                embeddings = cache.get(keys)
        embeddings = embeddings.to(images.device)
        return decode(teacher, embeddings, **prompts)


def train_step(
    batch: dict,
    prompts: dict[str, Tensor],
    *,
    trainee: nn.Module,
    teacher: Sam | None,
    accelerator: Accelerator,
    loss_scale: float = 1.0,
    cache: TeacherCache | None = None,
) -> dict[str, Tensor]:
    """Forward and backward of one batch (gradients accumulate; the optimizer step is the caller's).

    Args:
        batch: ``image`` (B, 3, S, S), ``mask`` (B, 1, S, S) on the device, ``id`` list of B strings.
        prompts: one prompt per image (``boxes`` (B, 4) or ``points`` (B, N, 2) + ``point_labels`` (B, N)).
        trainee: the (possibly DDP-wrapped) :class:`Trainee`.
        teacher: the frozen teacher, or ``None`` for the plain baseline.
        loss_scale: factor on the loss before backward (1 / accumulation window).
    Returns:
        the detached loss terms: ``loss``, ``seg`` and, with InfoSAM, ``relation``, ``distill``, ``infosam``.
    """
    images, masks = batch["image"], batch["mask"]
    with accelerator.autocast():
        teacher_out = None
        if teacher is not None:
            teacher_out = teacher_forward(teacher, images, prompts, cache=cache)
        terms = trainee(images, masks, prompts, teacher_out)
    accelerator.backward(terms["loss"] * loss_scale)
    return {k: v.detach() for k, v in terms.items()}


# --------------------------------------------------------------------------------------------- data


class EpochSampler(DistributedSampler):
    """This process's share of a seeded per-epoch shuffle, optionally skipping the samples already consumed.

    The order depends only on (seed, epoch), so a resumed run sees the same batches as an uninterrupted one.
    With ``drop_single``, a last batch that would hold one image is dropped (InfoSAM's entropies need two).
    """

    def __init__(
        self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int, batch_size: int, drop_single: bool
    ):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        single = drop_single and self.num_samples % batch_size == 1 and self.num_samples > 1
        self.length = self.num_samples - int(single)
        self.batches = math.ceil(self.length / batch_size)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.skip, self.length)

    def __len__(self) -> int:
        return max(0, self.length - self.skip)


def collate(samples: list[dict]) -> dict:
    """Stack images (B, 3, S, S), masks (B, 1, S, S) and input sizes (B, 2); keep ids as a list."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "input_size": torch.stack([torch.as_tensor(s["input_size"]) for s in samples]),
        "id": [s["id"] for s in samples],
    }


def make_loader(
    dataset: Dataset, config: Config, accelerator: Accelerator
) -> tuple[DataLoader, EpochSampler]:
    """DataLoader over this process's shard of ``dataset`` (not wrapped by accelerate: the sampler resumes)."""
    sampler = EpochSampler(
        dataset,
        num_replicas=accelerator.num_processes,
        rank=accelerator.process_index,
        seed=config.train.seed,
        batch_size=config.train.batch_size,
        drop_single=config.infosam.enabled,
    )
    loader = DataLoader(
        dataset,
        batch_size=config.train.batch_size,
        sampler=sampler,
        num_workers=config.train.num_workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(config.train.seed),
        persistent_workers=False,
    )
    return loader, sampler


def open_split(config: Config, split: str, image_size: int) -> Dataset:
    """Open and validate ``split`` of ``config.data.path``; refuses bad pairs unless ``data.skip_bad_pairs``."""
    dataset = open_dataset(config.data.path, split=split, image_size=image_size)
    dataset, _ = validate_dataset(dataset, skip_bad=config.data.skip_bad_pairs)
    return dataset


# --------------------------------------------------------------------------------------------- the loop


@dataclass
class Parts:
    """What the loop works with, built once per run."""

    accelerator: Accelerator
    teacher: Sam | None
    trainee: nn.Module
    student: Sam
    peft_spec: PeftSpec
    relation: RelationModule | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    cache: TeacherCache | None


def _build_parts(
    config: Config, accelerator: Accelerator, steps_total: int, checkpoint: Path | None
) -> Parts:
    if checkpoint is None:
        student, peft_spec = build_student(config)
    else:
        student = build_base(config.model, seed=config.train.seed)
        peft_spec = load_peft(checkpoint / PEFT_FILE, student)
    student.train()
    teacher, relation, infosam, cache = None, None, None, None
    if config.infosam.enabled:
        teacher = build_teacher(config).to(accelerator.device)
        relation = _build_relation(config, student, checkpoint)
        i = config.infosam
        weights = InfoSAMWeights(lam=i.lam, lam1=i.lam1, lam2=i.lam2)
        infosam = InfoSAMLoss(relation, weights, gather=all_gather_rows if i.global_batch else None)
        cache = _open_cache(config, teacher) if config.cache.enabled else None
    trainee = Trainee(student, infosam, config.train.seg_loss)
    params = [p for p in trainee.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.train.lr, weight_decay=0.0)
    # Stepped by the loop once per optimizer step (accelerate's prepared scheduler would step once per process).
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=steps_total, eta_min=config.train.min_lr
    )
    trainee, optimizer = accelerator.prepare(trainee, optimizer)
    return Parts(accelerator, teacher, trainee, student, peft_spec, relation, optimizer, scheduler, cache)


def _build_relation(config: Config, student: Sam, checkpoint: Path | None) -> RelationModule:
    if config.infosam.frozen_relation is not None:
        return RelationModule.load(config.infosam.frozen_relation, frozen=True)
    if checkpoint is not None:
        return RelationModule.load(checkpoint / RELATION_FILE, frozen=False)
    torch.manual_seed(config.train.seed)
    return RelationModule(student.spec.prompt_embed_dim)


def _open_cache(config: Config, teacher: Sam) -> TeacherCache:
    from .cache import TeacherCache, teacher_fingerprint
    from .sam.preprocess import preprocessing_fingerprint

    preprocessing = preprocessing_fingerprint(teacher.spec.image_size)
    # Without a checkpoint the teacher is random: fingerprint its weights so two such teachers never share a cache.
    model = teacher if config.model.checkpoint is None else None
    fingerprint = teacher_fingerprint(
        teacher.spec, config.model.checkpoint, preprocessing, precision=config.train.precision, model=model
    )
    return TeacherCache(Path(config.cache.dir).expanduser(), fingerprint)


def _write_weights(parts: Parts, config: Config) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_peft(folder / PEFT_FILE, parts.student, parts.peft_spec)
        if parts.relation is not None and config.infosam.frozen_relation is None:
            parts.relation.save(folder / RELATION_FILE)

    return write


def _resume_state(parts: Parts, position: Position) -> dict:
    return {
        "step": position.step,
        "epoch": position.epoch,
        "batch": position.batch,
        "evaluated": {str(k): v for k, v in position.evaluated.items()},
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "rng": runs.rng_state(),
    }


def resume_config(run_dir: str | Path) -> Config:
    """The config a run was started with (its ``config.yaml``), pointed at ``run_dir``."""
    run_dir = Path(run_dir).expanduser()
    if not (run_dir / runs.CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: {run_dir / runs.CONFIG_FILE} is missing")
    config = load_config(run_dir / runs.CONFIG_FILE)
    config.output = str(run_dir)
    return config


def train(config: Config, *, resume: bool = False, overwrite: bool = False, progress: bool = False) -> Path:
    """Train the student described by ``config``; returns the run folder (``config.output``).

    Args:
        config: a validated :class:`Config`.
        resume: continue the run in ``config.output`` from its newest checkpoint (same config).
        overwrite: write into an existing non-empty run folder (never deleted).
        progress: show a tqdm progress bar on the main process.
    """
    run_dir = Path(config.output).expanduser()
    checkpoint = runs.latest_checkpoint(run_dir) if resume else None
    if resume and not (run_dir / runs.CONFIG_FILE).is_file():
        raise FileNotFoundError(f"cannot resume: {run_dir / runs.CONFIG_FILE} is missing")

    spec_size = _image_size(config)
    train_set = open_split(config, config.data.train_split, spec_size)
    test_set = open_split(config, config.data.test_split, spec_size) if config.eval_epochs() else None

    # Unused parameters exist by design: the IoU head trains only under losses that use iou_predictions.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    accelerator = Accelerator(
        mixed_precision=config.train.precision, cpu=config.train.cpu, kwargs_handlers=[ddp]
    )
    if not resume:
        if accelerator.is_main_process:
            runs.prepare_run_dir(run_dir, overwrite=overwrite)
            save_config(config, run_dir / runs.CONFIG_FILE)
        accelerator.wait_for_everyone()
        if not (run_dir / runs.CONFIG_FILE).is_file():
            raise runs.RunFolderError(f"the main process did not create the run folder {run_dir}")

    loader, sampler = make_loader(train_set, config, accelerator)
    if sampler.batches == 0:
        raise ValueError(f"{config.data.path}: the training split has too few images for one batch")
    batches_per_epoch = sampler.batches
    steps_per_epoch = math.ceil(batches_per_epoch / config.train.grad_accum)
    steps_total = steps_per_epoch * config.train.epochs

    position = Position()
    parts = _build_parts(config, accelerator, steps_total, checkpoint)
    if checkpoint is not None:
        state = runs.load_state(checkpoint)
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
        runs.set_rng_state(state["rng"])
        position = Position(
            state["step"], state["epoch"], state["batch"], {int(k): v for k, v in state["evaluated"].items()}
        )
        log.info(
            "resuming %s from %s (step %d, epoch %d)",
            run_dir,
            checkpoint.name,
            position.step,
            position.epoch + 1,
        )
    else:
        _seed_everything(config.train.seed)

    try:
        _loop(config, parts, loader, sampler, test_set, position, run_dir, steps_total, progress)
    finally:
        # accelerate keeps its settings process-wide; forget them (not the process group) so a later train()
        # in the same Python process may use another precision or device.
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
    return run_dir


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _image_size(config: Config) -> int:
    from .sam.specs import get_spec

    return config.model.image_size or get_spec(config.model.name).image_size


def _loop(
    config: Config,
    parts: Parts,
    loader: DataLoader,
    sampler: EpochSampler,
    test_set: Dataset | None,
    position: Position,
    run_dir: Path,
    steps_total: int,
    progress: bool,
) -> None:
    acc = parts.accelerator
    main = acc.is_main_process
    t = config.train
    batches_per_epoch = sampler.batches
    metrics = (
        runs.MetricsLog(run_dir / runs.METRICS_FILE, METRIC_FIELDS, resume_step=position.step)
        if main
        else None
    )
    writer = _tensorboard(run_dir, position.step) if main else None
    bar = _progress_bar(steps_total, position.step) if progress and main else None
    window: list[dict[str, Tensor]] = []
    tick = time.perf_counter()
    for epoch in range(position.epoch, t.epochs):
        sampler.set_epoch(epoch)
        sampler.skip = position.batch * t.batch_size if epoch == position.epoch else 0
        first = sampler.skip // t.batch_size
        for index, batch in enumerate(loader, start=first):
            _log_samples(run_dir, acc.process_index, epoch, index, batch["id"])
            prompts = batch_prompts(batch, seed=t.seed, rank=acc.process_index, epoch=epoch, index=index)
            batch = {**batch, "image": batch["image"].to(acc.device), "mask": batch["mask"].to(acc.device)}
            prompts = {k: v.to(acc.device) for k, v in prompts.items()}
            window_start = index - index % t.grad_accum
            window_size = min(t.grad_accum, batches_per_epoch - window_start)
            sync = index + 1 == window_start + window_size
            no_sync = contextlib.nullcontext() if sync else acc.no_sync(parts.trainee)
            with no_sync:
                terms = train_step(
                    batch,
                    prompts,
                    trainee=parts.trainee,
                    teacher=parts.teacher,
                    accelerator=acc,
                    loss_scale=1.0 / window_size,
                    cache=parts.cache,
                )
            window.append(terms)
            if not sync:
                continue
            if t.grad_clip is not None:
                acc.clip_grad_norm_(parts.trainee.parameters(), t.grad_clip)
            parts.optimizer.step()
            parts.optimizer.zero_grad(set_to_none=True)
            lr = parts.scheduler.get_last_lr()[0]
            parts.scheduler.step()
            position.step += 1
            position.epoch, position.batch = epoch, index + 1
            if _STEP_DELAY:
                time.sleep(_STEP_DELAY)
            if bar is not None:
                bar.update(1)
            if position.step % t.log_every_steps == 0 or index + 1 == batches_per_epoch:
                row = _metrics_row(window, acc, position, epoch, lr, time.perf_counter() - tick, t.batch_size)
                window, tick = [], time.perf_counter()
                if main:
                    metrics.append(row)
                    _write_tensorboard(writer, row)
                    if bar is not None:
                        bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.1f}")
            if position.step % t.save_every_steps == 0 and index + 1 < batches_per_epoch:
                _save(parts, config, position, run_dir)
        position.epoch, position.batch = epoch + 1, 0
        _end_of_epoch(config, parts, test_set, position, run_dir, epoch + 1)
        tick = time.perf_counter()  # evaluation time is not training throughput
    if main:
        runs.atomic_write(run_dir / "weights" / "final", _write_weights(parts, config))
        _write_summary(config, position, run_dir)
        log.info("run folder: %s (weights in %s)", run_dir, run_dir / "weights" / "final")
    if writer is not None:
        writer.close()
    if bar is not None:
        bar.close()
    acc.wait_for_everyone()
    acc.end_training()


def _save(parts: Parts, config: Config, position: Position, run_dir: Path) -> None:
    if parts.accelerator.is_main_process:
        runs.save_checkpoint(
            run_dir, position.step, _write_weights(parts, config), _resume_state(parts, position)
        )
    parts.accelerator.wait_for_everyone()


def _end_of_epoch(
    config: Config, parts: Parts, test_set: Dataset | None, position: Position, run_dir: Path, epoch: int
) -> None:
    acc = parts.accelerator
    if epoch in config.eval_epochs() and acc.is_main_process:
        runs.atomic_write(run_dir / "weights" / f"epoch-{epoch:03d}", _write_weights(parts, config))
        position.evaluated[epoch] = _evaluate(config, parts, test_set, run_dir, epoch)
    acc.wait_for_everyone()
    _save(parts, config, position, run_dir)


def _evaluate(config: Config, parts: Parts, test_set: Dataset, run_dir: Path, epoch: int) -> dict:
    from .evaluate import evaluate

    e = config.eval
    student = parts.student
    try:
        with torch.no_grad(), parts.accelerator.autocast():
            rows, summary = evaluate(
                student,
                test_set,
                prompt=e.prompt,
                n_fg=e.n_fg,
                n_bg=e.n_bg,
                seed=e.seed,
                compat=e.compat,
                batch_size=e.batch_size,
                device=parts.accelerator.device,
            )
    finally:
        student.train()
    runs.write_json(
        run_dir / "eval" / f"epoch-{epoch:03d}.json", {"epoch": epoch, "summary": summary, "rows": rows}
    )
    scores = ", ".join(f"{k} {summary[k]:.4f}" for k in METRIC_NAMES if k in summary)
    log.info("epoch %d test (%d images): %s", epoch, summary.get("n_images", len(rows)), scores)
    return summary


def _write_summary(config: Config, position: Position, run_dir: Path) -> None:
    """summary.json: the reported epoch (the last evaluated one), every evaluated epoch, and the best of each."""
    evaluated = dict(sorted(position.evaluated.items()))
    best: dict[str, dict] = {}
    for epoch, summary in evaluated.items():
        for name in METRIC_NAMES:
            value = summary.get(name)
            if value is None:
                continue
            old = best.get(name)
            if old is None or (value < old["value"] if name in LOWER_IS_BETTER else value > old["value"]):
                best[name] = {"epoch": epoch, "value": value}
    reported = max(evaluated) if evaluated else None
    runs.write_json(
        run_dir / runs.SUMMARY_FILE,
        {
            "reported_epoch": reported,
            "reported_rule": "the last evaluated epoch (the paper evaluates the last five epochs, reports the last)",
            "reported": evaluated.get(reported) if reported is not None else None,
            "paper_metrics": config.eval.metrics or list(METRIC_NAMES),
            "epochs": {str(k): v for k, v in evaluated.items()},
            "best": best,
            "steps": position.step,
        },
    )


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
    for name in window[0]:
        mean = torch.stack([w[name].float() for w in window]).mean()
        row[name] = float(acc.reduce(mean.to(acc.device), reduction="mean"))
    row["images_per_s"] = len(window) * batch_size * acc.num_processes / max(seconds, 1e-9)
    return row


def _tensorboard(run_dir: Path, step: int):
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events a killed run wrote after its last checkpoint.
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=step or None)


def _write_tensorboard(writer, row: dict) -> None:
    for name, value in row.items():
        if name not in ("step", "epoch"):
            writer.add_scalar(f"train/{name}", value, row["step"])
    writer.flush()


def _progress_bar(total: int, done: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="step", desc="train", dynamic_ncols=True)


def _log_samples(run_dir: Path, rank: int, epoch: int, index: int, ids: list[str]) -> None:
    """Append the sample ids of a batch to ``samples-rank<r>.txt`` (shows which process saw what)."""
    with open(run_dir / SAMPLE_LOG.format(rank=rank), "a", encoding="utf-8") as f:
        f.write(f"{epoch + 1}\t{index}\t{' '.join(ids)}\n")
