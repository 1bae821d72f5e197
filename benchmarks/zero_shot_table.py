"""The README's zero-shot table: MobileSAM and LiteMedSAM on leaf-disease, Kvasir-SEG and ECSSD, four prompts each.

Every number is what ``infosam eval`` reports for the same model, data, split and prompt options (seed 42, masks at
the original resolution, :func:`infosam.evaluate.evaluate` itself scores every setting): per dataset the pairs
are listed and checked as ``evaluate_run`` does, the model is opened once, and each image is encoded ONCE; the four
prompt settings decode from those embeddings (an in-memory float32 memo passed as ``evaluate(..., encode=...)``,
keyed by the content of each batch, so the batches, prompts and embeddings are bit for bit those of a plain
``infosam eval``; its teacher cache ``--cache`` is not used because it stores float16, which changes scores).
``tests/test_zero_shot_table.py`` checks that the per-image scores equal ``infosam eval``'s exactly.

Models: ``mobile_sam`` (official ``mobile_sam.pt``, 1024 px) and ``litemedsam`` (the bundled weights, 256 px).
Prompt settings (``infosam eval`` options):

* ``release``: noisy box, the paper release's rule (``--box-noise release``, the zero-shot default);
* ``tight_box``: the tight box of each ground-truth mask at its original resolution (``--tight-box``);
* ``points_1_0``: one foreground point (``--points 1 0``);
* ``points_2_3``: two foreground and three background points, the paper's Road rule (``--points 2 3``).

Datasets and image lists (the dataset folders lie under ``--data-root``, default ``$INFOSAM_DATA`` else
``../shared/data`` beside the repository):

* ``leaf``: leaf-disease, all 100 images;
* ``kvasir``: Kvasir-SEG, the 200 held-out images of the MobileSAM grid (``splits/kvasir_heldout200.csv``);
* ``ecssd``: ECSSD, the 200 held-out images of the LiteMedSAM encoder grid (``splits/ecssd_heldout200.csv``).

IoU and Dice everywhere, plus S-measure and adaptive E-measure (``S``, ``E_adp``) for Kvasir, in percent. The full
table (each MobileSAM image costs ~1-3 s to encode on one CPU core; everything else is cheap)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/zero_shot_table.py \\
        --mobile-sam-checkpoint ../shared/weights/mobile_sam.pt --json zero_shot_table.json

A quick look (first 3 images per list, LiteMedSAM only)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/zero_shot_table.py --models litemedsam --limit 3

Any single cell is reproduced by ``infosam eval``, e.g. MobileSAM, Kvasir, two + three points::

    infosam eval --model mobile_sam --checkpoint ../shared/weights/mobile_sam.pt --data ../shared/data/kvasir-seg \\
        --split splits/kvasir_heldout200.csv --points 2 3 --out eval/mobilesam-kvasir-points23

(``--tight-box`` for ``tight_box``, ``--points 1 0`` for ``points_1_0``, nothing or ``--box-noise release`` for
``release``; ``--model litemedsam --checkpoint bundled`` for LiteMedSAM; leaf-disease without ``--split``.)
The markdown table goes to stdout, with each setting's ``prompt_description``; progress to stderr; ``--json``
writes every summary (``{model: {dataset: {setting: summary}}}``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

MODELS = {"mobile_sam": "MobileSAM", "litemedsam": "LiteMedSAM"}
"""``--models`` name (the ``infosam eval --model`` spec) -> the table's name."""

SETTINGS = {
    "release": {"prompt": "box", "box_noise": "release"},
    "tight_box": {"prompt": "box", "box_noise": "none"},
    "points_1_0": {"prompt": "points", "n_fg": 1, "n_bg": 0},
    "points_2_3": {"prompt": "points", "n_fg": 2, "n_bg": 3},
}
"""Prompt setting -> the eval fields ``infosam eval`` sets from its options (``--box-noise release``,
``--tight-box``, ``--points 1 0``, ``--points 2 3``); the rest (seed 42, batch size, compat) are its defaults."""

SETTING_OPTIONS = {
    "release": "--box-noise release",
    "tight_box": "--tight-box",
    "points_1_0": "--points 1 0",
    "points_2_3": "--points 2 3",
}

DATASETS = {
    "leaf": ("leaf-disease", "leaf-disease", None, ("IoU", "Dice")),
    "kvasir": ("Kvasir-SEG", "kvasir-seg", "splits/kvasir_heldout200.csv", ("IoU", "Dice", "S", "E_adp")),
    "ecssd": ("ECSSD", "ecssd", "splits/ecssd_heldout200.csv", ("IoU", "Dice")),
}
"""``--datasets`` name -> (table name, folder under the data root, split file relative to the repository or None
for every pair, the metrics the table shows)."""


def default_data_root() -> Path:
    return Path(os.environ.get("INFOSAM_DATA", REPO.parent / "shared" / "data"))


def default_mobile_sam_checkpoint() -> Path:
    return Path(os.environ.get("INFOSAM_WEIGHTS", REPO.parent / "shared" / "weights")) / "mobile_sam.pt"


