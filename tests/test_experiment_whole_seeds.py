"""Which finished cells the score tables use (``complete_seeds``): a (dataset, regime, seed) enters only when
every fold and every arm of it finished, so each arm's mean over a seed covers the same images; an arm of a later
``phase`` (e.g. the MobileSAM grid's VID, run after every main cell) joins when its own cells have finished."""

from __future__ import annotations

from infosam.data.synthetic import write_synthetic_dataset
from infosam.experiment import load_grid
from infosam.experiment.collect import CellResult, complete_seeds
from infosam.experiment.grid import Cell


def _grid(tmp_path, arms: str):
    write_synthetic_dataset(tmp_path / "d", 6, domain="target")
    path = tmp_path / "g.yaml"
    path.write_text(
        f"seeds: [0, 1]\ndatasets: {{d: {{path: d, folds: 2}}}}\narms: {arms}\n", encoding="utf-8"
    )
    return load_grid(path)


def _kept(grid, done: list[tuple[str, str, int]]) -> set[tuple[str, str, int]]:
    results = [CellResult(Cell("d", part, arm, seed)) for part, arm, seed in done]
    return {(r.cell.part, r.cell.arm, r.cell.seed) for r in complete_seeds(results, grid)}


def _triples(arms, seeds, parts=("fold1of2", "fold2of2")):
    return [(p, a, s) for s in seeds for p in parts for a in arms]


def test_a_later_phase_joins_without_holding_back_the_main_arms(tmp_path):
    grid = _grid(tmp_path, "{a: {}, b: {baseline: a}, v: {baseline: a, seeds: [0], phase: 2}}")
    main0 = _triples("ab", [0])
    # seed 0's main arms whole, VID half-run: the main arms are reported, VID not yet
    assert _kept(grid, [*main0, ("fold1of2", "v", 0)]) == set(main0)
    # VID whole too: it joins
    assert _kept(grid, [*main0, *_triples("v", [0])]) == set(main0 + _triples("v", [0]))
    # seed 1 (no VID registered there) is whole with its main arms alone; a missing b fold holds back a as well
    assert _kept(grid, [*main0, *_triples("ab", [1])]) == set(main0 + _triples("ab", [1]))
    assert _kept(grid, [*main0, *_triples("a", [1]), ("fold1of2", "b", 1)]) == set(main0)
    # a later phase never stands in for an unfinished earlier one
    assert _kept(grid, [*_triples("a", [0]), ("fold1of2", "b", 0), *_triples("v", [0])]) == set()


def test_without_phases_every_arm_of_the_seed_must_finish(tmp_path):
    grid = _grid(tmp_path, "{a: {}, b: {baseline: a}, c: {baseline: a}}")
    whole = _triples("abc", [0])
    assert _kept(grid, whole) == set(whole)
    assert _kept(grid, [*whole, *_triples("ab", [1])]) == set(whole)  # c missing at seed 1: seed 1 left out
