"""``infosam demo``: the whole pipeline on a tiny SAM and synthetic data, in a few minutes of one CPU core."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import CLIError, add_threads_option


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="pretrain a tiny teacher, fine-tune it with and without InfoSAM on a shifted domain, compare (CPU)",
        description=(
            "Pretrain a tiny SAM on a synthetic source domain (the teacher), fine-tune an adapter+decoder student "
            "with InfoSAM on a shifted target domain through the training API, and the same student without the "
            "teacher (plain PEFT, same seed and steps), then compare zero-shot, plain PEFT and InfoSAM on held-out "
            "target images, with captioned overlays. Needs nothing but the installed package."
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
    from ..demo import BASELINE_ROW, INFOSAM_ROW

    by_name = {row["model"]: row for row in result.rows if row["domain"] == "target test"}
    zero_shot, baseline, infosam = by_name["teacher zero-shot"], by_name[BASELINE_ROW], by_name[INFOSAM_ROW]
    print()
    print(result.table)
    print()
    iou = {
        name: 100 * row["IoU"] for name, row in (("zero", zero_shot), ("plain", baseline), ("info", infosam))
    }
    note = " (quick mode: too short to mean anything)" if args.quick else ""
    print(
        f"Fine-tuning {'improves on' if iou['plain'] > iou['zero'] else 'does NOT improve on'} the zero-shot teacher "
        f"on the target domain: IoU {iou['zero']:.1f} -> {iou['plain']:.1f} (plain PEFT), {iou['info']:.1f} (InfoSAM)"
        + note
    )
    gap = iou["info"] - iou["plain"]
    verdict = "beats" if gap > 0 else ("ties with" if gap == 0 else "does NOT beat")
    print(
        f"InfoSAM {verdict} plain PEFT (same seed, data order and steps): IoU {gap:+.1f} points on the held-out "
        "target images; one seed on a toy task, so this shows what the method does, not evidence that it helps"
        + note
    )
    out = result.out_dir
    listing = [
        ("data/", "synthetic source and target sets (images/ + masks/)"),
        (str(result.teacher_checkpoint.relative_to(out)), "the teacher, an official-format SAM checkpoint"),
        (
            f"{result.run_dir.relative_to(out)}/",
            "the InfoSAM run (config.yaml, weights/, eval/, metrics.csv)",
        ),
        (
            f"{result.baseline_run_dir.relative_to(out)}/",
            "the plain PEFT run (no teacher), same seed and steps",
        ),
        (
            "overlays/",
            "image | ground truth | teacher | plain PEFT | InfoSAM (captioned), box prompt in yellow",
        ),
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