class EmbeddingMemo:
    """``encode`` for :func:`infosam.evaluate.evaluate`: the model's image embeddings of a batch, computed the first
    time that batch is seen (by :func:`infosam.sam.forward.encode_images`, as ``sam_forward`` does) and returned
    from memory (float32, unchanged) every time after. Keyed by the batch's content, so a batch of other images
    is never served another's embeddings."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.store: dict[tuple[str, ...], torch.Tensor] = {}
        self.computed = 0
        self.reused = 0
        self.seconds = 0.0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from infosam.cache import content_keys
        from infosam.sam.forward import encode_images

        key = tuple(content_keys(images))
        found = self.store.get(key)
        if found is None:
            start = time.perf_counter()
            found = encode_images(self.model, images)
            self.seconds += time.perf_counter() - start
            self.store[key] = found
            self.computed += images.shape[0]
        else:
            self.reused += images.shape[0]
        return found


def open_listing(data: str | Path, split: str | None, limit: int | None):
    """The dataset's pairs (``split`` a split file, None: every pair), the first ``limit`` of them when given."""
    from infosam.data.formats import open_dataset

    listing = open_dataset(data, split=split)
    return listing if limit is None else listing.subset(range(min(limit, len(listing))))


def score_dataset(
    opened,
    source,
    data: str | Path,
    split: str | None,
    settings: list[str],
    *,
    limit: int | None = None,
    device: str = "cpu",
    split_label: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, tuple[list[dict], dict]], EmbeddingMemo]:
    """``{setting: (rows, summary)}`` of an opened zero-shot model on ``data`` (``split``), as ``infosam eval``
    scores each setting (:func:`infosam.evaluate.evaluate_run`'s steps, one model, one encoding per image).

    ``opened``: ``infosam.load.open_model(source)``; ``source``: its :class:`~infosam.load.ModelSource` (whose
    default eval settings the prompt options override, as the command does). ``split_label``: what the summaries
    record as ``split`` (default ``split``)."""
    import logging

    from infosam.evaluate import check_eval_data, evaluate
    from infosam.sam.transforms import get_transform

    listing = open_listing(data, split, limit)
    empty = check_eval_data(listing)
    if empty:
        logging.getLogger(__name__).warning(
            "%s: %d of %d ground-truth masks are empty (%s)",
            data,
            len(empty),
            len(listing),
            ", ".join(empty[:5]),
        )
    model = opened.model
    dataset = listing.with_transform(get_transform(model.spec))
    memo = EmbeddingMemo(model)
    base = source.eval_settings()
    out = {}
    for name in settings:
        e = replace(base, **SETTINGS[name])
        start = time.perf_counter()

        def on_batch(done: int, total: int, name: str = name, start: float = start) -> None:
            if progress is not None:
                rate = (time.perf_counter() - start) / done
                progress(f"{name}: {done}/{total} images, {rate:.2f} s/image")

        rows, summary = evaluate(
            model, dataset, **e.scoring(), device=device, num_workers=0, on_batch=on_batch, encode=memo
        )
        summary.update(
            opened.description,
            data=str(data),
            split=split if split_label is None else split_label,
            cached_features=False,
        )
        out[name] = (rows, summary)
    return out, memo


def format_table(results: dict, models: list[str], datasets: list[str], settings: list[str]) -> str:
    """Markdown: one row per model x setting, per dataset its metrics in percent (one decimal); then each
    setting's ``prompt_description`` per model and the image counts."""
    head = ["model", "prompt"]
    for d in datasets:
        title, _, _, metrics = DATASETS[d]
        head += [f"{title} {m}" for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in models:
        for s in settings:
            cells = [MODELS[m], f"`{s}`"]
            for d in datasets:
                summary = results[m][d][s]
                cells += [f"{100 * summary[k]:.1f}" for k in DATASETS[d][3]]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    counts = ", ".join(f"{DATASETS[d][0]} {results[models[0]][d][settings[0]]['n_images']}" for d in datasets)
    lines.append(f"Images: {counts}. Prompts (seed {results[models[0]][datasets[0]][settings[0]]['seed']}):")
    lines.append("")
    for m in models:
        for s in settings:
            desc = results[m][datasets[0]][s]["prompt_description"]
            lines.append(f"- {MODELS[m]} `{s}` (`infosam eval {SETTING_OPTIONS[s]}`): {desc}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--data-root", type=Path, default=default_data_root())
    parser.add_argument("--mobile-sam-checkpoint", type=Path, default=default_mobile_sam_checkpoint())
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="first N images of each list")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="write every summary here")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    torch.set_num_threads(args.threads)

    from infosam.load import open_model, resolve

    checkpoints = {"mobile_sam": str(args.mobile_sam_checkpoint), "litemedsam": "bundled"}
    results: dict = {}
    for m in args.models:
        source = resolve(m, checkpoint=checkpoints[m])
        opened = open_model(source, device=args.device)
        results[m] = {}
        for d in args.datasets:
            _, folder, split, _ = DATASETS[d]
            where = f"[{m} {d}]"

            def progress(text: str, where: str = where) -> None:
                print(f"\r{where} {text}   ", end="", file=sys.stderr, flush=True)

            start = time.perf_counter()
            scored, memo = score_dataset(
                opened,
                source,
                args.data_root / folder,
                None if split is None else str(REPO / split),
                args.settings,
                limit=args.limit,
                device=args.device,
                split_label=split,
                progress=progress,
            )
            results[m][d] = {s: summary for s, (_, summary) in scored.items()}
            n = memo.computed
            print(
                f"\r{where} {n} images encoded once ({memo.seconds / max(n, 1):.2f} s/image), "
                f"{len(args.settings)} settings in {time.perf_counter() - start:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            del memo, scored
    print(format_table(results, args.models, args.datasets, args.settings))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
