"""Statistics of the evidence report, as pure functions of arrays (no files, no models).

The design: two arms (an InfoSAM arm and its plain baseline) are run with the same seeds on the same splits, and
both score the same test images, so each image gives a paired difference ``d = score(InfoSAM) - score(baseline)``.
Differences are grouped by seed and, within a seed, by split part (a cross-validation fold, or the one fixed test
part). The estimate is the mean over seeds of each seed's mean difference over all its images. Its confidence
interval comes from a hierarchical percentile bootstrap: images are resampled with replacement within each (seed,
part) group, the estimate recomputed, and the 2.5 and 97.5 percentiles taken. Seeds are not resampled (with three
to five seeds a bootstrap over seeds says little); seed-to-seed spread is shown by the per-seed sign agreement.
On a retention set (every seed scored the same images) the report draws an image once for all seeds
(:func:`shared_image_bootstrap`): seeds' differences on one image are correlated, and drawing them independently
would narrow the interval. Test sets keep the hierarchical bootstrap the grids registered before their first run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

N_BOOT = 10_000
"""Bootstrap replicates of every interval the report gives (the default of :func:`hierarchical_bootstrap`,
:func:`shared_image_bootstrap` and the report). 10,000, not the earlier 2,000: a 2.5th percentile taken from 2,000
replicates rests on 50 of them, and its Monte-Carlo error was large enough to put the ECSSD LoRA IoU interval's
edge on the wrong side of zero in the LiteMedSAM encoder grid (issue 33). The resampling stays seeded
(``seed=0``), so a page regenerated from the same records gives the same intervals."""


@dataclass(frozen=True)
class Interval:
    """An estimate with a confidence interval ``[low, high]`` at ``level``."""

    estimate: float
    low: float
    high: float
    level: float = 0.95


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; NaN for fewer than two values) of ``values``."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_std needs at least one value")
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan


def paired_differences(
    treated: Mapping[str, float], baseline: Mapping[str, float], *, name: str = "scores"
) -> np.ndarray:
    """Per-image differences ``treated[id] - baseline[id]``, ordered by id.

    Raises:
        ValueError: the two sides do not score exactly the same images (the message names a few that differ).
    """
    if set(treated) != set(baseline):
        only = sorted(set(treated) ^ set(baseline))
        raise ValueError(
            f"{name}: the paired sides score different images, e.g. {only[:3]} ({len(only)} differ)"
        )
    ids = sorted(treated)
    return np.array([treated[i] - baseline[i] for i in ids], dtype=np.float64)


def _check_groups(groups: Mapping[object, Sequence[np.ndarray]]) -> list[list[np.ndarray]]:
    out = []
    for seed, parts in groups.items():
        arrays = [np.asarray(p, dtype=np.float64).ravel() for p in parts]
        if not arrays or any(a.size == 0 for a in arrays):
            raise ValueError(f"seed {seed!r}: every part needs at least one image")
        out.append(arrays)
    if not out:
        raise ValueError("no seeds to bootstrap over")
    return out


def seed_means(groups: Mapping[object, Sequence[np.ndarray]]) -> dict[object, float]:
    """Each seed's mean over all its images (its parts pooled): ``{seed: mean}``."""
    checked = _check_groups(groups)
    return {seed: float(np.concatenate(parts).mean()) for seed, parts in zip(groups, checked, strict=True)}


