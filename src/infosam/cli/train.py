"""``infosam train``: fine-tune a SAM student with PEFT (and InfoSAM), or resume a stopped run."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from . import CLIError, add_threads_option

EPILOG = """\
examples:
  infosam train --config configs/kvasir/adapter_infosam.yaml --set data.path=/data/polyp
  infosam train --config my.yaml --set train.lr=1e-4 --set infosam.enabled=false --output runs/baseline
  infosam train --resume runs/baseline
  torchrun --nproc_per_node 4 -m infosam train --config my.yaml          (4 GPUs: one process per GPU)

Relative paths (data.path, model.checkpoint, output) are read from the working directory.

The run folder holds config.yaml, metrics.csv, tensorboard/, checkpoints/, weights/, eval/ and summary.json.

config options (--set section.option=VALUE or in the YAML file; default in brackets):
"""


def _options_help() -> str:
    from ..config import option_docs

    return "\n".join(f"  {key} [{default}]\n      {doc}" for key, default, doc in option_docs())


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune SAM with PEFT (+ InfoSAM) or resume a run",
        description="Fine-tune a SAM student with PEFT, taught by the frozen pretrained SAM (InfoSAM), "
        "or train the plain PEFT baseline (--set infosam.enabled=false).",
        epilog=EPILOG + _options_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE.yaml",
        help="YAML config (may `inherit` others); without it, the defaults below plus --set",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one option, e.g. train.lr=1e-4 (value read as YAML; repeatable)",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its newest checkpoint, with its saved config",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="write into an existing non-empty run folder (never deleted)"
    )
    parser.add_argument(
        "--output", type=Path, metavar="DIR", help="run folder (overrides the config's output)"
    )
    add_threads_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..runs import RunDir
    from ..train import train

    if args.resume is not None:
        if args.config is not None or args.overrides or args.output is not None or args.overwrite:
            raise CLIError(
                "--resume continues a run with its saved config: it takes no --config/--set/--output/--overwrite"
            )
        previous = RunDir(args.resume)
        if previous.is_finished():
            steps = previous.read_summary().get("steps")
            print(
                f"run {previous.path} already finished ({steps} steps; results in {previous.summary_file}): "
                "nothing to resume"
            )
            return 0
        config = previous.read_config()
    else:
        overrides = list(args.overrides)
        if args.output is not None:
            overrides.append(f"output={args.output}")
        config = load_config(args.config, overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run_dir = train(
        config, resume=args.resume is not None, overwrite=args.overwrite, progress=not args.no_progress
    )
    if os.environ.get("RANK", "0") == "0":  # one report, not one per process
        run = RunDir(run_dir)
        print(f"run folder: {run.path}")
        print(f"  trained weights: {run.weights_dir()}")
        print(f"  metrics: {run.metrics_file}; test results: {run.summary_file}")
    return 0
