"""``infosam eval``: score a SAM on a dataset with deterministic test prompts (e.g. the "SAM zero-shot" row)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from . import CLIError

PER_IMAGE_FILE = "per_image.csv"
SUMMARY_FILE = "summary.json"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate SAM on a dataset",
        description="Evaluate SAM on a dataset with deterministic prompts; writes per_image.csv and summary.json.",
    )
    p.add_argument("--model", default="vit_b", help="SAM spec: vit_b, vit_l, vit_h, tiny (default vit_b)")
    p.add_argument("--checkpoint", default=None, help="official SAM weights, e.g. sam_vit_b_01ec64.pth")
    p.add_argument("--data", required=True, help="dataset folder (Conv-LoRA CSV layout or images/ + masks/)")
    p.add_argument("--split", default=None, help="CSV name (test_Kvasir.csv) or split folder/list")
    p.add_argument("--prompt", choices=["box", "points"], default="box", help="test prompt (default box)")
    p.add_argument(
        "--points",
        nargs=2,
        type=int,
        default=[2, 3],
        metavar=("N_FG", "N_BG"),
        help="points per image (default 2 3)",
    )
    p.add_argument("--seed", type=int, default=42, help="prompt seed (default 42)")
    p.add_argument(
        "--compat", action="store_true", help="reproduce the release's metrics (clipped logits, 5 thresholds)"
    )
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--workers", type=int, default=2, help="data loader processes (default 2)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data.formats import open_dataset
    from ..evaluate import evaluate
    from ..model import build_base
    from ..sam.transforms import get_transform

    out = Path(args.out)
    targets = [out / PER_IMAGE_FILE, out / SUMMARY_FILE]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.overwrite:
        raise CLIError(f"output file(s) exist: {', '.join(existing)} (pass --overwrite to replace them)")
    if args.checkpoint is None and args.model != "tiny":
        raise CLIError(
            f"--checkpoint is required for --model {args.model} (random weights make no sense to score)"
        )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build_base(args.model, checkpoint=args.checkpoint)  # fast attention: same function, faster
    dataset = open_dataset(args.data, split=args.split, transform=get_transform(model.spec))

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} images", end="", file=sys.stderr, flush=True)

    rows, summary = evaluate(
        model,
        dataset,
        prompt=args.prompt,
        n_fg=args.points[0],
        n_bg=args.points[1],
        seed=args.seed,
        compat=args.compat,
        batch_size=args.batch_size,
        device=device,
        num_workers=args.workers,
        on_batch=progress,
    )
    print(file=sys.stderr)
    summary.update(model=args.model, checkpoint=args.checkpoint, data=str(args.data), split=args.split)
    out.mkdir(parents=True, exist_ok=True)
    write_rows(out / PER_IMAGE_FILE, rows)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(format_summary(summary))
    print(f"wrote {targets[0]} and {targets[1]}")
    return 0


def write_rows(path: Path, rows: list[dict]) -> None:
    """Per-image metrics as CSV (one row per image, columns id then the metric names)."""
    if not rows:
        path.write_text("", encoding="utf-8")
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def format_summary(summary: dict) -> str:
    """A two-line table of the mean metrics in percent (MAE as a fraction), like the paper's tables."""
    from ..metrics import METRIC_NAMES

    names = [n for n in METRIC_NAMES if n in summary]
    head = " ".join(f"{n:>7}" for n in ["images", *names])
    vals = [f"{summary['n_images']:>7d}"] + [
        f"{summary[n]:>7.4f}" if n == "MAE" else f"{100 * summary[n]:>7.1f}" for n in names
    ]
    return head + "\n" + " ".join(vals)
