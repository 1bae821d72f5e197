"""Evaluating a SAM (pretrained teacher or fine-tuned student) on a dataset with deterministic test prompts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .data.formats import SegmentationDataset
from .data.prompts import (
    DEFAULT_BOX_NOISE,
    PROMPT_MODES,
    check_box_noise,
    describe_prompt,
    eval_prompts,
    prompt_kind,
)
from .metrics import MetricAccumulator
from .sam.forward import decode, sam_forward
from .sam.transforms import get_transform
from .score_files import (  # noqa: F401  re-exported: infosam.evaluate is where a user finds an evaluation's files
    PER_IMAGE_FILE,
    SUMMARY_FILE,
    check_outputs,
    read_evaluation,
    write_evaluation,
    write_files,
)

if TYPE_CHECKING:
    from .config import CacheConfig, Config, EvalConfig, ModelConfig
    from .load import ModelSource, OpenedModel

logger = logging.getLogger(__name__)


class _WithOriginalMask(Dataset):
    """Adds the ``(H, W)`` bool ground truth at original resolution (``"original_mask"``) to each sample."""

    def __init__(self, dataset: SegmentationDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.dataset.sample(index, with_original_mask=True)


def _collate(samples: list[dict]) -> dict:
    out = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        same_shape = isinstance(values[0], torch.Tensor) and all(v.shape == values[0].shape for v in values)
        out[key] = torch.stack(values) if same_shape and key != "original_mask" else values
    return out


def _original_tight_boxes(batch: dict, transform, fallback: torch.Tensor) -> torch.Tensor:
    """``(B, 4)`` input-pixel boxes: the tight box of each ground truth at its original resolution, mapped to the
    model input as a user's box would be (``transform.boxes``), the box ``zero_shot_priors.py`` and the README's
    zero-shot table use; the resized mask's tight box (``fallback``) can be a pixel off. Empty masks keep
    ``fallback`` (the whole image)."""
    boxes = fallback.clone()
    for i, mask in enumerate(batch["original_mask"]):
        ys, xs = np.nonzero(np.asarray(mask))
        if ys.size:
            box = torch.tensor([[xs.min(), ys.min(), xs.max(), ys.max()]], dtype=torch.float32)
            boxes[i] = transform.boxes(box, tuple(np.asarray(mask).shape))[0]
    return boxes


def check_prompt_settings(prompt: str, n_fg: int, n_bg: int) -> None:
    """ValueError naming the option unless ``prompt`` is a prompt mode and, for points, ``n_fg``/``n_bg`` are
    counts (>= 0) with at least one point."""
    if prompt not in PROMPT_MODES:
        raise ValueError(f"prompt {prompt!r} is not one of {list(PROMPT_MODES)}")
    if prompt == "points" and (n_fg < 0 or n_bg < 0 or n_fg + n_bg < 1):
        raise ValueError(
            f"--points N_FG N_BG (eval.n_fg, eval.n_bg) must be counts >= 0 with at least one point; "
            f"got {n_fg} {n_bg}"
        )


def check_eval_data(dataset: SegmentationDataset, *, workers: int | None = None) -> list[str]:
    """Read every pair of ``dataset`` before anything is scored (:func:`infosam.data.check.check_pairs`).

    Returns the ids of pairs whose ground truth is empty (scored, with a warning: see :func:`evaluate_run`).

    Raises:
        DatasetCheckError: any other error, every bad pair listed (missing, unreadable, size mismatch, ...).
        ValueError: the split holds no pair.
    """
    from .data.check import DatasetCheckError, check_dataset_object

    where = f"{dataset.root}" + (f" (split {dataset.split})" if dataset.split else "")
    if len(dataset) == 0:
        raise ValueError(f"{where}: no image/mask pairs to evaluate")
    report = check_dataset_object(dataset, workers=workers)
    empty = [p for p in report.errors if p.kind == "empty mask"]
    fatal = [p for p in report.errors if p.kind != "empty mask"]
    if fatal:
        report.problems = fatal
        raise DatasetCheckError(
            f"{len({p.index for p in fatal})} pair(s) cannot be evaluated; nothing was scored:\n"
            + report.format(limit=50)
        )
    return [p.id for p in empty]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    *,
    prompt: str = "box",
    n_fg: int = 2,
    n_bg: int = 3,
    seed: int = 42,
    compat: bool = False,
    batch_size: int = 1,
    box_noise: str = DEFAULT_BOX_NOISE,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[list[dict], dict]:
    """Run ``model`` on every sample of ``dataset`` with its deterministic test prompt and score it.

    Args:
        model: a SAM (``infosam.sam.build.build_sam``, possibly with PEFT); put in eval mode here.
        dataset: a :class:`SegmentationDataset` made with the model's transform
            (``open_dataset(..., transform=get_transform(model.spec))``).
        prompt: ``"box"`` (noisy box, seeded per image) or ``"points"`` (``n_fg`` foreground + ``n_bg`` background).
        seed: prompt seed (the prompt of an image depends only on ``seed`` and its id).
        box_noise: how a box prompt is drawn from the tight box: ``per-coordinate``, ``release`` or ``none``
            (the tight box, of the original-resolution mask); :data:`infosam.data.prompts.BOX_NOISE_RULES`. The
            summary names the prompt as ``prompt_kind`` (``tight_box``, ``noisy_box``, ``points``) and, with its
            rule and scale, ``prompt_description``.
        compat: reproduce the release's table (clipped logits, IoU/Dice over five thresholds); see
            :mod:`infosam.metrics`.
        on_batch: called with ``(images_done, images_total)`` after each batch (progress display).
        encode: images (B, 3, S, S) -> the model's image embeddings (B, C, h, w), e.g. through its cached frozen
            prefix (:class:`infosam.prefix.StudentPrefix`); default the model's own image encoder.

    Returns:
        ``(rows, summary)``: one dict per image (``id`` and the metrics of :data:`infosam.metrics.METRIC_NAMES`,
        fractions in [0, 1]) and the mean over images with ``n_images`` and the settings used. For an instance
        dataset (one sample per object) one row per object, keyed by ``id`` (``<image>#<object>``), ``image`` and
        ``object``, and the summary of :func:`object_summary` (per-object and per-image means).
    """
    check_prompt_settings(prompt, n_fg, n_bg)
    check_box_noise(box_noise)
    transform = get_transform(model.spec)
    if dataset.image_size != transform.image_size:
        raise ValueError(
            f"dataset image_size {dataset.image_size} differs from the model's input size {transform.image_size}"
        )
    if dataset.transform != transform:
        raise ValueError(f"dataset transform {dataset.transform} differs from the model's {transform}")
    scoring = {"prompt": prompt, "n_fg": n_fg, "n_bg": n_bg, "seed": seed, "compat": compat}
    scoring.update(batch_size=batch_size, box_noise=box_noise)
    return _score(model, dataset, scoring, device, num_workers, on_batch, encode)


@torch.no_grad()
def _score(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    scoring: dict,
    device: str | torch.device,
    num_workers: int,
    on_batch: Callable[[int, int], None] | None,
    encode: Callable[[torch.Tensor], torch.Tensor] | None,
) -> tuple[list[dict], dict]:
    """:func:`evaluate` past its checks: ``scoring`` (:meth:`~infosam.config.EvalConfig.scoring`'s keys) is valid
    and ``dataset`` has the model's transform (checked by the caller, once)."""
    prompt, n_fg, n_bg, box_noise = (scoring[k] for k in ("prompt", "n_fg", "n_bg", "box_noise"))
    seed, compat, batch_size = scoring["seed"], scoring["compat"], scoring["batch_size"]
    transform = get_transform(model.spec)
    model.eval().to(device)
    scores = MetricAccumulator(compat=compat)
    loader = DataLoader(
        _WithOriginalMask(dataset),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    done = 0
    for batch in loader:
        prompts = eval_prompts(
            batch["mask"],
            batch["id"],
            seed=seed,
            mode=prompt,
            n_fg=n_fg,
            n_bg=n_bg,
            input_sizes=batch["input_size"],
            box_noise=box_noise,
        )
        if prompt == "box" and box_noise == "none":
            prompts["boxes"] = _original_tight_boxes(batch, transform, prompts["boxes"])
        prompts = {k: v.to(device) for k, v in prompts.items()}
        images = batch["image"].to(device)
        if encode is None:
            out = sam_forward(model, images, **prompts)
        else:
            out = decode(model, encode(images), **prompts)
        for i, image_id in enumerate(batch["id"]):
            logits = transform.postprocess(
                out.low_res_logits[i : i + 1], batch["input_size"][i], batch["original_size"][i]
            )
            row = scores.add(image_id, logits[0, 0], np.asarray(batch["original_mask"][i]))
            if "object_id" in batch:  # one object of an image: key the row by both
                keyed = {"id": image_id, "image": batch["image_id"][i], "object": int(batch["object_id"][i])}
                scores.rows[-1] = {**keyed, **{k: v for k, v in row.items() if k != "id"}}
        done += len(batch["id"])
        if on_batch is not None:
            on_batch(done, len(dataset))
    summary = {
        **(object_summary(scores.rows) if "object" in (scores.rows or [{}])[0] else scores.summary()),
        "prompt": prompt,
        "n_fg": n_fg if prompt == "points" else 0,
        "n_bg": n_bg if prompt == "points" else 0,
        "box_noise": box_noise if prompt == "box" else None,
        "prompt_kind": prompt_kind(prompt, box_noise),
        "prompt_description": describe_prompt(
            prompt, box_noise, n_fg=n_fg, n_bg=n_bg, image_size=transform.image_size
        ),
        "seed": seed,
        "compat": compat,
    }
    return scores.rows, summary


def object_summary(rows: list[dict]) -> dict:
    """Summary of per-object rows (keys ``image``, ``object`` and the metrics): the metrics at the top level and
    under ``per_object`` are the mean over objects (every object counts once); ``per_image`` is the mean over
    images of each image's mean over its objects (every image counts once, however many objects it holds).
    ``n_objects`` and ``n_images`` count them."""
    from .metrics import summarize

    by_image: dict[str, list[dict]] = {}
    for r in rows:
        by_image.setdefault(r["image"], []).append(r)
    per_object = summarize(rows)
    per_object.pop("n_images")
    per_image = summarize([summarize(group) for group in by_image.values()])
    per_image.pop("n_images")
    return {
        **per_object,
        "n_images": len(by_image),
        "n_objects": len(rows),
        "per_object": per_object,
        "per_image": per_image,
    }


# --------------------------------------------------------------------------------------------- any model, any data


def evaluate_run(
    source: str | Path | Config | ModelConfig | ModelSource,
    data: str | Path,
    split: str | None = None,
    *,
    settings: EvalConfig | None = None,
    overrides: Mapping[str, Any] | None = None,
    checkpoint: str | Path | None = None,
    weights: str | Path | None = None,
    image_size: int | None = None,
    device: str | torch.device | None = None,
    require_final: bool = False,
    require_run: bool = False,
    num_workers: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
    cache: CacheConfig | bool | None = None,
    categories: list[str] | None = None,
    include_crowd: bool | None = None,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
) -> tuple[list[dict], dict]:
    """Score a trained run's student (or zero-shot SAM) on ``split`` of the dataset at ``data``.

    ``source`` is anything :func:`infosam.load.open_model` opens (a run folder, an exported or SAM checkpoint
    file, a SAM model name, a Config or ModelConfig), or a :class:`~infosam.load.ModelSource` already resolved
    (then ``checkpoint``, ``weights``, ``image_size`` and ``require_final`` are its own). A run folder is read
    once and its model built once. ``require_run``: ``source`` is a path that must be a folder (``infosam eval
    RUN_DIR``).

    ``settings``: how to score (prompt, points, box noise, seed, compat, batch size); ``None`` takes the source's
    own (:meth:`~infosam.load.ModelSource.eval_settings`: a run's ``eval`` section, so a run scored here on its
    own test split matches what training logged; else the defaults). ``overrides``: single fields replaced on
    those (:class:`~infosam.config.EvalConfig` names; ``None`` values are not given), e.g.
    ``{"prompt": "points", "n_fg": 1, "n_bg": 3}``; a box-noise rule given for what ends up a point prompt is
    refused rather than silently unused.

    ``cache``: read (and fill) the model's frozen encoder prefix from the caches of :mod:`infosam.prefix`, as
    training's own evaluations do: ``True`` takes a run's (or config's) ``cache`` section (switched on), a
    :class:`~infosam.config.CacheConfig` is used as given (a zero-shot model: its whole encoder, the teacher
    cache). Scores then come from the stored (e.g. float16) features, like training's; a student whose encoder
    trains from its first block runs uncached. ``None``/``False``: every image through the whole encoder.
    ``categories``, ``include_crowd``: the COCO annotations scored; ``None``: the source's own (``data`` section).

    ``out_dir``: also write ``per_image.csv`` and ``summary.json`` there (:func:`write_evaluation`); existing
    ones are refused before any data is read unless ``overwrite``.

    Every check runs once, before the model loads: the source and its options, the prompt settings, the output
    files, then every pair is read (:func:`check_eval_data`): a bad pair fails at once with all of them listed,
    an empty split is an error, and pairs whose ground truth is empty are scored with a logged warning (their
    IoU and Dice are 0 unless the prediction is empty too).

    Returns:
        ``(rows, summary)`` as :func:`evaluate`, the summary extended with the model, data and split and
        ``cached_features`` (whether the encoder's frozen prefix came from a cache).
    """
    from .data.formats import open_dataset
    from .load import open_model, resolve

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    found = resolve(
        source,
        checkpoint=checkpoint,
        weights=weights,
        image_size=image_size,
        require_final=require_final,
        require_run=require_run,
    )
    e = scoring_settings(found, settings, overrides)
    if out_dir is not None:
        check_outputs(out_dir, overwrite)
    listing = open_dataset(data, split=split, **found.object_selection(categories, include_crowd))
    empty = check_eval_data(listing)
    if empty:
        shown = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
        logger.warning(
            "%d of %d ground-truth masks are empty (%s): they are scored with a whole-image box, and their IoU "
            "and Dice are 0 unless the prediction is empty too; leave them out of the split to score only "
            "images with an object",
            len(empty),
            len(listing),
            shown,
        )
    opened = open_model(found, device=device)
    model = opened.model
    dataset = listing.with_transform(get_transform(model.spec))
    encode = _cached_encode(opened, cache) if cache else None
    rows, summary = _score(model, dataset, e.scoring(), device, num_workers, on_batch, encode)
    summary.update(opened.description, data=str(data), split=split, cached_features=encode is not None)
    if out_dir is not None:
        write_files(out_dir, rows, summary)
    return rows, summary


def scoring_settings(
    source: ModelSource, settings: EvalConfig | None = None, overrides: Mapping[str, Any] | None = None
) -> EvalConfig:
    """The settings :func:`evaluate_run` scores ``source`` with, checked: ``settings`` (default the source's
    own) with the ``overrides`` not ``None`` replaced.

    Raises:
        ValueError: a prompt mode or point counts that cannot be scored (:func:`check_prompt_settings`), an
            unknown box-noise rule, or a box-noise rule given for a point prompt.
    """
    from dataclasses import replace

    base = source.eval_settings() if settings is None else settings
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    chosen = {k: given.get(k, getattr(base, k)) for k in ("prompt", "n_fg", "n_bg")}
    if "box_noise" in given and chosen["prompt"] != "box":
        if "prompt" in given:
            raise ValueError(
                "--box-noise/--tight-box is for box prompts; leave it out with --prompt points or --points"
            )
        # the prompt comes from the run's eval section: a box rule would be silently unused
        raise ValueError(
            f"--box-noise/--tight-box is for box prompts, and {source}'s eval.prompt is {chosen['prompt']}; "
            "add --prompt box to score it with boxes, or leave --box-noise/--tight-box out"
        )
    check_prompt_settings(**chosen)
    chosen_settings = replace(base, **given) if given else base
    check_box_noise(chosen_settings.box_noise)
    return chosen_settings


def _cached_encode(
    opened: OpenedModel, cache: CacheConfig | bool
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The model's encoder through its cached frozen prefix, or None when nothing of it is frozen.

    No second model is built when the base weights come from a file: a student's frozen encoder weights are that
    file's (only its PEFT tensors were trained and loaded), so the student itself serves as the reference the
    prefix is compared with and fingerprinted by. Random base weights (test models) are fingerprinted by the
    whole teacher's state, so that teacher is built from the config, as training built it.
    """
    import copy
    from dataclasses import replace

    from .config import CacheConfig, Config
    from .model import make_teacher
    from .prefix import open_student_prefix

    if opened.config is None:
        raise ValueError(
            f"{opened.source} has no config to take cache folders from; score its run folder or a SAM model"
        )
    config = copy.deepcopy(opened.config)
    if opened.is_student:
        config.cache = cache if isinstance(cache, CacheConfig) else replace(config.cache, enabled=True)
        reference = opened.model if config.model.checkpoint is not None else None
        prefix = open_student_prefix(config, opened.model, teacher=reference)
    else:
        if not isinstance(cache, CacheConfig):
            if not isinstance(opened.source.given, Config):
                raise ValueError(
                    "a zero-shot model is cached with a CacheConfig (which cache folders to use)"
                )
            cache = replace(config.cache, enabled=True)
        config.cache = cache
        prefix = open_student_prefix(config, make_teacher(opened.model), teacher=opened.model)
    return prefix.encode if prefix is not None else None


def evaluate_to_folder(
    source: str | Path | Config | ModelConfig | ModelSource,
    data: str | Path,
    split: str | None,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    **options,
) -> dict:
    """:func:`evaluate_run` writing into ``out_dir`` (``per_image.csv`` + ``summary.json``); existing outputs are
    refused before any work unless ``overwrite``. ``options`` are :func:`evaluate_run`'s keywords. Returns the
    summary."""
    return evaluate_run(source, data, split, out_dir=out_dir, overwrite=overwrite, **options)[1]
