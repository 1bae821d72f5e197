"""MobileSAM (1024 px) beside LiteMedSAM (256 px): the CPU cost of one grid cell, measured in one run, one table.

Eight rows: model (``mobile_sam`` with the official ``mobile_sam.pt`` / ``litemedsam`` with its ``bundled``
weights) x student (``decoder``: only the mask decoder trains; ``adapter+decoder``: Adapter in TinyViT stages 2-3,
``{adapter: {first_block: 2, ratio: 0.25, init: torch}}``, + the whole decoder) x InfoSAM on / off
(``infosam.enabled``). Every row is the real training step: the config is the model's own
(``configs/mobilesam/base.yaml`` or ``configs/litemedsam/base.yaml``) with ``cache.enabled: true`` (input cache,
teacher embedding cache, student-prefix cache, all in a fresh temporary folder), batch 4, the parts are built by
``infosam.train``'s own builder and each step is ``infosam.step.train_step``, data read through the input cache and
collated in the step's time. Each row runs in a fresh subprocess (empty caches, its own memory), real images of
``--data``.

    OMP_NUM_THREADS=1 python benchmarks/bench_mobilesam.py --data /path/to/leaf-disease \\
        --weights /path/to/mobile_sam.pt --images 8 --steps 5 --warmup 1 --eval-images 4

(``--weights`` defaults to ``$INFOSAM_WEIGHTS/mobile_sam.pt``.) All times are CPU seconds of the worker process
(``time.process_time``: every thread; equal to wall time with one thread, the grid's setting). Columns:

- ``warm s``: one training step at batch 4 with every cache filled (as from epoch 2 on): the median of
  ``--steps`` timed steps, after ``--warmup`` untimed ones;
- ``cold s``: the very first step (images 0-3): it decodes the images into the input cache, runs the teacher encoder
  into the teacher cache and the student's frozen encoder prefix into the prefix store (plus first-call costs);
- ``fill s/img``: what filling the caches costs per image: (sum of the first epoch's steps over ``--images`` images
  - their count x ``warm s``) / ``--images``;
- ``score s/img``: ``infosam.evaluate.evaluate`` as training calls it (the config's eval section: the release's
  noisy box; the student-prefix cache's encoder) on ``--eval-images`` other images, twice (the first pass fills
  the prefix store for them, as a cell's first evaluation does); the mean per image of the two passes;
- ``cell min``: the projected CPU minutes of a 10-epoch cell on 80 training images at batch 4 with two
  evaluations of 20 images: (200 x warm + 80 x fill + 2 x 20 x score) / 60;
- ``GFLOP``: floating-point operations of one warm step's forward + backward, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention; element-wise work uncounted);
- ``bound s``: GFLOP / the peak rate, measured in this run (the parent, same thread count) as the best of a few
  large float32 matmuls (printed above the table) in CPU seconds: the least a warm step could take;
- ``achieved``: bound s / warm s, the fraction of the matmul peak the step reaches;
- ``peak RSS MiB``: the worker's peak resident set over its whole life (kernel VmHWM: models, caches, steps,
  evaluation): the RAM one cell needs; ``growth MiB``: the peak growth over the built models during the steps
  (bench_step's probe, as the other step tables).

With every cache on, a warm step of either model runs the same network: TinyViT stages 2-3 at 64 x 64 tokens (both
encoders have that grid there) + the decoder on 256 x 64 x 64 embeddings, so the two models' warm and GFLOP
columns agree up to noise; the input side (1024 vs 256 px) shows in the cold step and the cache fill (patch
embedding + stages 0-1 of the student, and the teacher's whole encoder with InfoSAM) and in scoring.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import (  # noqa: E402  (the same memory probe and worker runner as the other step tables)
    _PeakRSS,
    _status_mib,
    run_worker,
)

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "mobile_sam": ("configs/mobilesam/base.yaml", 1024),
    "litemedsam": ("configs/litemedsam/base.yaml", 256),
}
STUDENTS = {
    "decoder": {},
    "adapter+decoder": {"adapter": {"first_block": 2, "ratio": 0.25, "init": "torch"}},
}
VARIANTS = tuple(f"{m}:{s}:{d}" for m in MODELS for s in STUDENTS for d in ("infosam", "plain"))
BATCH = 4
# The projected cell: 10 epochs x 80 images at batch 4, two evaluations of 20 images.
CELL_STEPS, CELL_IMAGES, CELL_EVAL = 200, 80, 2 * 20


# --------------------------------------------------------------------------------------------- one variant


def _config(variant: str, data: str, weights: str, tmp: str):
    from infosam.config import config_from_dict, deep_merge, read_yaml_tree

    model, student, distill = variant.split(":")
    checkpoint = weights if model == "mobile_sam" else "bundled"
    tree = deep_merge(
        read_yaml_tree(ROOT / MODELS[model][0]),
        {
            "output": str(Path(tmp) / "run"),
            "model": {"checkpoint": checkpoint},
            "data": {"path": data},
            "peft": {"methods": student, "options": STUDENTS[student]},
            "infosam": {"enabled": distill == "infosam"},
            "cache": {"enabled": True, "dir": str(Path(tmp) / "teacher")},
            "train": {"batch_size": BATCH, "grad_accum": 1, "cpu": True, "precision": "no"},
        },
    )
    config = config_from_dict(tree)
    config.validate()
    return config


def _datasets(config, images: int, eval_images: int):
    """The first ``images`` pairs (training) and the next ``eval_images`` (scoring), each read through the input
    cache as ``infosam.train.open_split`` reads a split (the folder's one split: leaf-disease has no train/test)."""
    from infosam.data.formats import open_dataset
    from infosam.data.input_cache import CachedInputDataset, open_input_store
    from infosam.sam.transforms import get_transform
    from infosam.train.build import inputs_dir, model_spec

    full = open_dataset(config.data.path, transform=get_transform(model_spec(config)))
    if len(full) < images + eval_images:
        raise SystemExit(f"{config.data.path}: {len(full)} pairs, need --images + --eval-images")
    train = full.subset(list(range(images)))
    test = full.subset(list(range(images, images + eval_images)))
    store = inputs_dir(config)
    return (
        CachedInputDataset(train, open_input_store(store, train)),
        CachedInputDataset(test, open_input_store(store, test)),
    )


def run_variant(
    variant: str, data: str, weights: str, images: int, steps: int, warmup: int, eval_images: int
):
    import torch
    from accelerate import Accelerator
    from torch.utils.flop_counter import FlopCounterMode

    from infosam.data.loading import collate
    from infosam.evaluate import evaluate
    from infosam.step import train_step
    from infosam.train.build import build_parts

    with tempfile.TemporaryDirectory() as tmp:
        config = _config(variant, data, weights, tmp)
        train_set, test_set = _datasets(config, images, eval_images)
        accelerator = Accelerator(mixed_precision="no", cpu=True)
        parts = build_parts(config, accelerator, CELL_STEPS, None)  # as infosam.train builds a run
        torch.manual_seed(config.train.seed)
        batches = [list(range(i, i + BATCH)) for i in range(0, images - images % BATCH, BATCH)]
        counter = {"n": 0}

        def step(indices: list[int], epoch: int) -> float:
            c0 = time.process_time()
            batch = collate([train_set[i] for i in indices])
            train_step(parts.step, batch, epoch=epoch, index=counter["n"], window=1, sync=True)
            counter["n"] += 1
            return time.process_time() - c0

        base = _status_mib("VmRSS")
        probe = _PeakRSS()
        cold = [step(b, 0) for b in batches]  # epoch 1: every cache fills
        warm = []
        for k in range(warmup + steps):
            seconds = step(batches[k % len(batches)], 1 + k // len(batches))
            if k >= warmup:
                warm.append(seconds)
        growth = probe.stop() - base
        warm_s = statistics.median(warm)
        # one more warm step: forward + backward (+ Adam, uncounted)
        with FlopCounterMode(display=False, custom_mapping=_cpu_attention_flops()) as flops:
            step(batches[0], 99)
        prefix = parts.step.caches.prefix
        scoring = []
        # as a cell's two evaluations: the first fills the prefix store for the test images
        for _ in range(2):
            c0 = time.process_time()
            try:
                with torch.no_grad():
                    _, summary = evaluate(
                        parts.student,
                        test_set,
                        **config.eval.scoring(),
                        device=accelerator.device,
                        encode=prefix.encode if prefix is not None else None,
                    )
            finally:
                parts.student.train()
            scoring.append((time.process_time() - c0) / eval_images)
    fill = (sum(cold) - len(cold) * warm_s) / (len(cold) * BATCH)
    score = statistics.mean(scoring)
    return {
        "warm": warm_s,
        "warm_all": warm,
        "cold": cold[0],
        "cold_all": cold,
        "fill": fill,
        "score": score,
        "score_passes": scoring,
        "cell_min": (CELL_STEPS * warm_s + CELL_IMAGES * fill + CELL_EVAL * score) / 60,
        "flops": flops.get_total_flops(),
        "peak_rss_mib": _status_mib("VmHWM"),
        "growth_mib": growth,
        "threads": torch.get_num_threads(),
        "trainable": sum(p.numel() for p in parts.step.trainee.parameters() if p.requires_grad),
        "eval_summary": {k: v for k, v in summary.items() if isinstance(v, (int, float, str))},
    }


def _cpu_attention_flops() -> dict:
    """FLOP formulas of CPU SDPA (TinyViT's attention in training): torch's counter knows the CUDA kernels'
    names only, so the CPU flash kernel and its backward would count 0. The same formulas as the CUDA ones."""
    import torch
    from torch.utils import flop_counter

    def forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query.shape, key.shape, value.shape)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)

    forward._get_raw = backward._get_raw = True  # tensors in, as FlopCounterMode passes them
    aten = torch.ops.aten
    return {
        aten._scaled_dot_product_flash_attention_for_cpu: forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: backward,
    }


