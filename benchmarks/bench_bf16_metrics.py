"""What bf16 autocast changes in the masks of a real model on real images: the metric difference, not the time.

Scores LiteMedSAM (the bundled weights) zero-shot on the first N images of each dataset folder twice with the
library's evaluation (:func:`infosam.evaluate.evaluate`, box prompts seeded per image), once in float32 and once
under ``torch.autocast(dtype=bfloat16)`` (what ``train.precision: bf16`` runs its forward passes in), and prints per
dataset the mean IoU / Dice of both, their difference, and the largest per-image change. With ``--decoder-only``
the image embeddings are computed in float32 and only the prompt encoder + mask decoder run under autocast (the
decoder-only student's situation with the teacher cache on); on a CPU without native bf16 the full model is slow.

    OMP_NUM_THREADS=1 python benchmarks/bench_bf16_metrics.py /path/to/kvasir-seg /path/to/leaf-disease --n 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def score(model, dataset, *, bf16: bool, encode) -> tuple[list[dict], float]:
    from infosam.evaluate import evaluate

    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        rows, _ = evaluate(model, dataset, prompt="box", seed=42, batch_size=1, encode=encode)
    return rows, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "data", nargs="+", help="dataset folders (images/ + masks/), DATA:SPLIT for a split file or list"
    )
    parser.add_argument("--n", type=int, default=10, help="images per dataset (the first N by name)")
    parser.add_argument(
        "--decoder-only", action="store_true", help="embeddings in float32, decoder under bf16"
    )
    parser.add_argument("--cache", default="~/.cache/infosam/teacher", help="teacher cache (--decoder-only)")
    args = parser.parse_args(argv)

    from infosam.data.formats import open_dataset
    from infosam.model import build_base
    from infosam.sam.transforms import get_transform

    model = build_base("litemedsam", checkpoint="bundled").eval()
    transform = get_transform(model.spec)
    encode = None
    if args.decoder_only:
        from infosam.config import CacheConfig, Config, ModelConfig
        from infosam.model import make_teacher
        from infosam.prefix import open_student_prefix

        config = Config(model=ModelConfig(name="litemedsam", checkpoint="bundled"))
        config.cache = CacheConfig(enabled=True, dir=args.cache)
        prefix = open_student_prefix(config, make_teacher(model), teacher=model)

        def encode(images: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", enabled=False):
                return prefix.encode(images)

    print(
        f"threads {torch.get_num_threads()}, {'decoder only' if args.decoder_only else 'whole model'} in bf16"
    )
    print(
        "| dataset | images | IoU fp32 | IoU bf16 | diff (points) | Dice fp32 | Dice bf16 | diff (points) | "
        "max per-image abs Dice change | time fp32 s | time bf16 s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for spec in args.data:
        folder, _, split = spec.partition(":")
        dataset = open_dataset(folder, split=split or None, transform=transform)
        dataset = dataset.subset(list(range(min(args.n, len(dataset)))))
        fp32, t32 = score(model, dataset, bf16=False, encode=encode)
        bf16, t16 = score(model, dataset, bf16=True, encode=encode)
        mean = {
            k: (statistics.mean(r[k] for r in fp32), statistics.mean(r[k] for r in bf16))
            for k in ("IoU", "Dice")
        }
        worst = max(abs(a["Dice"] - b["Dice"]) for a, b in zip(fp32, bf16, strict=True))
        print(
            f"| {spec} | {len(fp32)} | {100 * mean['IoU'][0]:.2f} | {100 * mean['IoU'][1]:.2f} | "
            f"{100 * (mean['IoU'][1] - mean['IoU'][0]):+.2f} | {100 * mean['Dice'][0]:.2f} | "
            f"{100 * mean['Dice'][1]:.2f} | {100 * (mean['Dice'][1] - mean['Dice'][0]):+.2f} | "
            f"{100 * worst:.2f} | {t32:.1f} | {t16:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
