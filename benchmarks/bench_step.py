"""Time one InfoSAM training step and its parts, and its peak memory, for attention/cache/checkpointing variants.

Each (preset, batch, variant) runs in its own fresh subprocess so peak memories never mix. A step is timed phase by
phase with the phases of ``infosam.step.train_step`` itself: teacher (``teacher_forward``: encoder under no grad, or
the teacher cache, then its decoder) -> student (``sam_forward``) -> losses (``step_losses``: structure loss +
InfoSAM terms) -> backward -> ``optimizer_step`` (Adam). Student = "adapter+decoder" (the paper's InfoSAM student).
Weights are random (timing does not depend on them).

Variants: ``plain`` (Meta's attention, no cache), ``fast`` (fold attention), ``cache`` (teacher embeddings read from
a TeacherCache filled during warm-up, as from the second epoch on), ``fast+cache``, ``fast+cache+ckpt`` (plus
activation checkpointing of every student encoder block), ``fast+cache+bf16`` (forward passes under bf16 autocast,
as ``train.precision: bf16``: not the same maths, a precision trade-off, reported apart).

A worker whose resident set passes ``--max-rss-gib`` stops itself and is reported as not fitting, so a variant that
needs more memory than the machine has is a table row instead of a machine brought down by swapping or the OOM
killer.

Peak memory: CPU = peak resident set (VmHWM, reset through /proc/self/clear_refs, else a 2 ms sampler) minus the
resident set after building the models; CUDA = torch.cuda.max_memory_allocated minus the allocation after building.
At batch 1 the InfoSAM terms are skipped (their Gram matrices need >= 2 images) and marked in the table.

    python benchmarks/bench_step.py --presets tiny vit_b@512 --batches 1 2 --variants plain fast
    python benchmarks/bench_step.py --device cuda --presets vit_b@1024 --batches 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

VARIANTS = ("plain", "fast", "cache", "fast+cache", "fast+cache+ckpt", "fast+cache+bf16")
PARTS = ("teacher", "student", "losses", "backward", "optimizer")


# --------------------------------------------------------------------------------------------- memory probes


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class _RSSGuard:
    """Stop this worker (exit code 3, a JSON error line) as soon as its resident set passes ``limit_mib``."""

    def __init__(self, limit_mib: float) -> None:
        self.limit = limit_mib
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            rss = _status_mib("VmRSS")
            if rss > self.limit:
                print(json.dumps({"error": f"does not fit: resident set passed {self.limit / 1024:.0f} GiB"}))
                sys.stdout.flush()
                os._exit(3)
            time.sleep(0.02)


class _PeakRSS:
    """Peak resident set of this process from now on: kernel VmHWM after a reset, else a sampling thread."""

    def __init__(self) -> None:
        self.peak = _status_mib("VmRSS")
        self._stop = threading.Event()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self._thread = None
        except OSError:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _status_mib("VmRSS"))

    def stop(self) -> float:
        if self._thread is None:
            return _status_mib("VmHWM")
        self._stop.set()
        self._thread.join()
        return self.peak


# --------------------------------------------------------------------------------------------- one variant


def _build(preset: str, batch: int, variant: str, device: str, cache_dir: str):
    import torch

    from infosam.cache import TeacherCache
    from infosam.distill.infosam import InfoSAMLoss
    from infosam.distill.relation import RelationModule
    from infosam.fingerprint import model_teacher_fingerprint
    from infosam.model import build_base, make_student, make_teacher

    name, _, size = preset.partition("@")
    base = {"image_size": int(size) if size else None, "attention": "fold" if "fast" in variant else "meta"}
    teacher = make_teacher(build_base(name, **base, seed=0)).to(device)
    student = build_base(name, **base, seed=0).to(device)
    make_student(student, "adapter+decoder", activation_checkpointing="ckpt" in variant)
    spec = student.spec
    relation = RelationModule(spec.prompt_embed_dim).to(device)
    infosam = InfoSAMLoss(relation) if batch >= 2 else None
    params = [p for p in student.parameters() if p.requires_grad] + list(relation.parameters())
    optimizer = torch.optim.Adam(params, lr=2e-4)
    cache = None
    if "cache" in variant:
        precision = "bf16" if "bf16" in variant else "no"
        cache = TeacherCache(cache_dir, model_teacher_fingerprint(teacher, None, precision))

    g = torch.Generator().manual_seed(0)
    s = spec.image_size
    images = torch.randn(batch, 3, s, s, generator=g).to(device)
    masks = torch.zeros(batch, 1, s, s)
    masks[:, :, s // 4 : s // 2, s // 3 : 2 * s // 3] = 1
    boxes = torch.tensor([[s // 3, s // 4, 2 * s // 3, s // 2]] * batch, dtype=torch.float32).to(device)
    batch_data = {
        "images": images,
        "masks": masks.to(device),
        "boxes": boxes,
        "bf16": "bf16" in variant,
    }
    return teacher, student, infosam, optimizer, cache, batch_data


def _step(parts, clock) -> dict[str, float]:
    import torch

    from infosam.sam.forward import sam_forward
    from infosam.step import optimizer_step, step_losses, teacher_forward

    teacher, student, infosam, optimizer, cache, b = parts
    prompts = {"boxes": b["boxes"]}
    times: dict[str, float] = {}
    t = clock()
    with torch.autocast(b["images"].device.type, dtype=torch.bfloat16, enabled=b["bf16"]):
        teacher_out = teacher_forward(teacher, b["images"], prompts, cache=cache)  # content hashing included
        times["teacher"], t = clock() - t, clock()
        student_out = sam_forward(student, b["images"], **prompts)
        times["student"], t = clock() - t, clock()
        terms = step_losses(student_out, teacher_out, b["masks"], objective=infosam)
        times["losses"], t = clock() - t, clock()
    terms["loss"].backward()
    times["backward"], t = clock() - t, clock()
    optimizer_step(optimizer, None)
    times["optimizer"] = clock() - t
    return times


def run_variant(
    preset: str, batch: int, variant: str, device: str, steps: int, warmup: int, max_rss_gib: float
) -> dict:
    """Build, warm up and time one variant in this process; returns medians (s) and peak memory (MiB)."""
    import torch

    _RSSGuard(max_rss_gib * 1024)

    cuda = device.startswith("cuda")

    def clock() -> float:
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    with tempfile.TemporaryDirectory() as cache_dir:
        parts = _build(preset, batch, variant, device, cache_dir)
        if cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
        else:
            base = _status_mib("VmRSS")
            probe = _PeakRSS()
        for _ in range(warmup):
            _step(parts, clock)
        records, cpu_times = [], []
        for _ in range(steps):
            c0 = time.process_time()
            records.append(_step(parts, clock))
            cpu_times.append(time.process_time() - c0)
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else probe.stop()
    result = {part: statistics.median(r[part] for r in records) for part in PARTS}
    result["step"] = statistics.median(sum(r.values()) for r in records)
    result["cpu"] = statistics.median(cpu_times)
    result.update(peak_mib=peak, growth_mib=peak - base, base_mib=base, threads=torch.get_num_threads())
    return result


# --------------------------------------------------------------------------------------------- driver


def _run_in_subprocess(args: argparse.Namespace, preset: str, batch: int, variant: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", preset, str(batch), variant, "--device", args.device]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--max-rss-gib", str(args.max_rss_gib)]
    env = dict(os.environ)
    threads = args.threads or (1 if args.device == "cpu" else None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return run_worker(cmd, env, result_code=3)


def run_worker(
    cmd: list[str], env: dict[str, str], *, result_code: int | None = None, label: str | None = None
) -> dict:
    """Run one worker subprocess (this table's or another step table's): the JSON on its last stdout line, or
    ``{"error": its last stderr line}`` when it failed. ``result_code``: a non-zero exit status whose worker still
    printed its result line (a worker that stopped at its memory limit). ``label``: also print
    ``"<label>: <wall> s wall, <result>"`` to stderr."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode == result_code and proc.stdout.strip():
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    elif proc.returncode != 0:
        result = {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    else:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    if label is not None:
        print(f"{label}: {time.perf_counter() - started:.0f} s wall, {result}", file=sys.stderr, flush=True)
    return result


def _table(rows: list[tuple[str, int, str, dict]]) -> str:
    head = "| preset | batch | variant | step s | CPU s | speed-up | peak growth MiB | memory | "
    head += " | ".join(p.replace("_", " ") + " s" for p in PARTS) + " |"
    lines = [head, "|" + "---|" * (8 + len(PARTS))]
    plain: dict[tuple[str, int], dict] = {}
    for preset, batch, variant, r in rows:
        if "error" in r:
            lines.append(
                f"| {preset} | {batch} | {variant} | error: {r['error']} |" + " |" * (4 + len(PARTS))
            )
            continue
        if variant == "plain":
            plain[(preset, batch)] = r
        ref = plain.get((preset, batch))
        speed = f"{ref['step'] / r['step']:.2f}x" if ref else "-"
        mem = f"{r['growth_mib'] / ref['growth_mib']:.2f}x" if ref and ref["growth_mib"] > 0 else "-"
        name = variant + (" (no InfoSAM terms)" if batch < 2 else "")
        cells = [
            preset,
            str(batch),
            name,
            f"{r['step']:.3f}",
            f"{r['cpu']:.3f}",
            speed,
            f"{r['growth_mib']:.0f}",
            mem,
        ]
        cells += [f"{r[p]:.3f}" for p in PARTS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--presets", nargs="+", default=["tiny"], help="spec[@image_size], e.g. tiny vit_b@512"
    )
    parser.add_argument("--batches", nargs="+", type=int, default=[2])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed steps first (they also fill the cache)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of each worker (default: 1 on CPU, where shared cores make OpenMP barriers spin for "
        "seconds and timings meaningless; pass the core count on a machine of your own)",
    )
    parser.add_argument(
        "--max-rss-gib",
        type=float,
        default=20.0,
        help="stop a variant whose resident set passes this many GiB and report it as not fitting (CPU)",
    )
    parser.add_argument("--worker", nargs=3, metavar=("PRESET", "BATCH", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup < 1 and any("cache" in v for v in args.variants):
        parser.error("--warmup must be >= 1 for cache variants (the warm-up fills the cache)")
    if args.worker:
        preset, batch, variant = args.worker
        result = run_variant(
            preset, int(batch), variant, args.device, args.steps, args.warmup, args.max_rss_gib
        )
        print(json.dumps(result))
        return 0
    rows = []
    started = time.perf_counter()
    for preset in args.presets:
        for batch in args.batches:
            for variant in args.variants:
                result = _run_in_subprocess(args, preset, batch, variant)
                rows.append((preset, batch, variant, result))
                # One JSON line per finished variant, so a long run stopped early still leaves its results.
                print(
                    json.dumps({"preset": preset, "batch": batch, "variant": variant, **result}),
                    file=sys.stderr,
                )
                sys.stderr.flush()
    print(_table(rows))
    print(
        f"\n{args.device}, {os.cpu_count()} logical CPUs, {time.strftime('%Y-%m-%d')}, "
        f"{args.steps} timed steps after {args.warmup} warm-up, total {time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
