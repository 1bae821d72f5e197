"""``infosam serve``: a local web page comparing a fine-tuned student with the zero-shot teacher."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import CLIError, add_threads_option

EPILOG = """\
examples:
  infosam serve runs/kvasir                      # student and teacher side by side
  infosam serve runs/kvasir/export/student.safetensors --port 7861
  infosam serve --model vit_b --checkpoint sam_vit_b_01ec64.pth

Open the printed address, upload an image, click two corners of a box (or points). Local only unless --host.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="local web page: upload an image, prompt, compare student and teacher masks",
        description="Serve a local Gradio page to try a fine-tuned student (RUN_DIR or an exported file).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source", nargs="?", type=Path, metavar="RUN_DIR", help="run folder, or a file from infosam export"
    )
    parser.add_argument("--model", help="zero-shot SAM without a run (vit_b, vit_l, vit_h, tiny)")
    parser.add_argument(
        "--checkpoint", type=Path, help="pretrained weights (with --model; or the run's moved base)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: any free port)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: this machine only)"
    )
    parser.add_argument(
        "--share",
        action="store_true",
        help="also publish the page through a temporary public gradio.live link (Gradio's share=True; needs the "
        "internet; anyone with the link can use the models)",
    )
    parser.add_argument(
        "--max-pixels", type=float, default=40e6, help="refuse uploads above this many pixels (default 40e6)"
    )
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda when available, else cpu)"
    )
    add_threads_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..serve import serve

    if args.source is None and args.model is None:
        raise CLIError("give a run folder or exported file, or --model NAME --checkpoint FILE")
    serve(
        args.source,
        model=args.model,
        checkpoint=args.checkpoint,
        host=args.host,
        port=args.port,
        share=args.share,
        max_pixels=int(args.max_pixels),
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
    )
    return 0
