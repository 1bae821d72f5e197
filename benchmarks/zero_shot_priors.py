"""LiteMedSAM zero-shot with a tight box prompt, beside two prompt-only priors, on real image/mask folders.

For every image: the tight box of its ground-truth mask (all foreground pixels, inclusive corners) prompts the
bundled LiteMedSAM (``build_sam("litemedsam", checkpoint="bundled")``, fed by LiteMedSAM's own transform,
:class:`infosam.sam.transforms.LiteMedSamTransform`); its single-mask logits are brought back to the original
resolution and thresholded at 0. The priors use the same box and no image at all: "fill the box" predicts every
pixel of the box, "ellipse" the ellipse inscribed in it. IoU and Dice are computed per image at the original
resolution against the ground truth and averaged over images.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/zero_shot_priors.py --data ../shared/data/kvasir-seg --every 10
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/zero_shot_priors.py --data ../shared/data/leaf-disease

``--every K`` keeps every K-th image of a folder (sorted by name), ``--limit N`` the first N kept; ``--jsonl`` writes
one line per image. The table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def box_priors(box: tuple[int, int, int, int], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """``{"fill the box": (H, W) bool, "ellipse in the box": (H, W) bool}`` for an inclusive pixel box."""
    x0, y0, x1, y1 = box
    fill = np.zeros(shape, dtype=bool)
    fill[y0 : y1 + 1, x0 : x1 + 1] = True
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    a, b = (x1 - x0 + 1) / 2, (y1 - y0 + 1) / 2
    ellipse = ((xs - cx) / a) ** 2 + ((ys - cy) / b) ** 2 <= 1.0
    return {"fill the box": fill, "ellipse in the box": ellipse}


def iou_dice(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """IoU and Dice of two (H, W) bool masks (1.0 when both are empty)."""
    inter = int(np.logical_and(pred, gt).sum())
    total = int(pred.sum()) + int(gt.sum())
    union = total - inter
    return (1.0 if union == 0 else inter / union), (1.0 if total == 0 else 2 * inter / total)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", action="append", required=True, help="folder with images/ and masks/ (repeatable)"
    )
    parser.add_argument("--every", type=int, default=1, help="keep every K-th image (default 1: all)")
    parser.add_argument("--limit", type=int, default=None, help="at most N images per folder")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--jsonl", type=Path, default=None, help="also write one JSON line per image here")
    args = parser.parse_args(argv)

    from infosam.data.formats import list_folder_pairs
    from infosam.data.reading import read_image, read_mask
    from infosam.sam.build import build_sam
    from infosam.sam.forward import decode, encode_images
    from infosam.sam.transforms import get_transform

    torch.set_num_threads(args.threads)
    model = build_sam("litemedsam", checkpoint="bundled")
    transform = get_transform(model.spec)  # LiteMedSAM's own recipe (LiteMedSamTransform)
    out = args.jsonl.open("w") if args.jsonl else None
    tables = []
    for folder in args.data:
        root = Path(folder)
        pairs = [p for p in list_folder_pairs(root, None) if p.image_path and p.mask_path][:: args.every]
        pairs = pairs[: args.limit] if args.limit else pairs
        scores: dict[str, list[tuple[float, float]]] = {}
        start = time.perf_counter()
        for i, pair in enumerate(pairs):
            image, info = read_image(pair.image_path)
            gt = read_mask(pair.mask_path, info)
            ys, xs = np.nonzero(gt)
            if ys.size == 0:
                continue  # no object, no box prompt
            box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
            x, input_size = transform.image(image)
            prompt = transform.boxes(torch.tensor([box], dtype=torch.float32), gt.shape)
            with torch.no_grad():
                low_res = decode(model, encode_images(model, x[None]), boxes=prompt).low_res_logits
            logits = transform.postprocess(low_res, input_size, gt.shape)[0, 0]
            preds = {"LiteMedSAM (box)": logits.numpy() > 0, **box_priors(box, gt.shape)}
            row = {"data": root.name, "id": pair.id, "size": list(gt.shape)}
            for name, pred in preds.items():
                scores.setdefault(name, []).append(iou_dice(pred, gt))
                row[name] = scores[name][-1]
            if out:
                out.write(json.dumps(row) + "\n")
                out.flush()
            if (i + 1) % 25 == 0:
                print(f"{root.name}: {i + 1}/{len(pairs)} images", file=sys.stderr, flush=True)
        seconds = time.perf_counter() - start
        tables.append((root.name, len(scores.get("fill the box", [])), seconds, scores))
    if out:
        out.close()

    print(f"{'data':<14}{'images':>7}  {'prediction':<20}{'IoU':>7}{'Dice':>7}")
    for name, n, seconds, scores in tables:
        for method, values in scores.items():
            iou, dice = np.mean(values, axis=0)
            print(f"{name:<14}{n:>7}  {method:<20}{iou:>7.3f}{dice:>7.3f}")
        print(f"{'':<14}{'':>7}  ({seconds / max(n, 1):.2f} s per image, {args.threads} thread(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
