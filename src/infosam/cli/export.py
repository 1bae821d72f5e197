"""``infosam export``: the fine-tuned student as a plain SAM checkpoint, a self-contained file, or ONNX graphs."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import CLIError, add_threads_option

EPILOG = """\
formats:
  sam      plain state dict in the base model's layout (decoder, bitfit, LayerNorms and LoRA merged);
           Meta's sam_model_registry[NAME](checkpoint=FILE) loads it. Adapter students: use infosam.
  infosam  one self-contained .safetensors (base + PEFT weights + specs) for any student; infosam predict,
           infosam serve and infosam.load_model(FILE) read it without the run folder.
  onnx     folder with encoder.onnx (one call per image) and decoder.onnx (prompts; dynamic points/boxes).

examples:
  infosam export runs/kvasir-lora --format sam --out lora.pth
  infosam export runs/kvasir --format infosam
  infosam export runs/kvasir --format onnx --out onnx/
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a trained student (plain SAM weights, self-contained file, ONNX)",
        description="Export the fine-tuned student of RUN_DIR for use without the run folder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run folder of infosam train")
    parser.add_argument(
        "--format", required=True, choices=("sam", "sam2", "infosam", "onnx"), help="export format"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output file (sam, infosam) or folder (onnx); default RUN_DIR/export/{sam.pth,student.safetensors,onnx}",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="base SAM .pth, replacing the path in the run's config.yaml (moved files)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument(
        "--require-final",
        action="store_true",
        help="refuse a run that did not finish (default: export its newest checkpoint, with a warning)",
    )
    add_threads_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import export_run
    from ..runs import CONFIG_FILE, RunDir

    if not RunDir(args.run_dir).is_run():
        raise CLIError(f"{args.run_dir} is not a run folder (no {CONFIG_FILE})")
    out = export_run(
        args.run_dir,
        args.format,
        args.out,
        checkpoint=args.checkpoint,
        overwrite=args.overwrite,
        require_final=args.require_final,
    )
    print(f"wrote {args.format} export to {out}")
    return 0
