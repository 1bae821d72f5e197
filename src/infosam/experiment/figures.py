"""The report's figures: score curves per epoch, and teacher/student relation maps of a trained InfoSAM cell.

matplotlib is the ``[report]`` extra; relation maps need the cell's weights, so a results record (no weights)
gets curves only.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ..files import atomic_write
from ..metrics import display_scale
from .collect import TEACHER, CellResult
from .grid import Grid
from .layout import ExperimentDir
from .plan import TEST


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (the ``[report]`` extra; a one-line error names it)."""
    from ..extras import require

    matplotlib = require("matplotlib", "infosam report's figures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Lay ``fig`` out, write it as a PNG atomically, and close it."""
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    _pyplot().close(fig)
    return path


def curve_figures(results: list[CellResult], teacher: list[dict], grid: Grid, folder: Path) -> list:
    """One figure per setting (dataset, regime): the grid's first metric per epoch for every arm on every scored
    set, in the tables' units (:func:`display_scale`), with the zero-shot teacher as a dotted line; returns
    ``[(caption, path)]``."""
    plt = _pyplot()

    metric = grid.metrics[0]
    scale, label = display_scale(metric)
    settings: dict[tuple, dict[str, dict[str, dict[int, list[tuple[float, int, int]]]]]] = {}
    for r in results:
        setting = settings.setdefault((r.cell.dataset, r.cell.regime), {})
        for name, curve in r.curves.items():
            for epoch, (summary, n) in curve.items():
                if metric in summary:
                    setting.setdefault(name, {}).setdefault(r.cell.arm, {}).setdefault(epoch, []).append(
                        (summary[metric], n, r.cell.seed)
                    )
    ref = {(t["dataset"], t["regime"], t["set"]): t[metric] for t in teacher}
    written = []
    for (dataset, regime), sets in sorted(settings.items()):
        names = sorted(sets, key=lambda s: (s != TEST, s))
        fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            for arm, curve in sorted(sets[name].items()):
                epochs = sorted(curve)
                # Parts weighted by their images within a seed, then the mean over seeds.
                values = []
                for e in epochs:
                    by_seed: dict[int, list[tuple[float, int]]] = defaultdict(list)
                    for v, n, seed in curve[e]:
                        by_seed[seed].append((v, n))
                    values.append(
                        scale
                        * np.mean(
                            [
                                sum(v * n for v, n in vs) / max(1, sum(n for _, n in vs))
                                for vs in by_seed.values()
                            ]
                        )
                    )
                style = "-" if grid.arms[arm].baseline is not None else "--"
                ax.plot(epochs, values, style, marker="o", label=arm)
            if (dataset, regime, name) in ref:
                ax.axhline(scale * ref[(dataset, regime, name)], color="grey", linestyle=":", label=TEACHER)
            ax.set_title(f"{dataset} {regime}: {name}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
        axes[0][0].legend(fontsize=7)
        path = _save(fig, folder / f"curves-{dataset}-{regime}.png")
        written.append((f"{metric} per epoch: {dataset} {regime}", path))
    return written


def relation_figures(
    results: list[CellResult],
    grid: Grid,
    exp_dir: Path,
    folder: Path,
    n_images: int = 3,
    show_images: bool = True,
):
    """Teacher and student relation maps (with the run's relation module) for a few test images of the first
    finished InfoSAM cell of each setting."""
    plt = _pyplot()
    import torch

    from ..data.formats import open_dataset
    from ..data.prompts import eval_prompts
    from ..distill.relation import RelationModule
    from ..load import open_model
    from ..runs import RunDir
    from ..sam.transforms import get_transform
    from .plan import eval_config
    from .relmaps import crop_valid, relation_maps

    chosen: dict[tuple, CellResult] = {}
    for r in results:
        if grid.arms[r.cell.arm].baseline is None:
            continue
        chosen.setdefault((r.cell.dataset, r.cell.regime), r)
    written = []
    for (dataset, regime), r in sorted(chosen.items()):
        run = ExperimentDir(exp_dir).run(r.cell)
        if not run.is_dir():
            continue  # a results record keeps no weights: no relation maps
        relation_weights = RunDir(run).relation_weights()
        if relation_weights is None:
            continue
        relation = RelationModule.load(relation_weights)
        opened = open_model(
            run, teacher=True
        )  # the student and the base it was trained from, as training built it
        config, student, teacher = opened.config, opened.model, opened.teacher
        data = open_dataset(
            config.data.path,
            split=config.data.test_split,
            transform=get_transform(student.spec),  # the model family's own preprocessing (LiteMedSAM's too)
        )
        k = min(n_images, len(data))
        samples = [data[i] for i in range(k)]
        images = torch.stack([s["image"] for s in samples])
        masks = torch.stack([s["mask"] for s in samples])
        sizes = torch.stack([s["input_size"] for s in samples])
        e = eval_config(grid, dataset)
        prompts = eval_prompts(
            masks,
            [s["id"] for s in samples],
            seed=e.seed,
            mode=e.prompt,
            n_fg=e.n_fg,
            n_bg=e.n_bg,
            input_sizes=sizes,
        )
        size = student.image_encoder.img_size
        maps = {
            "teacher": crop_valid(relation_maps(teacher, relation, images, prompts), sizes, size),
            "student": crop_valid(relation_maps(student, relation, images, prompts), sizes, size),
        }
        # Without the image column (show_images=False) the figure holds only computed maps, no dataset pixels:
        # for reports committed where the data may not be redistributed.
        first = 1 if show_images else 0
        fig, axes = plt.subplots(k, 2 + first, figsize=(3 * (2 + first), 3 * k), squeeze=False)
        for i in range(k):
            name = Path(samples[i]["id"]).name
            if show_images:
                picture, truth = data.read_pair(i)
                axes[i][0].imshow(picture)
                axes[i][0].contour(truth, levels=[0.5], colors="yellow", linewidths=0.8)
                axes[i][0].set_title(name, fontsize=8)
            for j, who in enumerate(("teacher", "student"), start=first):
                axes[i][j].imshow(maps[who][i], cmap="magma")
                axes[i][j].set_title(f"{who} relation map" + ("" if show_images else f": {name}"), fontsize=8)
            for ax in axes[i]:
                ax.axis("off")
        fig.suptitle(f"{dataset} {regime}: {r.cell.arm}, seed {r.cell.seed}, {r.cell.part}", fontsize=9)
        path = _save(fig, folder / f"relation-{dataset}-{regime}.png")
        written.append((f"relation maps: {dataset} {regime}", path))
    return written
