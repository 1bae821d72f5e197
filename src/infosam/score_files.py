"""The files an evaluation leaves: ``per_image.csv`` (one row per image, or per object) and ``summary.json``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .files import atomic_write_text

PER_IMAGE_FILE = "per_image.csv"
SUMMARY_FILE = "summary.json"


def check_outputs(out_dir: str | Path, overwrite: bool) -> None:
    """FileExistsError naming them when ``per_image.csv`` or ``summary.json`` exist in ``out_dir`` and not
    ``overwrite``."""
    out = Path(out_dir)
    existing = [str(out / n) for n in (PER_IMAGE_FILE, SUMMARY_FILE) if (out / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"output file(s) exist: {', '.join(existing)} (pass --overwrite to replace them)"
        )


def write_evaluation(
    out_dir: str | Path, rows: list[dict], summary: dict, *, overwrite: bool = False
) -> Path:
    """Write ``per_image.csv`` (one row per image: id, then the metrics; for instance datasets one row per object:
    id, image, object, then the metrics) and ``summary.json`` into ``out_dir``,
    each atomically; refuses to replace existing ones unless ``overwrite`` (:func:`check_outputs`). Returns
    ``out_dir``."""
    check_outputs(out_dir, overwrite)
    return write_files(out_dir, rows, summary)


def write_files(out_dir: str | Path, rows: list[dict], summary: dict) -> Path:
    """:func:`write_evaluation` without its check, for a caller that ran :func:`check_outputs` before its work."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    if rows:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(out / PER_IMAGE_FILE, text.getvalue())
    atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return out


def read_evaluation(out_dir: str | Path) -> tuple[list[dict], dict]:
    """Read back what :func:`write_evaluation` wrote: per-image rows (metrics as floats) and the summary."""
    out = Path(out_dir)
    with open(out / PER_IMAGE_FILE, newline="", encoding="utf-8") as f:
        rows = [{k: _read_cell(k, v) for k, v in r.items()} for r in csv.DictReader(f)]
    return rows, json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))


def _read_cell(key: str, value: str) -> str | int | float:
    if key in ("id", "image"):
        return value
    return int(value) if key == "object" else float(value)
