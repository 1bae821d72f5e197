"""``infosam experiment``: run (or continue) a grid of training runs and score them."""

from __future__ import annotations

import argparse
import sys

from . import CLIError, add_threads_option


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "experiment",
        help="run a grid of training runs (datasets x arms x seeds x splits) and score them",
        description=(
            "Run every cell of GRID.yaml as an ordinary training run, then score its student on its test split "
            "and on the retention datasets, and the zero-shot teacher once per split. Re-running skips finished "
            "cells and resumes a half-finished one; several processes may run on one --out at once (a cell another process holds is left to it); with a `results` folder in the grid, every finished cell is also "
            "recorded there (small, committable) and a recorded cell counts as finished. The grid format is documented in infosam.experiment.grid."
        ),
    )
    p.add_argument("grid", metavar="GRID.yaml", help="grid file")
    p.add_argument("--out", default=None, help="experiment folder (default runs/experiments/<grid name>)")
    p.add_argument("--progress", action="store_true", help="show each run's step progress bar")
    p.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="run only the K-th of N shares of the grid (every N-th seed/dataset/part group, all its arms), a fixed "
        "split of the work between N processes (K = 1..N, e.g. one per GPU with CUDA_VISIBLE_DEVICES) on the same "
        "--out. Without --shard, processes on the same --out share the work as they go: each takes the next cell "
        "that no other process holds, so none waits while cells are left",
    )
    p.add_argument(
        "--record-only",
        action="store_true",
        help="train and score nothing: copy the finished cells and teacher scores of --out into the grid's "
        "results record (the grid file's `results` folder, meant to be committed); add the checksum list "
        "(SHA256SUMS) to records written before records carried one, and re-record a cell whose files changed on "
        "purpose (from --out when it holds the finished cell, else over the record's files as they are)",
    )
    add_threads_option(p)
    p.set_defaults(func=run)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def run(args: argparse.Namespace) -> int:
    import logging

    from ..experiment import run_experiment

    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def progress(p) -> None:
        if p.busy:
            what = "another process is running it (left to that process)"
        else:
            what = "already done" if p.skipped else f"done in {_duration(p.seconds)}"
        left = "" if p.eta_seconds is None else f", about {_duration(p.eta_seconds)} left"
        print(f"[{p.done}/{p.total}] {p.cell.name}: {what}{left}", file=sys.stderr, flush=True)

    shard = None
    if args.shard is not None:
        k, _, n = args.shard.partition("/")
        try:
            shard = (int(k), int(n))
        except ValueError:
            raise CLIError(f"--shard must be K/N with 1 <= K <= N (e.g. 1/2), got {args.shard!r}") from None
        if not 1 <= shard[0] <= shard[1]:
            raise CLIError(f"--shard must be K/N with 1 <= K <= N (e.g. 1/2), got {args.shard!r}")
    out = run_experiment(
        args.grid,
        args.out,
        on_progress=progress,
        train_progress=args.progress,
        shard=shard,
        record_only=args.record_only,
    )
    print(f"experiment folder: {out}\nreport: infosam report {out}")
    return 0
