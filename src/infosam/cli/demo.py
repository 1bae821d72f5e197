"""``infosam demo``: the whole pipeline on a tiny SAM and synthetic data, in about a minute of one CPU core."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import CLIError, add_threads_option


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="pretrain a tiny teacher, fine-tune it with InfoSAM on a shifted domain, compare (CPU, ~1 min)",
        description=(
            "Pretrain a tiny SAM on a synthetic source domain (the teacher), fine-tune an adapter+decoder student "
            "with InfoSAM on a shifted target domain through the training API, and compare zero-shot and "
            "fine-tuned metrics on held-out target images. Needs nothing but the installed package."
        ),
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder, must not exist (default: demo_out/<timestamp>)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few steps only (checks the plumbing, no claim)"
    )
    add_threads_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    start = time.perf_counter()
    try:
        result = run_demo(args.out, quick=args.quick, report=print)
    except FileExistsError as err:
        raise CLIError(str(err)) from err
    elapsed = time.perf_counter() - start
    zero_shot, fine_tuned = (row for row in result.rows if row["domain"] == "target test")
    print()
    print(result.table)
    print()
    verdict = "improves on" if fine_tuned["IoU"] > zero_shot["IoU"] else "does NOT improve on"
    print(
        f"InfoSAM {verdict} the zero-shot teacher on the target domain: IoU "
        f"{100 * zero_shot['IoU']:.1f} -> {100 * fine_tuned['IoU']:.1f}"
        + (" (quick mode: too short to mean anything)" if args.quick else "")
    )
    out = result.out_dir
    listing = [
        ("data/", "synthetic source and target sets (images/ + masks/)"),
        (str(result.teacher_checkpoint.relative_to(out)), "the teacher, an official-format SAM checkpoint"),
        (
            f"{result.run_dir.relative_to(out)}/",
            "the InfoSAM run (config.yaml, weights/, eval/, metrics.csv)",
        ),
        ("overlays/", "image | ground truth | teacher | InfoSAM, box prompt in yellow"),
        ("results.md, results.json", "the table above"),
    ]
    width = max(len(name) for name, _ in listing)
    print(f"\nwritten in {out} ({elapsed:.0f} s):")
    for name, what in listing:
        print(f"  {name.ljust(width)}  {what}")
    test_images = out / "data" / "target" / "test"
    print(
        f"\ntry: infosam predict {result.run_dir} {test_images / 'images'} --masks {test_images / 'masks'} "
        f"--out {out / 'predictions'}"
    )
    return 0
