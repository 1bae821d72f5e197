"""The report's statistics on hand-made cases whose answers are known without the code."""

from __future__ import annotations

import math

import numpy as np
import pytest

from infosam import stats


def test_bootstrap_of_constant_differences_is_a_point():
    groups = {0: [np.full(7, 0.02)], 1: [np.full(3, 0.02), np.full(5, 0.02)]}
    ci = stats.hierarchical_bootstrap(groups, n_boot=500)
    assert ci.estimate == pytest.approx(0.02)
    assert ci.low == pytest.approx(0.02, abs=1e-15) and ci.high == pytest.approx(0.02, abs=1e-15)


def test_estimate_is_the_mean_over_seeds_of_pooled_seed_means():
    # seed 0: one image (mean 1); seed 1: parts [3] and [5, 10] pooled (mean 6). The estimate weighs seeds
    # equally: (1 + 6) / 2 = 3.5, not the mean of all four images (4.75).
    groups = {0: [np.array([1.0])], 1: [np.array([3.0]), np.array([5.0, 10.0])]}
    assert stats.seed_means(groups) == {0: 1.0, 1: 6.0}
    ci = stats.hierarchical_bootstrap(groups, n_boot=200)
    assert ci.estimate == pytest.approx(3.5)
    assert ci.low <= 3.5 <= ci.high


def test_bootstrap_interval_matches_normal_theory_on_a_large_sample():
    rng = np.random.default_rng(1)
    d = rng.normal(0.5, 1.0, size=4000)
    ci = stats.hierarchical_bootstrap({0: [d]}, n_boot=4000, seed=3)
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert ci.low < d.mean() < ci.high
    assert (ci.high - ci.low) / 2 == pytest.approx(half, rel=0.1)
    assert (ci.low + ci.high) / 2 == pytest.approx(d.mean(), abs=0.1 * half)


def test_bootstrap_resamples_within_parts_only():
    # Two parts with constant but different values: resampling within parts can never change the pooled mean,
    # while resampling across them would.
    groups = {0: [np.zeros(10), np.ones(30)]}
    ci = stats.hierarchical_bootstrap(groups, n_boot=300)
    assert ci.estimate == ci.low == ci.high == pytest.approx(0.75)


def test_bootstrap_is_reproducible_and_checks_input():
    groups = {0: [np.array([0.1, -0.3, 0.2, 0.4])], 1: [np.array([0.0, 0.5, -0.1])]}
    assert stats.hierarchical_bootstrap(groups, seed=5) == stats.hierarchical_bootstrap(groups, seed=5)
    with pytest.raises(ValueError, match="level"):
        stats.hierarchical_bootstrap(groups, level=1.0)
    with pytest.raises(ValueError, match="seed 1.*at least one image"):
        stats.hierarchical_bootstrap({0: [np.ones(2)], 1: [np.array([])]})
    with pytest.raises(ValueError, match="no seeds"):
        stats.hierarchical_bootstrap({})


def test_sign_agreement_counts():
    assert stats.sign_agreement([0.5, -0.1, 0.2], 0.2) == (2, 3)
    assert stats.sign_agreement([-0.5, -0.1, 0.2], -0.13) == (2, 3)
    assert stats.sign_agreement([0.0, 0.1], 0.0) == (1, 2)


def test_paired_differences_pair_by_image_and_refuse_other_images():
    d = stats.paired_differences({"b": 0.5, "a": 0.9}, {"a": 0.7, "b": 0.6})
    np.testing.assert_allclose(d, [0.2, -0.1])  # ordered by id: a, b
    with pytest.raises(ValueError, match=r"leaf: .*\['c'\]"):
        stats.paired_differences({"a": 1.0, "c": 1.0}, {"a": 1.0}, name="leaf")


def test_mean_std_and_relative():
    assert stats.mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    mean, std = stats.mean_std([4.0])
    assert mean == 4.0 and math.isnan(std)
    assert stats.relative(0.45, 0.9) == pytest.approx(0.5)
    assert math.isnan(stats.relative(0.3, 0.0))


