"""``infosam report``: Markdown, CSV and figures from an experiment folder."""

from __future__ import annotations

import argparse

from ..stats import N_BOOT
from . import add_threads_option


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="tables, paired statistics and figures of an experiment folder",
        description=(
            "Write a Markdown report, CSV tables and PNG figures for EXP_DIR: mean +- std per arm, paired "
            "differences (InfoSAM arm minus its baseline) with hierarchical-bootstrap 95%% intervals, retention "
            "relative to the zero-shot teacher, per-epoch curves, relation maps, per-image scores, the split lists "
            "and how the numbers were made. A partly run grid is reported from its finished cells."
        ),
    )
    p.add_argument("exp_dir", metavar="EXP_DIR", help="experiment folder written by infosam experiment")
    p.add_argument(
        "--out",
        default=None,
        help=(
            "report folder (DIR/report.md with the tables and figures in DIR; default EXP_DIR/report), or a "
            "Markdown file NAME.md, whose tables and figures go into the folder NAME beside it "
            "(e.g. docs/results/litemedsam.md + docs/results/litemedsam/)"
        ),
    )
    p.add_argument("--n-boot", type=int, default=N_BOOT, help=f"bootstrap replicates (default {N_BOOT:,})")
    p.add_argument(
        "--no-images",
        action="store_true",
        help="relation-map figures without the dataset's images and masks (only computed maps), for a report "
        "committed where the data may not be copied",
    )
    add_threads_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiment.report import write_report

    markdown = write_report(args.exp_dir, args.out, n_boot=args.n_boot, show_images=not args.no_images)
    print(f"wrote {markdown}")
    return 0
