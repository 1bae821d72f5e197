"""``infosam predict``: segment image files with a trained student (or zero-shot SAM) from a prompt."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import CLIError, add_threads_option

EPILOG = """\
examples:
  infosam predict runs/kvasir photo.jpg --box 120 80 560 400
  infosam predict runs/kvasir/export/student.safetensors photo.jpg --box 120 80 560 400
  infosam predict runs/kvasir test/images --masks test/masks --out preds
  infosam predict --model vit_b --checkpoint sam_vit_b_01ec64.pth photo.jpg --points 300 200 1 50 40 0
  infosam predict runs/cells --coco cells/test/annotations.json --out preds
  infosam predict runs/cells --boxes boxes.csv --out preds

Prompts are in each image's original pixel coordinates. Writes OUT/masks/<stem>.png (0/255, original size) and
OUT/overlays/<stem>.png; with --coco / --boxes, OUT/masks/<stem>/<object id>.png, OUT/overlays/<stem>.png (every
object of the image, each in its own colour) and OUT/results.json. Existing files are kept unless --overwrite.
"""


USAGE = """\
infosam predict RUN_DIR IMAGE [IMAGE ...] (--box X0 Y0 X1 Y1 | --points X Y LABEL [X Y LABEL ...] | --masks DIR)
                       [--out DIR] [options]
       infosam predict --model M --checkpoint C IMAGE [IMAGE ...] (--box ... | --points ... | --masks DIR) [options]
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment images with a trained student or zero-shot SAM",
        usage=USAGE,
        description="Segment images with a trained student (RUN_DIR) or, with --model, zero-shot SAM.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="RUN_DIR IMAGE",
        help="the run folder (or an `infosam export --format infosam` file), then image files or folders "
        "(with --model: image files or folders only)",
    )
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"), help="box prompt")
    prompt.add_argument(
        "--points",
        nargs="+",
        type=float,
        metavar="X Y LABEL",
        help="point prompts as triples x y label (label 1 foreground, 0 background)",
    )
    prompt.add_argument("--masks", type=Path, metavar="DIR", help="per image, the box of DIR/<stem>.png")
    prompt.add_argument(
        "--coco",
        type=Path,
        metavar="FILE",
        help="one mask per annotation of a COCO file, prompted by its bbox (no IMAGE arguments: the file names "
        "them); writes OUT/masks/<stem>/<annotation id>.png, OUT/overlays/<stem>.png (all the image's objects) and "
        "OUT/results.json (COCO results, RLE masks)",
    )
    prompt.add_argument(
        "--boxes",
        type=Path,
        metavar="CSV",
        help="one mask per row of a box list (columns image, x0, y0, x1, y1, optional object_id, image_id, "
        "category_id; image paths relative to the CSV); outputs as --coco",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("predictions"),
        help="output folder (default: predictions, git-ignored in this repository)",
    )
    parser.add_argument(
        "--model",
        help="zero-shot SAM without a run folder: vit_b, vit_l, vit_h, litemedsam, mobile_sam or tiny "
        "(needs --checkpoint)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="official SAM .pth, or 'bundled' for LiteMedSAM's packaged weights (with a run: replaces the path "
        "in its config.yaml)",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        help="PEFT weights file, or a weights folder holding one (e.g. RUN/weights/final), to load instead of "
        "the run's final ones",
    )
    parser.add_argument("--image-size", type=int, help="with --model: input side (default: the model's)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="foreground probability threshold t: a pixel is foreground when its logit > log(t / (1 - t)), 0 for 0.5 as in SAM",
    )
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda when available, else cpu)"
    )
    add_threads_option(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument(
        "--require-final",
        action="store_true",
        help="refuse a run that did not finish (default: use its newest checkpoint, with a warning)",
    )
    parser.set_defaults(func=run)


def parse_points(values: list[float]) -> tuple[tuple[tuple[float, float], ...], tuple[int, ...]]:
    """``[x, y, label, x, y, label, ...]`` -> (points, labels); CLIError unless triples with labels 0/1."""
    if len(values) % 3:
        raise CLIError(f"--points takes triples X Y LABEL; got {len(values)} number(s)")
    triples = [values[i : i + 3] for i in range(0, len(values), 3)]
    if any(label not in (0.0, 1.0) for _, _, label in triples):
        raise CLIError("--points labels must be 1 (foreground) or 0 (background)")
    return tuple((x, y) for x, y, _ in triples), tuple(int(label) for _, _, label in triples)


def run(args: argparse.Namespace) -> int:

    from ..load import is_student_file
    from ..predict import Prompt, predict
    from ..runs import RunDir

    run_dir, images = None, args.inputs
    objects = args.coco is not None or args.boxes is not None
    if args.model is None:
        if objects and len(args.inputs) > 1:
            raise CLIError("--coco / --boxes name their images: give only the run folder")
        if len(args.inputs) < 2 and not objects:
            raise CLIError("give a run folder and at least one image (or use --model for zero-shot SAM)")
        run_dir, images = args.inputs[0], args.inputs[1:]
        if not RunDir(run_dir).is_run() and not is_student_file(run_dir):
            raise CLIError(
                f"{run_dir} is neither a run folder (no config.yaml) nor an `infosam export --format infosam` "
                "file; for zero-shot SAM use --model"
            )
    elif args.checkpoint is None:
        raise CLIError("--model needs --checkpoint (the official SAM weights)")
    elif args.weights is not None:
        raise CLIError("--weights belongs to a run folder; it cannot be used with --model")
    if run_dir is not None and args.image_size is not None:
        raise CLIError("--image-size belongs to --model; a run's input size comes from its config")
    prompt = None
    if args.box is not None:
        prompt = Prompt(box=tuple(args.box))
    elif args.points is not None:
        points, labels = parse_points(args.points)
        prompt = Prompt(points=points, labels=labels)

    def progress(done: int, total: int) -> None:  # as infosam eval: one line, rewritten in place
        print(f"\r{done}/{total} images", end="", file=sys.stderr, flush=True)

    if objects:
        return _run_objects(args, run_dir, progress)

    try:
        written = predict(
            images, args.out, prompt=prompt, masks_dir=args.masks, **_model_options(args, run_dir, progress)
        )
    except FileExistsError as err:  # the dispatcher reports ValueError/FileNotFoundError; this one is ours
        raise CLIError(str(err)) from err
    print(file=sys.stderr)
    print(f"wrote {len(written)} mask(s) to {args.out / 'masks'} and overlays to {args.out / 'overlays'}")
    return 0


def _model_options(args: argparse.Namespace, run_dir: str | None, progress) -> dict:
    """The keyword arguments both predict paths (one mask per image, one per object) take from the command line:
    which model, on which device, where and how to write, and the progress callback."""
    import torch

    return {
        "run_dir": run_dir,
        "model_name": args.model,
        "checkpoint": args.checkpoint,
        "weights": args.weights,
        "image_size": args.image_size,
        "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "overwrite": args.overwrite,
        "threshold": args.threshold,
        "require_final": args.require_final,
        "on_image": progress,
    }


def _run_objects(args: argparse.Namespace, run_dir: str | None, progress) -> int:
    """--coco / --boxes: one mask per object and the COCO results JSON."""

    from ..predict import box_list_prompts, coco_object_prompts, predict_objects

    if args.model is not None and args.inputs:
        raise CLIError("--coco / --boxes name their images: give no IMAGE with --model")
    listed = coco_object_prompts(args.coco) if args.coco is not None else box_list_prompts(args.boxes)
    try:
        results = predict_objects(listed, args.out, **_model_options(args, run_dir, progress))
    except FileExistsError as err:
        raise CLIError(str(err)) from err
    print(file=sys.stderr)
    print(
        f"wrote {len(listed)} object mask(s) to {args.out / 'masks'}, overlays to {args.out / 'overlays'} and "
        f"{results}"
    )
    return 0
