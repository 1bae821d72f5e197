"""How many torch threads should the commands use by default? Time the same work at 1, 2, ... threads.

Workloads (each in its own fresh subprocess, ``torch.set_num_threads(n)`` and ``OMP_NUM_THREADS=n``):

* ``train-tiny``: :func:`infosam.train.train` on a tiny SAM, adapter+decoder + InfoSAM, 16 synthetic 64 px images,
  batch 4, ``--steps`` optimizer steps (the demo's and the tests' kind of run), no evaluation.
* ``eval-tiny``: :func:`infosam.evaluate.evaluate` of a tiny SAM on 32 synthetic 64 px images, box prompts.
* ``eval-vit_b@256``: ViT-B (random weights: timing does not depend on them) at 256 px, ``--vitb-images`` images,
  box prompts; the size a CPU user scores at.

The machine's load average is printed before and after: on a machine shared with other processes the numbers say
what a user of such a machine gets, not what the hardware can do.

    python benchmarks/bench_threads.py                       # 1 and 2 threads, every workload
    python benchmarks/bench_threads.py --threads 1 2 4 --repeats 3 --workloads eval-vit_b@256
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKLOADS = ("train-tiny", "eval-tiny", "eval-vit_b@256")


def _worker(workload: str, threads: int, steps: int, vitb_images: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from infosam.config import config_from_dict
    from infosam.data.formats import open_dataset
    from infosam.data.synthetic import write_synthetic_dataset
    from infosam.evaluate import evaluate
    from infosam.model import build_base
    from infosam.sam.transforms import get_transform
    from infosam.train import train

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if workload == "train-tiny":
            write_synthetic_dataset(tmp / "data" / "train", 4 * steps, domain="target", seed=0)
            config = config_from_dict(
                {
                    "model": {"name": "tiny"},
                    "data": {"path": str(tmp / "data"), "train_split": "train"},
                    "train": {"batch_size": 4, "epochs": 1, "cpu": True, "save_every_steps": 10_000},
                    "eval": {"last_epochs": 0},
                    "output": str(tmp / "run"),
                }
            )
            config.validate()
            start = time.perf_counter()
            train(config)
            seconds = time.perf_counter() - start
            return {"seconds": seconds, "unit": f"{steps} steps"}
        name, size, n = ("tiny", None, 32) if workload == "eval-tiny" else ("vit_b", 256, vitb_images)
        write_synthetic_dataset(tmp / "data", n, domain="target", seed=0, size=64 if size is None else size)
        model = build_base(name, image_size=size, seed=0)
        dataset = open_dataset(tmp / "data", transform=get_transform(model.spec))
        evaluate(model, dataset.subset([0]), batch_size=1)  # warm-up (allocator, first-call dispatch)
        start = time.perf_counter()
        evaluate(model, dataset, batch_size=1)
        return {"seconds": time.perf_counter() - start, "unit": f"{n} images"}


def _run(workload: str, threads: int, steps: int, vitb_images: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--worker", workload, str(threads), str(steps), str(vitb_images)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {
            "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"rc {out.returncode}"
        }
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=2, help="runs per cell; the table shows the median")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps of train-tiny")
    parser.add_argument("--vitb-images", type=int, default=4, help="images of eval-vit_b@256")
    args = parser.parse_args()

    print(f"CPUs: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    print(f"| workload | threads | seconds (median of {args.repeats}) | all runs | vs 1 thread |")
    print("|---|---|---|---|---|")
    for workload in args.workloads:
        base = None
        for threads in args.threads:
            results = [_run(workload, threads, args.steps, args.vitb_images) for _ in range(args.repeats)]
            errors = [r["error"] for r in results if "error" in r]
            if errors:
                print(f"| {workload} | {threads} | error: {errors[0]} | | |")
                continue
            times = [r["seconds"] for r in results]
            median = statistics.median(times)
            base = median if threads == args.threads[0] else base
            ratio = f"{median / base:.2f}x" if base else ""
            runs = ", ".join(f"{t:.1f}" for t in times)
            print(
                f"| {workload} ({results[0]['unit']}) | {threads} | {median:.1f} | {runs} | {ratio} |",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        workload, threads, steps, vitb_images = (
            sys.argv[2],
            int(sys.argv[3]),
            int(sys.argv[4]),
            int(sys.argv[5]),
        )
        print(json.dumps(_worker(workload, threads, steps, vitb_images)))
    else:
        main()
