"""``infosam report``: Markdown, CSV and figures from an experiment folder."""

from __future__ import annotations

import argparse

from . import add_threads_option


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="tables, paired statistics and figures of an experiment folder",
        description=(
            "Write report.md, CSV tables and PNG figures for EXP_DIR: mean +- std per arm, paired differences "
            "(InfoSAM arm minus its baseline) with hierarchical-bootstrap 95%% intervals, retention relative to "
            "the zero-shot teacher, per-epoch curves and relation maps."
        ),
    )
    p.add_argument("exp_dir", metavar="EXP_DIR", help="experiment folder written by infosam experiment")
    p.add_argument("--out", default=None, help="report folder (default EXP_DIR/report)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates (default 2000)")
    add_threads_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiment.report import write_report

    out = write_report(args.exp_dir, args.out, n_boot=args.n_boot)
    print(f"wrote {out / 'report.md'}")
    return 0