def test_run_level_view_hand_computed():
    from infosam.stats import run_level

    # runs 1, 2, 3, 6: mean 3, sample sd sqrt(14/3); t(0.975, 3) = 3.182446305...
    got = run_level([1.0, 2.0, 3.0, 6.0])
    half = 3.182446305284263 * math.sqrt(14 / 3) / 2
    assert got["mean"] == 3.0 and got["n_runs"] == 4 and got["positive"] == 4 and got["negative"] == 0
    assert got["t_low"] == pytest.approx(3 - half, abs=1e-9) and got["t_high"] == pytest.approx(
        3 + half, abs=1e-9
    )
    one = run_level([-0.5])
    assert one["negative"] == 1 and math.isnan(one["t_low"]) and math.isnan(one["t_high"])
    with pytest.raises(ValueError, match="at least one run"):
        run_level([])


def test_report_words_a_difference_by_the_weaker_interval():
    from infosam.experiment.page import _points
    from infosam.experiment.tables import _verdict

    nan = float("nan")
    assert _verdict(-0.03, -0.01, -0.05, -0.002) == "worse"
    assert _verdict(-0.03, -0.01, -0.05, 0.01) == "worse on these images only (not across trainings)"
    assert _verdict(-0.03, -0.01, nan, nan) == "worse on these images only (not across trainings)"
    assert _verdict(-0.01, 0.02, 0.001, 0.02) == "no clear difference"
    assert _verdict(0.01, 0.02, 0.001, 0.02) == "better"
    assert _points("Dice", 4e-7) == "+4.0e-05" and _points("Dice", -0.0137) == "-1.37"
    assert _points("MAE", 0.00001) == "+1.0e-05" and _points("Dice", 0.0) == "+0.00"


def test_default_replicates_are_10000_everywhere():
    # 2,000 replicates left a percentile edge of the encoder page on the wrong side of zero (issue 33).
    import inspect

    from infosam.cli import report as cli_report
    from infosam.experiment import report, tables

    assert stats.N_BOOT == 10_000
    for fn in (stats.hierarchical_bootstrap, tables.paired_table, report.write_report):
        assert inspect.signature(fn).parameters["n_boot"].default == 10_000, fn.__name__
    import argparse

    parser = argparse.ArgumentParser()
    cli_report.register(parser.add_subparsers())
    assert parser.parse_args(["report", "x"]).n_boot == 10_000


def test_bootstrap_with_default_replicates_is_seeded():
    d = {0: [np.random.default_rng(0).normal(size=50)]}
    assert stats.hierarchical_bootstrap(d) == stats.hierarchical_bootstrap(d)
    assert stats.hierarchical_bootstrap(d, seed=1) != stats.hierarchical_bootstrap(d)


def test_shared_image_bootstrap_resamples_each_image_once_across_seeds():
    # Seed 0 gains 1 on image a and 0 on b, seed 1 the reverse: every image's mean over seeds is 0.5, so
    # whichever images a replicate draws, it is 0.5, and the interval is the point 0.5. Resampling each seed's
    # images on their own (the hierarchical bootstrap) can draw a twice for seed 0 and b twice for seed 1 (1.0).
    per_seed = {0: {"a": 1.0, "b": 0.0}, 1: {"a": 0.0, "b": 1.0}}
    ci = stats.shared_image_bootstrap(per_seed, n_boot=500)
    assert ci.estimate == ci.low == ci.high == 0.5
    independent = stats.hierarchical_bootstrap(
        {0: [np.array([1.0, 0.0])], 1: [np.array([0.0, 1.0])]}, n_boot=500
    )
    assert independent.low < 0.5 < independent.high


def test_shared_image_bootstrap_of_identical_seeds_is_the_one_seed_interval():
    # Two seeds with the same differences on every image carry no more information than one: the interval is
    # the one-seed interval (same resampling seed, same draws), not one narrower by sqrt(2).
    d = np.random.default_rng(2).normal(0.1, 1.0, size=40)
    ids = [f"img{k:02d}" for k in range(d.size)]
    one = stats.hierarchical_bootstrap({0: [d]}, n_boot=1000, seed=4)
    both = stats.shared_image_bootstrap(
        {s: dict(zip(ids, d, strict=True)) for s in (0, 1)}, n_boot=1000, seed=4
    )
    assert both.low == pytest.approx(one.low) and both.high == pytest.approx(one.high)
    assert both.estimate == pytest.approx(d.mean())


