"""Where a grid cell's RAM goes: peak resident set per phase of one MobileSAM cell, as the grid runs it.

One worker process (fresh, one thread) runs a cell of ``experiments/mobilesam/grid.yaml`` the way
``infosam experiment`` does, through the package's own functions: the cell's resolved config (``cell_config``: base,
arm, grid overrides) with a small image list, ``infosam.train.train`` (its builder, its loop, its evaluation after an
epoch, its checkpoints), then the runner's scoring (``infosam.experiment.scoring.score``: ``evaluate_run`` on the
cell's test images and the ECSSD retention images, through the cached encoder prefix). Every cache is on and starts
empty in a temporary folder (teacher embeddings, student prefix, decoded inputs), so the first epoch fills them as a
grid's first cell of a dataset does, and the later epochs read them as every other cell does. ``--cells 2`` runs a second cell (the next
seed: warm caches, a fresh run folder) in the same process, as a grid process runs cell after cell.

Each phase's peak is the kernel's VmHWM after a reset through ``/proc/self/clear_refs`` at the phase's start, so
the peaks are exact (no sampling); ``rss`` is the resident set at the phase's end. Phases: ``import`` (Python,
torch, infosam); ``open data``; ``build`` (student, teacher, relation module, Adam, caches opened: train's
``build_parts``); each step apart as ``data`` (the loader's batch), ``keys`` (content hashes), ``teacher``
(``teacher_forward``: in the first epoch the teacher's encoder fills its cache), ``student + losses`` (the forward:
the student's prefix read or filled, stages 2-3, decoders, losses), ``backward`` and ``optimizer`` (Adam, logging);
``epoch end`` (weights and checkpoint written); ``eval in training`` (``evaluate`` on the test images after an
evaluated epoch); ``train return``; ``score test`` / ``score retention`` (the runner's ``scoring.score``). The worker also
prints what the run computed (sha256 of metrics.csv's losses, of the weights files and of the scorings'
per_image.csv), so two runs can be compared bitwise; ``--no-release`` makes ``infosam.runtime.release_memory`` a
no-op (the code before it: the "before" column of ``docs/performance.md``).

``--saved`` also counts, for one warm step, the bytes autograd saves for the backward (a
``torch.autograd.graph.saved_tensors_hooks`` pair that records each saved tensor's storage once; parameters left
out), grouped by shape, the largest first.

    INFOSAM_DATA=/path/to/data INFOSAM_WEIGHTS=/path/to/weights OMP_NUM_THREADS=1 \\
        python benchmarks/bench_memory.py --train-images 8 --test-images 4 --epochs 2 --saved

The table is one run (a peak is a maximum, not a noisy mean). ``--malloc`` runs the worker under another glibc
allocator setting (``arena1``: ``MALLOC_ARENA_MAX=1``; ``mmap``: ``MALLOC_MMAP_THRESHOLD_`` fixed at 1 MiB, so
freed large blocks go back to the kernel at once; ``trim``: ``malloc_trim(0)`` after every phase and step).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "experiments" / "mobilesam" / "grid.yaml"
MALLOC = {
    "default": {},
    "arena1": {"MALLOC_ARENA_MAX": "1"},
    "mmap": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)},
    "trim": {},
}


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


class Phases:
    """Peak (VmHWM since the last mark) and resident set at each mark."""

    def __init__(self, trim: bool = False) -> None:
        self.rows: list[dict] = []
        self.trim = trim
        self._reset()

    def _reset(self) -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := the current resident set

    def mark(self, phase: str, **extra) -> None:
        peak, rss = _status_mib("VmHWM"), _status_mib("VmRSS")
        if self.trim and "group" not in extra:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        anon, file = _status_mib("RssAnon"), _status_mib("RssFile")
        self.rows.append({"phase": phase, "peak": peak, "rss": rss, "anon": anon, "file": file, **extra})
        print(f"[{phase}] peak {peak:.0f} MiB, rss {rss:.0f} MiB", file=sys.stderr, flush=True)
        self._reset()


def _split_csv(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("image,label\n" + "".join(f"{r}\n" for r in rows))


def _pairs(folder: Path, count: int, skip: int = 0) -> list[str]:
    images = sorted(p for p in (folder / "images").iterdir() if p.suffix.lower() in (".jpg", ".png"))
    rows = []
    for image in images[skip:]:
        mask = folder / "masks" / (image.stem + ".png")
        if mask.is_file():
            rows.append(f"images/{image.name},masks/{mask.name}")
        if len(rows) == count:
            return rows
    raise SystemExit(f"{folder}: fewer than {count + skip} image/mask pairs")


def _saved_bytes_hook(skip: set[int]):
    """A saved_tensors_hooks pair recording each saved storage once (those in ``skip``, the parameters, left out):
    {data_ptr: (bytes, shape, dtype)}."""
    seen: dict[int, tuple[int, tuple, str]] = {}

    def pack(t):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip and ptr not in seen and storage.nbytes():
            seen[ptr] = (storage.nbytes(), tuple(t.shape), str(t.dtype).replace("torch.", ""))
        return t

    return seen, pack, lambda t: t


def _results(run_dir: Path) -> dict:
    """What the run computed, to compare runs bitwise: sha256 of metrics.csv's loss columns and of every weights
    file, and the test scores."""
    import csv

    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    losses = [{k: v for k, v in r.items() if k not in ("images_per_s",)} for r in rows]
    weights = {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in sorted((run_dir / "weights").rglob("*"))
        if p.is_file()
    }
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "losses_sha256": hashlib.sha256(json.dumps(losses).encode()).hexdigest()[:16],
        "last_loss": rows[-1]["loss"],
        "weights": weights,
        "reported": {k: summary["reported"].get(k) for k in ("Dice", "IoU", "S")},
    }


def worker(args: argparse.Namespace) -> dict:
    trim = args.malloc == "trim"
    phases = Phases(trim)
    import torch

    import infosam.evaluate as evaluate_module
    import infosam.step as step_module
    import infosam.train as train_module
    from infosam.experiment.grid import Cell, load_grid
    from infosam.experiment.plan import cell_config
    from infosam.experiment.scoring import score as _score

    torch.set_num_threads(1)
    phases.mark("import")
    grid = load_grid(GRID)
    data = Path(grid.datasets["leaf"].path)
    retention = Path(grid.datasets["ecssd-heldout"].path)
    tmp = Path(args.tmp)
    splits = tmp / "splits"
    train_rows = _pairs(data, args.train_images)
    _split_csv(splits / "leaf" / "fold1of5-train.csv", train_rows)
    _split_csv(splits / "leaf" / "fold1of5-test.csv", _pairs(data, args.test_images, skip=args.train_images))
    _split_csv(splits / "ecssd-heldout" / "heldout.csv", _pairs(retention, args.test_images))

    info: dict = {"steps": [], "saved": None, "sizes": {}}
    built: dict = {}
    step_no = {"n": 0}

    original_build = train_module.build_parts

    def build_parts(config, accelerator, steps_total, checkpoint):
        phases.mark("open data")
        parts = original_build(config, accelerator, steps_total, checkpoint)
        built["parts"] = parts
        phases.mark("build")
        return parts

    original_step = train_module.train_step

    def train_step(parts, batch, **kw):
        n = step_no["n"] + 1
        phases.mark(f"step {n}: data", group=n)
        acc = parts.accelerator
        if "backward" not in acc.__dict__:
            original_backward = acc.backward

            def backward(loss, **bkw):
                phases.mark(f"step {step_no['n'] + 1}: student + losses", group=step_no["n"] + 1)
                original_backward(loss, **bkw)
                phases.mark(f"step {step_no['n'] + 1}: backward", group=step_no["n"] + 1)

            acc.backward = backward
        if args.saved and info["saved"] is None and step_no["n"] == args.saved_step:
            params = {p.untyped_storage().data_ptr() for p in parts.trainee.parameters()}
            params |= {b.untyped_storage().data_ptr() for b in parts.trainee.buffers()}
            seen, pack, unpack = _saved_bytes_hook(params)
            with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
                out = original_step(parts, batch, **kw)
            by_shape: dict[str, list[float]] = {}
            for nbytes, shape, dtype in seen.values():
                entry = by_shape.setdefault(f"{list(shape)} {dtype}", [0, 0.0])
                entry[0] += 1
                entry[1] += nbytes / 2**20
            info["saved"] = {
                "step": step_no["n"] + 1,
                "total_mib": sum(v[0] for v in seen.values()) / 2**20,
                "tensors": len(seen),
                "by_shape": sorted(([k, *v] for k, v in by_shape.items()), key=lambda x: -x[2]),
            }
            return out
        return original_step(parts, batch, **kw)

    original_evaluate = evaluate_module.evaluate
    original_teacher = step_module.teacher_forward
    scoring = {"on": False}

    def evaluate(*a, **kw):
        if scoring["on"]:
            return original_evaluate(*a, **kw)
        phases.mark("epoch end")
        out = original_evaluate(*a, **kw)
        phases.mark("eval in training")
        return out

    def teacher_forward(*a, **kw):
        phases.mark(f"step {step_no['n'] + 1}: keys", group=step_no["n"] + 1)
        out = original_teacher(*a, **kw)
        phases.mark(f"step {step_no['n'] + 1}: teacher", group=step_no["n"] + 1)
        return out

    def on_step(step: int) -> None:
        step_no["n"] = step
        phases.mark(f"step {step}: optimizer")

    if args.no_release:  # as before release_memory existed: its two call sites look it up at call time
        import infosam.runtime

        infosam.runtime.release_memory = lambda: False
    train_module.build_parts = build_parts
    train_module.train_step = train_step
    evaluate_module.evaluate = evaluate
    step_module.teacher_forward = teacher_forward

    for k in range(args.cells):
        seed = grid.seeds[0] + k
        cell = Cell("leaf", "fold1of5", args.arm, seed)
        run_dir = tmp / f"cell{k}" / "run"
        config = cell_config(grid, cell, splits, run_dir)
        config.train.epochs = args.epochs
        config.eval.epochs = [args.epochs]
        config.cache.dir = str(tmp / "cache" / "teacher")
        config.train.log_every_steps = 1
        step_no["n"] = 0
        scoring["on"] = False
        train_module.train(config, on_step=on_step)
        phases.mark(f"cell {k + 1}: train return")
        info.setdefault("results", []).append(_results(run_dir))
        if k == 0:
            parts = built.pop("parts")
            mib = lambda ts: sum(t.numel() * t.element_size() for t in ts) / 2**20  # noqa: E731
            student = parts.student
            teacher = parts.step.teacher
            opt_state = [
                v for s in parts.step.optimizer.state.values() for v in s.values() if torch.is_tensor(v)
            ]
            info["sizes"] = {
                "student params MiB": mib(student.parameters()),
                "student trainable MiB": mib(p for p in student.parameters() if p.requires_grad),
                "teacher params MiB": mib(teacher.parameters()) if teacher is not None else 0.0,
                "relation params MiB": mib(parts.relation.parameters())
                if parts.relation is not None
                else 0.0,
                "Adam state MiB": mib(opt_state),
            }
            for name in ("teacher", "teacher-prefix", "teacher-inputs"):
                folder = tmp / "cache" / name
                files = [f for f in folder.iterdir() if f.suffix == ".safetensors"]
                info["sizes"][f"cache {name} KiB/entry"] = (
                    sum(f.stat().st_size for f in files) / max(len(files), 1) / 1024
                )
            del parts, student, teacher, opt_state
        built.clear()
        gc.collect()
        phases.mark(f"cell {k + 1}: gc")
        scoring["on"] = True
        for name, dataset, split in (
            ("test", "leaf", "fold1of5-test"),
            ("retention", "ecssd-heldout", "heldout"),
        ):
            out = tmp / f"cell{k}" / "eval" / name
            _score(grid, run_dir, dataset, split, out, tmp, device="cpu", cache=True)
            scored = json.loads((out / "summary.json").read_text())
            per_image = (out / "per_image.csv").read_bytes()
            info["results"][k][f"score {name}"] = {
                "Dice": scored["Dice"],
                "per_image.csv sha256": hashlib.sha256(per_image).hexdigest()[:16],
            }
            phases.mark(f"cell {k + 1}: score {name}")
    info["phases"] = phases.rows
    info["vmhwm_life"] = max(r["peak"] for r in phases.rows)
    return info


def _table(info: dict, label: str) -> str:
    lines = [
        f"{label}",
        "",
        "| phase | peak RSS MiB | RSS at end MiB | of which anon / file |",
        "|---|---|---|---|",
    ]
    for r in info["phases"]:
        lines.append(
            f"| {r['phase']} | {r['peak']:.0f} | {r['rss']:.0f} | {r['anon']:.0f} / {r['file']:.0f} |"
        )
    lines.append(f"| **whole run** | **{info['vmhwm_life']:.0f}** | |")
    for k, r in enumerate(info.get("results", [])):
        lines += [
            "",
            f"cell {k + 1}: losses sha256 {r['losses_sha256']}, last loss {r['last_loss']}, "
            f"scores {r['reported']}, weights {r['weights']}, "
            + ", ".join(f"{n}: {v}" for n, v in r.items() if n.startswith("score ")),
        ]
    if info["sizes"]:
        lines += ["", "| part | size |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in info["sizes"].items()]
    if info["saved"]:
        s = info["saved"]
        lines += [
            "",
            f"Saved for backward in step {s['step']} (warm): {s['total_mib']:.0f} MiB in {s['tensors']} storages",
            "",
            "| saved tensor shape | count | MiB |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {n} | {b:.1f} |" for k, n, b in s["by_shape"][:20]]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arm", default="adapter-infosam", help="arm of experiments/mobilesam/grid.yaml")
    p.add_argument("--train-images", type=int, default=8)
    p.add_argument("--test-images", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2, help="epoch 1 fills the caches, later ones read them")
    p.add_argument("--cells", type=int, default=1, help="cells run one after the other in the one process")
    p.add_argument("--saved", action="store_true", help="count the bytes saved for backward in one warm step")
    p.add_argument("--saved-step", type=int, default=None, help="0-based step to count (default: first warm)")
    p.add_argument("--malloc", choices=tuple(MALLOC), default="default")
    p.add_argument(
        "--no-release",
        action="store_true",
        help="make infosam.runtime.release_memory a no-op (the before row of docs/performance.md)",
    )
    p.add_argument("--json", help="write the measurements here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.saved_step is None:
        args.saved_step = -(-args.train_images // 4)  # the first step of epoch 2
    if args.worker:
        print(json.dumps(worker(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", **MALLOC[args.malloc]}
        cmd = [sys.executable, __file__, "--worker", "--tmp", tmp, *sys.argv[1:]]
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
    info = json.loads(done.stdout.strip().splitlines()[-1])
    info["malloc"] = args.malloc
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=1))
    print(
        _table(
            info,
            f"{args.arm}, {args.train_images} training / {args.test_images} test images, "
            f"{args.epochs} epochs, {args.cells} cell(s), malloc {args.malloc}"
            + (", release_memory off" if args.no_release else ""),
        )
    )


if __name__ == "__main__":
    main()
