"""Reading what a training run logged, for tests that compare runs."""

from __future__ import annotations

import csv
from pathlib import Path


def logged_losses(run: Path) -> list[dict[str, float]]:
    """The loss terms of every logged step of ``run`` (its metrics.csv): loss, seg, relation, distill."""
    with open(run / "metrics.csv", newline="") as f:
        return [
            {k: float(row[k]) for k in ("loss", "seg", "relation", "distill")} for row in csv.DictReader(f)
        ]
