"""``infosam data check PATH``: read every image/mask pair and report all problems at once."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="inspect datasets", description="Inspect datasets.")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = sub.add_parser(
        "check",
        help="read every image/mask pair and report all problems",
        description="Read every image/mask pair of a dataset (Conv-LoRA CSV layout or images/ + masks/ folders), "
        "or every object of a COCO instance file or of instance-label images (images/ + labels/), and report "
        "every problem with its file (and annotation id): missing or unreadable files, size mismatches, empty masks, "
        "masks that are not two-level, a split with no pairs. Exit code 1 when there are errors.",
    )
    check.add_argument("path", help="dataset folder")
    check.add_argument(
        "--split",
        default=None,
        help="CSV name (train.csv, test_Kvasir.csv) or split folder/list (default: every split, one by one: each "
        "CSV of a Conv-LoRA folder, each <split>/images + masks folder; or the whole images/ + masks/ folder)",
    )
    check.add_argument(
        "--categories",
        nargs="+",
        default=None,
        metavar="NAME",
        help="COCO: check only annotations of these category names (as data.categories; default all)",
    )
    check.add_argument(
        "--include-crowd",
        action="store_true",
        help="COCO: check crowd annotations (iscrowd=1) too (as data.include_crowd; default: skipped, counted)",
    )
    check.add_argument("--workers", type=int, default=None, help="reader threads (default: min(8, CPUs))")
    check.add_argument("--limit", type=int, default=200, help="list at most this many problems (default 200)")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from ..data.check import check_dataset_splits  # imported on use: it pulls in torch

    reports = check_dataset_splits(
        args.path,
        split=args.split,
        workers=args.workers,
        categories=args.categories,
        include_crowd=args.include_crowd,
    )
    for report in reports:
        print(report.format(limit=args.limit))
    if len(reports) > 1:
        bad = [r.split for r in reports if not r.ok]
        print(f"{len(reports)} splits checked: " + (f"errors in {', '.join(bad)}" if bad else "all valid"))
    return 0 if all(r.ok for r in reports) else 1
