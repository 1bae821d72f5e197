"""``infosam eval``: score a SAM on a dataset with deterministic test prompts (e.g. the "SAM zero-shot" row)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import CLIError


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

    from ..evaluate import PER_IMAGE_FILE, SUMMARY_FILE, evaluate_sam

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} images", end="", file=sys.stderr, flush=True)

    try:
        summary = evaluate_sam(
            args.model,
            args.data,
            args.out,
            checkpoint=args.checkpoint,
            split=args.split,
            overwrite=args.overwrite,
            prompt=args.prompt,
            n_fg=args.points[0],
            n_bg=args.points[1],
            seed=args.seed,
            compat=args.compat,
            batch_size=args.batch_size,
            device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
            num_workers=args.workers,
            on_batch=progress,
        )
    except FileExistsError as err:
        raise CLIError(str(err)) from err
    print(file=sys.stderr)
    print(format_summary(summary))
    out = Path(args.out)
    print(f"wrote {out / PER_IMAGE_FILE} and {out / SUMMARY_FILE}")
    return 0


def format_summary(summary: dict) -> str:
    """A two-line table of the mean metrics in percent (MAE as a fraction), like the paper's tables."""
    from ..metrics import METRIC_NAMES

    names = [n for n in METRIC_NAMES if n in summary]
    head = " ".join(f"{n:>7}" for n in ["images", *names])
    vals = [f"{summary['n_images']:>7d}"] + [
        f"{summary[n]:>7.4f}" if n == "MAE" else f"{100 * summary[n]:>7.1f}" for n in names
    ]
    return head + "\n" + " ".join(vals)
