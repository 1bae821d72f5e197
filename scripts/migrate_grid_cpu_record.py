"""One-off: turn the decoder-only grid's published per-image scores into its results record.

The decoder-only cells of experiments/litemedsam/grid_cpu.yaml ran (2026-11) before grids kept a committable
record; what survives of them in the repository is the report's ``per_image.csv`` (every finished cell's and the
zero-shot teacher's final per-image scores), its split lists and its page (wall times, devices). This script writes
those into ``experiments/litemedsam/results/grid_cpu/`` in the record layout of
:mod:`infosam.experiment.records`, so the grid's finished cells count as finished on any machine and its page is
rebuilt from the record alone. Per-epoch curves were not kept by the old report and are absent (the record holds
the final epoch only); each migrated ``cell.json`` says so. Config hashes are those the runner computes today for
the same cells.

    python scripts/migrate_grid_cpu_record.py
"""

from __future__ import annotations

import csv
import os
import shutil
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "docs" / "results" / "litemedsam"
GRID = ROOT / "experiments" / "litemedsam" / "grid_cpu.yaml"
NOTE = "migrated from docs/results/litemedsam/per_image.csv (commit 3c8f4d9); final epoch only, no per-epoch curves"


def main() -> int:
    os.environ.setdefault("INFOSAM_DATA", str(ROOT.parent / "shared" / "data"))
    from infosam.evaluate import write_evaluation
    from infosam.experiment.grid import load_grid
    from infosam.experiment.hashing import config_hash
    from infosam.experiment.plan import cell_config, cells
    from infosam.experiment.records import RECORD_VERSION, cell_record_dir, dataset_digest, teacher_record_dir
    from infosam.files import write_json

    grid = load_grid(GRID, lenient_vars=True)
    record = grid.results
    if record is None:
        raise SystemExit(f"{GRID} has no results folder")
    metrics = ["S", "E_adp", "E_mean", "Fw", "MAE", "IoU", "Dice"]
    rows: dict[tuple, list[dict]] = defaultdict(list)
    with open(SOURCE / "per_image.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows[(r["dataset"], r["part"], r["arm"], r["seed"], r["set"])].append(r)
    # split lists: the report's copies are the experiment's lists
    for path in sorted((SOURCE / "splits").glob("*/*.csv")):
        target = record / "splits" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    atomic_grid = record / "grid.yaml"
    atomic_grid.write_text(GRID.read_text(encoding="utf-8"), encoding="utf-8")
    # the shared data folders these cells read (their SHA256SUMS digests, taken now: the sets have not changed)
    datasets = {
        name: {"folder": d.path.name, "sha256sums_sha256": dataset_digest(d.path)}
        for name, d in grid.datasets.items()
    }
    write_json(
        record / "experiment.json",
        {
            "grid": Path(os.path.relpath(GRID, record)).as_posix(),
            "grid_root": Path(os.path.relpath(GRID.parent, record)).as_posix(),
            "record_version": RECORD_VERSION,
            "datasets": datasets,
            "note": NOTE,
        },
    )

    def evaluation(found: list[dict], extra: dict) -> tuple[list[dict], dict]:
        out = [{"id": r["id"], **{m: float(r[m]) for m in metrics}} for r in found]
        summary = {m: statistics.fmean(r[m] for r in out) for m in metrics}
        summary.update(n_images=len(out), prompt="box", box_noise="per-coordinate", seed=42, **extra)
        return out, summary

    teacher_done = set()
    written = 0
    for cell in cells(grid):
        sets = {
            k[4]: v for k, v in rows.items() if k[:4] == (cell.dataset, cell.part, cell.arm, str(cell.seed))
        }
        if "test" not in sets:
            continue
        splits = record / "splits"
        config = cell_config(grid, cell, splits, record / "run")
        folder = cell_record_dir(grid, cell)
        curve = {}
        for name, found in sets.items():
            per_image, summary = evaluation(found, {"dataset": cell.dataset, "migrated": NOTE})
            write_evaluation(folder / "eval" / name, per_image, summary, overwrite=True)
            if name == "test":
                curve[config.train.epochs] = summary
            teacher = rows.get((cell.dataset, cell.part, "teacher (zero-shot)", "", name))
            source = (
                (cell.dataset, f"{cell.part}-test")
                if name == "test"
                else (name[len("retention-") :], "heldout")
            )
            if teacher and source not in teacher_done:
                per_image, summary = evaluation(teacher, {"dataset": source[0], "migrated": NOTE})
                write_evaluation(teacher_record_dir(grid, *source), per_image, summary, overwrite=True)
                teacher_done.add(source)
        write_json(folder / "curve-test.json", {str(k): v for k, v in curve.items()})
        write_json(
            folder / "cell.json",
            {
                "cell": cell.name,
                "config_hash": config_hash(config, record),
                "code": ["not recorded (trained 2026-11 at commits up to f6c19cb)"],
                # the old page gave totals only: training 12973.5 s, scoring 1146.4 s over these 20 cells
                "device": "cpu",
                "status": "done",
                "epochs": config.train.epochs,
                "record_version": RECORD_VERSION,
                "migrated": NOTE,
            },
        )
        written += 1
    print(
        f"{written} cells and {len(teacher_done)} teacher evaluations recorded in {record.relative_to(ROOT)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
