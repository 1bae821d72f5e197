"""``report.compare``: paired differences between two arms that are not each other's baseline (e.g. the MobileSAM
grid's pre-registered secondary outcome, Adapter + InfoSAM minus Adapter + L_d only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infosam.data.synthetic import write_synthetic_dataset
from infosam.experiment import GridError, load_grid
from infosam.experiment.collect import CellResult
from infosam.experiment.grid import Cell
from infosam.experiment.tables import paired_table

ARMS = "arms: {a: {}, b: {baseline: a}, c: {baseline: a}}\n"


def _grid_file(tmp_path: Path, report: str) -> Path:
    if not (tmp_path / "d").exists():
        write_synthetic_dataset(tmp_path / "d", 6, domain="target")
    path = tmp_path / "g.yaml"
    path.write_text("seeds: [0, 1]\ndatasets: {d: {path: d, folds: 2}}\n" + ARMS + report, encoding="utf-8")
    return path


def test_compare_pairs_are_read_and_checked(tmp_path):
    grid = load_grid(_grid_file(tmp_path, "report: {compare: [[b, c]]}\n"))
    assert grid.compare == [("b", "c")]
    assert load_grid(_grid_file(tmp_path, "")).compare == []
    cases = [
        ("report: {compare: [[b, x]]}\n", r"\['x'\] not arm\(s\) of the grid"),
        ("report: {compare: [[b, b]]}\n", "compares an arm with itself"),
        ("report: {compare: [[b, a]]}\n", "already compared"),
        ("report: {compare: [[b, c], [b, c]]}\n", "already compared"),
        ("report: {compare: [b, c]}\n", r"each entry must be \[arm, other arm\]"),
        ("report: {compare: b}\n", "must be a list of"),
        (
            "report: {compar: [[b, c]]}\n",
            r"report: unknown \['compar'\]; valid keys: \['compare', 'metrics'\]",
        ),
    ]
    for text, message in cases:
        with pytest.raises(GridError, match=message):
            load_grid(_grid_file(tmp_path, text))


def _result(part: str, arm: str, seed: int, dice: dict[str, float]) -> CellResult:
    return CellResult(Cell("d", part, arm, seed), sets={"test": {i: {"Dice": v} for i, v in dice.items()}})


def test_a_compare_pair_differences_the_two_arms_on_the_cells_both_ran(tmp_path):
    """b minus c over the (part, seed) cells both finished: c has no fold 2 at seed 1, so that cell drops out of
    b - c (and only of it); the estimate is the mean over seeds of each seed's image-pooled mean difference."""
    grid = load_grid(_grid_file(tmp_path, "report: {compare: [[b, c]]}\n"))
    rng = np.random.default_rng(0)
    ids = {"fold1of2": ["i1", "i2", "i3"], "fold2of2": ["i4", "i5", "i6"]}
    scores = {
        (part, arm, seed): dict(zip(ids[part], rng.uniform(0.5, 0.9, 3).round(4).tolist(), strict=True))
        for part in ids
        for arm in "abc"
        for seed in (0, 1)
    }
    del scores[("fold2of2", "c", 1)]
    results = [_result(part, arm, seed, d) for (part, arm, seed), d in scores.items()]
    rows = {(r["arm"], r["baseline"]): r for r in paired_table(results, grid, ["Dice"], n_boot=200)}
    assert list(rows) == [("b", "a"), ("c", "a"), ("b", "c")]  # baselines first, then the compare pairs

    def by_hand(arm, other):
        per_seed = {}
        for seed in (0, 1):
            diffs = [
                scores[(part, arm, seed)][i] - scores[(part, other, seed)][i]
                for part in ids
                if (part, other, seed) in scores and (part, arm, seed) in scores
                for i in ids[part]
            ]
            per_seed[seed] = float(np.mean(diffs))
        return per_seed

    want = by_hand("b", "c")
    row = rows[("b", "c")]
    assert row["difference"] == pytest.approx(np.mean(list(want.values())), abs=1e-12)
    assert row["per_seed"] == ";".join(f"{s}:{v:.6f}" for s, v in want.items())
    assert row["n_runs"] == 3  # b - c: folds 1-2 at seed 0, fold 1 at seed 1
    assert rows[("b", "a")]["n_runs"] == 4
    assert rows[("c", "a")]["n_runs"] == 3