def hierarchical_bootstrap(
    groups: Mapping[object, Sequence[np.ndarray]],
    *,
    n_boot: int = N_BOOT,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Mean over seeds of per-seed mean differences, with a percentile CI from resampling images within each part.

    Args:
        groups: ``{seed: [d_part1, d_part2, ...]}``, each ``d`` a 1-D array of per-image paired differences.
        n_boot: bootstrap replicates (:data:`N_BOOT`: 10,000, for stable percentile edges).
        level: coverage of the interval (0.95: the 2.5 and 97.5 percentiles).
        seed: seed of the resampling (the interval is reproducible).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    checked = _check_groups(groups)
    rng = np.random.default_rng(seed)
    estimate = float(np.mean([np.concatenate(parts).mean() for parts in checked]))
    replicates = np.zeros(n_boot)
    for parts in checked:
        total = np.zeros(n_boot)
        for d in parts:
            total += d[rng.integers(0, d.size, size=(n_boot, d.size))].sum(axis=1)
        replicates += total / sum(d.size for d in parts)
    replicates /= len(checked)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    # Floating-point sums of identical values can drift by an ulp; the interval always contains the estimate.
    return Interval(estimate, float(min(low, estimate)), float(max(high, estimate)), level)


def shared_image_bootstrap(
    per_seed: Mapping[object, Mapping[str, float]],
    *,
    strata: Mapping[str, object] | None = None,
    n_boot: int = N_BOOT,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Mean over seeds of per-seed mean differences when every seed scores the same images: each image is
    resampled once for all seeds.

    Two trainings that differ only in seed score the same image alike (their differences on one image correlate,
    about 0.35 on the LiteMedSAM retention sets), so resampling each seed's images independently, as
    :func:`hierarchical_bootstrap` does, treats correlated values as independent and gives too narrow an
    interval. Here a replicate draws image ids with replacement (within each stratum) and takes every seed's
    differences on the drawn images together. Since every seed has every image, the replicate equals the mean
    over the drawn images of each image's mean over seeds.

    Args:
        per_seed: ``{seed: {image_id: d}}``; every seed must hold the same image ids.
        strata: ``{image_id: part}``: images are resampled within their part (a fold), as the split tested them;
            ``None``: one stratum.
        n_boot, level, seed: as in :func:`hierarchical_bootstrap`.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not per_seed:
        raise ValueError("no seeds to bootstrap over")
    seeds = list(per_seed)
    ids = sorted(per_seed[seeds[0]])
    if not ids:
        raise ValueError(f"seed {seeds[0]!r}: needs at least one image")
    for s in seeds[1:]:
        if set(per_seed[s]) != set(ids):
            only = sorted(set(per_seed[s]) ^ set(ids))
            raise ValueError(f"seeds {seeds[0]!r} and {s!r} score different images, e.g. {only[:3]}")
    by_image = np.array([[float(per_seed[s][i]) for i in ids] for s in seeds], dtype=np.float64).mean(axis=0)
    estimate = float(np.mean([np.mean([float(per_seed[s][i]) for i in ids]) for s in seeds]))
    if strata is None:
        parts = [by_image]
    else:
        missing = [i for i in ids if i not in strata]
        if missing:
            raise ValueError(f"strata lack images, e.g. {missing[:3]}")
        order: dict[object, list[int]] = {}
        for k, i in enumerate(ids):
            order.setdefault(strata[i], []).append(k)
        parts = [by_image[np.array(ks)] for ks in order.values()]
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    for d in parts:
        total += d[rng.integers(0, d.size, size=(n_boot, d.size))].sum(axis=1)
    replicates = total / by_image.size
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return Interval(estimate, float(min(low, estimate)), float(max(high, estimate)), level)


def sign_agreement(per_seed: Sequence[float], estimate: float) -> tuple[int, int]:
    """How many per-seed values share the sign of ``estimate`` (zero agrees only with zero), and how many seeds."""
    sign = np.sign(estimate)
    values = np.asarray(per_seed, dtype=np.float64)
    return int((np.sign(values) == sign).sum()), int(values.size)


def relative(score: float, reference: float) -> float:
    """``score / reference`` (retention: the student's score on a set relative to the zero-shot teacher's)."""
    if reference == 0:
        return math.nan
    return score / reference


def run_level(run_means: Sequence[float], *, level: float = 0.95) -> dict[str, float]:
    """The run-level view of a paired comparison: one value per training run (e.g. a fold or a seed: the mean
    paired difference over that run's images), each run an independent replicate of the whole training.

    Returns ``mean``, a Student-t interval ``t_low``/``t_high`` over the run values (``scipy.stats.t``; NaN with
    fewer than two runs), ``positive`` (runs above zero), ``negative`` (below) and ``n_runs``. Unlike the image
    bootstrap (which holds every trained model fixed), this interval counts the variation between trainings.
    """
    from scipy import stats as sps

    values = np.asarray(run_means, dtype=np.float64)
    if values.size == 0:
        raise ValueError("run_level needs at least one run")
    mean = float(values.mean())
    low = high = math.nan
    if values.size >= 2:
        half = float(
            sps.t.ppf(0.5 + level / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
        )
        low, high = mean - half, mean + half
    return {
        "mean": mean,
        "t_low": low,
        "t_high": high,
        "positive": int((values > 0).sum()),
        "negative": int((values < 0).sum()),
        "n_runs": int(values.size),
    }