def test_shared_image_bootstrap_strata_and_checks():
    # Two constant parts: resampling within parts never changes the pooled mean (as hierarchical_bootstrap).
    per_seed = {s: {"a": 0.0, "b": 0.0, "c": 1.0, "d": 1.0} for s in (0, 1)}
    ci = stats.shared_image_bootstrap(per_seed, strata={"a": 1, "b": 1, "c": 2, "d": 2}, n_boot=300)
    assert ci.estimate == ci.low == ci.high == 0.5
    with pytest.raises(ValueError, match="different images"):
        stats.shared_image_bootstrap({0: {"a": 1.0}, 1: {"b": 1.0}})
    with pytest.raises(ValueError, match="no seeds"):
        stats.shared_image_bootstrap({})


def test_paired_table_resamples_retention_images_once_across_seeds():
    from types import SimpleNamespace

    from infosam.experiment.collect import CellResult
    from infosam.experiment.grid import Cell
    from infosam.experiment.tables import paired_table

    # The treated arm gains 1 on image a for seed 0 and on image b for seed 1 (retention set, two folds each):
    # every image's mean over seeds is 0.5, so with images resampled once across seeds the interval is a point.
    def result(arm, seed, part, a, b):
        scores = {"a": {"dice": a}, "b": {"dice": b}}
        return CellResult(Cell("leaf", part, arm, seed), sets={"retention-kvasir": scores})

    results = []
    for seed, (a, b) in ((0, (1.0, 0.0)), (1, (0.0, 1.0))):
        for part in ("fold1of2", "fold2of2"):
            results += [result("infosam", seed, part, a, b), result("base", seed, part, 0.0, 0.0)]
    grid = SimpleNamespace(
        arms={
            "base": SimpleNamespace(name="base", baseline=None),
            "infosam": SimpleNamespace(name="infosam", baseline="base"),
        },
        compare=[],
    )
    (row,) = paired_table(results, grid, ["dice"], n_boot=500)
    assert row["set"] == "retention-kvasir" and row["n_seeds"] == 2
    assert row["difference"] == row["ci_low"] == row["ci_high"] == 0.5


def test_paired_table_keeps_the_registered_bootstrap_for_test_sets():
    """Test sets keep the hierarchical bootstrap (images within seed and part) the grids registered before their
    first run: the same per-image gains as the retention case above give a wide interval there, not a point."""
    from types import SimpleNamespace

    from infosam.experiment.collect import CellResult
    from infosam.experiment.grid import Cell
    from infosam.experiment.tables import paired_table

    def result(arm, seed, a, b):
        return CellResult(
            Cell("leaf", "fold1of2", arm, seed), sets={"test": {"a": {"dice": a}, "b": {"dice": b}}}
        )

    results = []
    for seed, (a, b) in ((0, (1.0, 0.0)), (1, (0.0, 1.0))):
        results += [result("infosam", seed, a, b), result("base", seed, 0.0, 0.0)]
    grid = SimpleNamespace(
        arms={
            "base": SimpleNamespace(name="base", baseline=None),
            "infosam": SimpleNamespace(name="infosam", baseline="base"),
        },
        compare=[],
    )
    (row,) = paired_table(results, grid, ["dice"], n_boot=500)
    assert row["set"] == "test" and row["difference"] == 0.5
    assert row["ci_low"] < 0.5 < row["ci_high"]


def test_loss_terms_wording_allows_a_negative_estimate_and_states_the_copy_case():
    from infosam.experiment.page import _loss_terms_section

    row = {"dataset": "leaf", "arm": "infosam", "n_runs": 1, "first_epoch": 1, "last_epoch": 2}
    for term in ("seg", "relation", "distill"):
        row[f"{term}_first"], row[f"{term}_last"] = 0.5, 0.4
    row.update(runs_mi_fell=0, runs_with_distill=1)
    text = "\n".join(_loss_terms_section([row]))
    assert "between 0 and log2 B" not in text
    assert "slightly negative" in text and "orthogonal or parallel" in text
