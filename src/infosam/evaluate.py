"""Evaluating a SAM (pretrained teacher or fine-tuned student) on a dataset with deterministic test prompts."""

from __future__ import annotations

from collections.abc import Callable

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