# --------------------------------------------------------------------------------------------- driver


def peak_rate(n: int = 2048, repeats: int = 3) -> float:
    """FLOP per CPU second of the best of ``repeats`` float32 ``n x n`` matmuls (2 n^3 each), this process's
    thread count."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # noqa: B018  (first call: allocation, thread pool)
    best = float("inf")
    for _ in range(repeats):
        c0 = time.process_time()
        a @ b  # noqa: B018
        best = min(best, time.process_time() - c0)
    return 2 * n**3 / best


def _table(rows: list[tuple[str, dict]], peak: float) -> str:
    head = (
        "| model | px | student | InfoSAM | warm s | cold s | fill s/img | score s/img | cell min | GFLOP | bound s "
        "| achieved | peak RSS MiB | growth MiB |"
    )
    lines = [head, "|" + "---|" * 14]
    for variant, r in rows:
        model, student, distill = variant.split(":")
        cells = [model, str(MODELS[model][1]), student, "yes" if distill == "infosam" else "no"]
        if "error" in r:
            lines.append("| " + " | ".join(cells) + f" | error: {r['error']} |" + " |" * 9)
            continue
        bound = r["flops"] / peak
        cells += [f"{r[k]:.2f}" for k in ("warm", "cold", "fill", "score")]
        cells += [
            f"{r['cell_min']:.1f}",
            f"{r['flops'] / 1e9:.1f}",
            f"{bound:.2f}",
            f"{bound / r['warm']:.0%}",
        ]
        cells += [f"{r['peak_rss_mib']:.0f}", f"{r['growth_mib']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder with images/ and masks/")
    parser.add_argument(
        "--weights",
        default=os.path.join(os.environ.get("INFOSAM_WEIGHTS", "."), "mobile_sam.pt"),
        help="MobileSAM's mobile_sam.pt (default: $INFOSAM_WEIGHTS/mobile_sam.pt)",
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument(
        "--images", type=int, default=8, help="training images (the first epoch fills caches)"
    )
    parser.add_argument("--steps", type=int, default=5, help="timed warm steps per variant (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm steps before them")
    parser.add_argument("--eval-images", type=int, default=4, help="images scored (twice) per variant")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--oom-first",
        action="store_true",
        help="ask Linux to kill the benchmark's workers first when memory runs out (beside an experiment grid)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.images < BATCH:
        parser.error(f"--images must be at least the batch, {BATCH}")
    if args.worker:
        if args.oom_first:
            try:
                Path("/proc/self/oom_score_adj").write_text("1000")
            except OSError:
                pass
        from infosam.runtime import tune_allocator

        tune_allocator()  # as the infosam commands do
        result = run_variant(
            args.worker, args.data, args.weights, args.images, args.steps, args.warmup, args.eval_images
        )
        print(json.dumps(result))
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    import torch

    torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    peak = peak_rate()
    rows = []
    for variant in args.variants:
        cmd = [sys.executable, __file__, "--worker", variant, "--data", args.data, "--weights", args.weights]
        cmd += ["--images", str(args.images), "--steps", str(args.steps), "--warmup", str(args.warmup)]
        cmd += ["--eval-images", str(args.eval_images)]
        if args.oom_first:
            cmd.append("--oom-first")
        rows.append((variant, run_worker(cmd, env, label=variant)))
    load = os.getloadavg()
    print(
        f"threads {env['OMP_NUM_THREADS']}, batch {BATCH}, {args.images} training images, {args.steps} timed warm "
        f"steps (median) after {args.warmup}, {args.eval_images} images scored twice; load average at the end "
        f"{load[0]:.2f} {load[1]:.2f}"
    )
    print(f"peak rate: {peak / 1e9:.1f} GFLOP per CPU second (best float32 2048 x 2048 matmul)")
    print(
        f"cell min = ({CELL_STEPS} x warm + {CELL_IMAGES} x fill + {CELL_EVAL} x score) / 60 "
        "(10 epochs x 80 images at batch 4, two evaluations of 20 images); bound s = GFLOP / peak rate; "
        "achieved = bound s / warm s; times in CPU seconds"
    )
    print(_table(rows, peak))
    if args.json:
        Path(args.json).write_text(json.dumps({"peak_flop_per_s": peak, "rows": dict(rows)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
