"""Evaluating a SAM (pretrained teacher or fine-tuned student) on a dataset with deterministic test prompts."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .data.formats import SegmentationDataset
from .data.prompts import PROMPT_MODES, test_prompts
from .metrics import MetricAccumulator
from .sam.forward import sam_forward
from .sam.transforms import get_transform


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
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[list[dict], dict]:
    """Run ``model`` on every sample of ``dataset`` with its deterministic test prompt and score it.

    Args:
        model: a SAM (``infosam.sam.build.build_sam``, possibly with PEFT); put in eval mode here.
        dataset: a :class:`SegmentationDataset` made with the model's transform
            (``open_dataset(..., transform=get_transform(model.spec))``).
        prompt: ``"box"`` (noisy box, seeded per image) or ``"points"`` (``n_fg`` foreground + ``n_bg`` background).
        seed: prompt seed (the prompt of an image depends only on ``seed`` and its id).
        compat: reproduce the release's table (clipped logits, IoU/Dice over five thresholds); see
            :mod:`infosam.metrics`.
        on_batch: called with ``(images_done, images_total)`` after each batch (progress display).

    Returns:
        ``(rows, summary)``: one dict per image (``id`` and the metrics of :data:`infosam.metrics.METRIC_NAMES`,
        fractions in [0, 1]) and the mean over images with ``n_images`` and the settings used.
    """
    if prompt not in PROMPT_MODES:
        raise ValueError(f"prompt {prompt!r} is not one of {list(PROMPT_MODES)}")
    transform = get_transform(model.spec)
    if dataset.image_size != transform.image_size:
        raise ValueError(
            f"dataset image_size {dataset.image_size} differs from the model's input size {transform.image_size}"
        )
    if dataset.transform != transform:
        raise ValueError(f"dataset transform {dataset.transform} differs from the model's {transform}")
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
        prompts = test_prompts(
            batch["mask"],
            batch["id"],
            seed=seed,
            mode=prompt,
            n_fg=n_fg,
            n_bg=n_bg,
            input_sizes=batch["input_size"],
        )
        prompts = {k: v.to(device) for k, v in prompts.items()}
        out = sam_forward(model, batch["image"].to(device), **prompts)
        for i, image_id in enumerate(batch["id"]):
            logits = transform.postprocess(
                out.low_res_logits[i : i + 1], batch["input_size"][i], batch["original_size"][i]
            )
            scores.add(image_id, logits[0, 0], np.asarray(batch["original_mask"][i]))
        done += len(batch["id"])
        if on_batch is not None:
            on_batch(done, len(dataset))
    summary = {
        **scores.summary(),
        "prompt": prompt,
        "n_fg": n_fg if prompt == "points" else 0,
        "n_bg": n_bg if prompt == "points" else 0,
        "seed": seed,
        "compat": compat,
    }
    return scores.rows, summary


# --------------------------------------------------------------------------------------------- evaluation folders

PER_IMAGE_FILE = "per_image.csv"
SUMMARY_FILE = "summary.json"


def evaluation_files(out_dir: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """``(per_image.csv, summary.json)`` in ``out_dir``; FileExistsError naming them when they exist and
    ``overwrite`` is False (checked before any work)."""
    out = Path(out_dir)
    targets = (out / PER_IMAGE_FILE, out / SUMMARY_FILE)
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"output file(s) exist: {', '.join(existing)} (pass --overwrite to replace them)"
        )
    return targets


def write_evaluation(
    out_dir: str | Path, rows: list[dict], summary: dict, *, overwrite: bool = False
) -> None:
    """Write per-image metrics (CSV: id, then the metric names) and the summary (JSON) into ``out_dir``."""
    per_image, summary_file = evaluation_files(out_dir, overwrite=overwrite)
    per_image.parent.mkdir(parents=True, exist_ok=True)
    with open(per_image, "w", newline="", encoding="utf-8") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    summary_file.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def evaluate_sam(
    name: str,
    data: str | Path,
    out_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    split: str | None = None,
    overwrite: bool = False,
    prompt: str = "box",
    n_fg: int = 2,
    n_bg: int = 3,
    seed: int = 42,
    compat: bool = False,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict:
    """Score pretrained SAM ``name`` (e.g. the paper's "SAM zero-shot" row) on ``split`` of the dataset at
    ``data`` with :func:`evaluate`, and write ``per_image.csv`` and ``summary.json`` into ``out_dir``.

    Returns the summary (with ``model``, ``checkpoint``, ``data`` and ``split`` added).
    Raises:
        FileExistsError: an output exists and ``overwrite`` is False (before any work).
        ValueError: no ``checkpoint`` for a model other than the tiny test model.
    """
    from .data.formats import open_dataset
    from .model import build_base

    evaluation_files(out_dir, overwrite=overwrite)
    if checkpoint is None and name != "tiny":
        raise ValueError(
            f"--checkpoint is required for --model {name} (random weights make no sense to score)"
        )
    model = build_base(name, checkpoint=checkpoint)  # fast attention: the same function, faster
    dataset = open_dataset(data, split=split, transform=get_transform(model.spec))
    rows, summary = evaluate(
        model,
        dataset,
        prompt=prompt,
        n_fg=n_fg,
        n_bg=n_bg,
        seed=seed,
        compat=compat,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        on_batch=on_batch,
    )
    summary.update(
        model=name, checkpoint=None if checkpoint is None else str(checkpoint), data=str(data), split=split
    )
    write_evaluation(out_dir, rows, summary, overwrite=overwrite)
    return summary
