"""Time and peak memory of one SAM encoder attention (Meta's vs the fast modes), forward + backward and no-grad.

Default: a ViT-B global block (dim 768, 12 heads, 64x64 tokens, batch 1) with random relative positions; gradients
flow to the input, qkv/proj and rel_pos. Each mode runs in its own subprocess (peaks do not mix), one thread by
default, timed as process CPU time (robust on shared cores). Also prints each mode's max relative error against
Meta's output and input gradient, and which SDPA kernel ran.

    python benchmarks/bench_attention.py                      # ViT-B global block, 1024x1024 input
    python benchmarks/bench_attention.py --tokens 32 --reps 5 # 512x512 input
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODES = ("meta", "fold", "mask")


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def worker(mode: str, tokens: int, dim: int, heads: int, batch: int, reps: int) -> dict:
    import torch
    from segment_anything.modeling.image_encoder import Attention
    from torch.profiler import profile

    from infosam.sam.attention import enable_fast_attention

    torch.manual_seed(0)
    attn = Attention(dim, heads, use_rel_pos=True, rel_pos_zero_init=False, input_size=(tokens, tokens))
    x = torch.randn(batch, tokens, tokens, dim, requires_grad=True)
    ref = Attention.forward(attn, x)
    ref_grad = torch.autograd.grad(ref.square().mean(), x)[0]
    if mode != "meta":
        enable_fast_attention(attn, mode)
    out = attn(x)
    grad = torch.autograd.grad(out.square().mean(), x)[0]
    errors = [((a - b).abs().max() / b.abs().max()).item() for a, b in ((out, ref), (grad, ref_grad))]
    del ref, ref_grad, out, grad

    def step() -> None:
        attn(x).square().mean().backward()
        attn.zero_grad(set_to_none=True)
        x.grad = None

    step()
    base = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM
    times = []
    for _ in range(reps):
        t = time.process_time()
        step()
        times.append(time.process_time() - t)
    peak = _status_mib("VmHWM") - base
    nograd = []
    with torch.no_grad():
        for _ in range(reps):
            t = time.process_time()
            attn(x)
            nograd.append(time.process_time() - t)
    with profile() as prof, torch.no_grad():
        attn(x)
    kernels = sorted({e.key for e in prof.key_averages() if "_scaled_dot_product" in e.key})
    return {
        "fwd_bwd_s": statistics.median(times),
        "peak_growth_mib": peak,
        "no_grad_fwd_s": statistics.median(nograd),
        "rel_err_out": errors[0],
        "rel_err_grad": errors[1],
        "kernels": kernels or ["(explicit matmul/softmax)"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=64, help="tokens a side (64 = global block at 1024)")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = (args.tokens, args.dim, args.heads, args.batch, args.reps)
    if args.worker:
        print(json.dumps(worker(args.worker, *shape)))
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print(
        "| mode | fwd+bwd CPU s | peak growth MiB | no-grad fwd CPU s | rel err out / grad | SDPA kernel (no grad) |"
    )
    print("|---|---|---|---|---|---|")
    for mode in args.modes:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            mode,
            "--tokens",
            str(args.tokens),
            "--dim",
            str(args.dim),
        ]
        cmd += ["--heads", str(args.heads), "--batch", str(args.batch), "--reps", str(args.reps)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            print(f"| {mode} | error: {(proc.stderr.strip().splitlines() or ['failed'])[-1]} | | | | |")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"| {mode} | {r['fwd_bwd_s']:.2f} | {r['peak_growth_mib']:.0f} | {r['no_grad_fwd_s']:.2f} | "
            f"{r['rel_err_out']:.1e} / {r['rel_err_grad']:.1e} | {', '.join(r['kernels'])} |"
        )
    print(
        f"\n{args.batch}x{args.tokens}x{args.tokens} tokens, dim {args.dim}, {args.heads} heads, "
        f"{args.threads} thread(s), median of {args.reps}, {time.strftime('%Y-%m-%d')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
