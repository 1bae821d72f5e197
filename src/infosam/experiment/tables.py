"""The report's numbers: per-seed scores, summaries over seeds, paired differences, retention, and the InfoSAM
loss terms during training.

Pure functions of the collected results (:mod:`infosam.experiment.collect`); the statistics themselves are
:mod:`infosam.stats`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from .. import stats
from .collect import TEACHER, CellResult, set_source, teacher_rows
from .grid import Grid
from .plan import RETENTION, TEST


def seed_scores(results: list[CellResult], metrics: list[str]) -> list[dict]:
    """One row per (dataset, regime, set, arm, seed): each metric's mean over the seed's images (parts pooled)."""
    pooled: dict[tuple, dict[str, dict[str, float]]] = defaultdict(dict)
    parts: dict[tuple, set] = defaultdict(set)
    for r in results:
        for name, rows in r.sets.items():
            key = (r.cell.dataset, r.cell.regime, name, r.cell.arm, r.cell.seed)
            # Retention sets are the same images in every part: average over parts per image.
            for image_id, values in rows.items():
                pooled[key].setdefault(f"{r.cell.part}|{image_id}" if name == TEST else image_id, [])
                pooled[key][f"{r.cell.part}|{image_id}" if name == TEST else image_id].append(values)
            parts[key].add(r.cell.part)
    out = []
    for key, images in sorted(pooled.items(), key=lambda kv: tuple(map(str, kv[0]))):
        row = dict(zip(("dataset", "regime", "set", "arm", "seed"), key, strict=True))
        row.update(n_images=len(images), n_parts=len(parts[key]))
        for m in metrics:
            row[m] = float(np.mean([np.mean([v[m] for v in vs]) for vs in images.values()]))
        out.append(row)
    return out


def teacher_scores(exp_dir: Path, results: list[CellResult], metrics: list[str]) -> list[dict]:
    """The zero-shot teacher's mean per (dataset, regime, set), over the same images the students were scored on."""
    seen: dict[tuple, dict[str, dict[str, float]]] = {}
    for r in results:
        for name in r.sets:
            key = (r.cell.dataset, r.cell.regime, name)
            dataset, split = set_source(r.cell, name)
            rows = teacher_rows(exp_dir, dataset, split)
            if rows is None:
                continue
            bucket = seen.setdefault(key, {})
            for image_id, values in rows.items():
                bucket[f"{r.cell.part}|{image_id}" if name == TEST else image_id] = values
    out = []
    for key, images in sorted(seen.items()):
        row = dict(zip(("dataset", "regime", "set"), key, strict=True))
        row.update(arm=TEACHER, seed="", n_images=len(images))
        for m in metrics:
            row[m] = float(np.mean([v[m] for v in images.values()]))
        out.append(row)
    return out


def arm_summary(rows: list[dict], metrics: list[str]) -> list[dict]:
    """Mean +- std over seeds per (dataset, regime, set, arm)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["dataset"], row["regime"], row["set"], row["arm"])].append(row)
    out = []
    for key, group in groups.items():
        row = dict(zip(("dataset", "regime", "set", "arm"), key, strict=True))
        row["n_seeds"] = len(group)
        for m in metrics:
            mean, std = stats.mean_std([g[m] for g in group])
            row[f"{m}_mean"], row[f"{m}_std"] = mean, std
        out.append(row)
    return out


def paired_table(
    results: list[CellResult], grid: Grid, metrics: list[str], *, n_boot: int = stats.N_BOOT
) -> list[dict]:
    """Each arm minus its baseline, then each ``report.compare`` pair (first arm minus second), per (dataset, regime,
    set, metric): hierarchical-bootstrap CI over images within (seed, part), per-seed means and how many seeds agree
    in sign. A pair counts the cells both arms ran (same dataset, part and seed)."""
    by_key = {(r.cell.dataset, r.cell.part, r.cell.arm, r.cell.seed): r for r in results}
    pairs = [(a.name, a.baseline) for a in grid.arms.values() if a.baseline is not None] + list(grid.compare)
    out = []
    for arm, baseline in pairs:
        settings: dict[tuple, dict[str, dict[int, list[tuple[str, CellResult, CellResult]]]]] = {}
        for r in results:
            if r.cell.arm != arm:
                continue
            base = by_key.get((r.cell.dataset, r.cell.part, baseline, r.cell.seed))
            if base is None:
                continue
            for name in r.sets:
                if name not in base.sets:
                    continue
                setting = settings.setdefault((r.cell.dataset, r.cell.regime, name), {})
                setting.setdefault(r.cell.seed, []).append((r.cell.part, r, base))
        for (dataset, regime, name), seeds in sorted(settings.items(), key=lambda kv: kv[0]):
            for m in metrics:
                out.append(_paired_row(arm, baseline, dataset, regime, name, seeds, m, n_boot))
    return out


def _paired_row(
    arm: str, baseline: str, dataset: str, regime: str, name: str, seeds: dict, m: str, n_boot: int
) -> dict:
    """One row of :func:`paired_table`: ``arm`` minus ``baseline`` in metric ``m`` on the set ``name`` of one
    setting, ``seeds`` ``{seed: [(part, treated, baseline)]}``."""
    groups: dict[int, list[np.ndarray]] = {}
    by_id: dict[int, dict[str, float]] = {}  # per seed: image id -> difference (parts pooled)
    strata: dict[int, dict[str, str]] = {}  # per seed: image id -> the part that tested it
    runs: list[float] = []
    for seed, pairs in sorted(seeds.items()):
        diffs = []
        ids: list[list[str]] = []
        for part, treated, base in pairs:
            where = f"{dataset}/{part}/{name} seed {seed}"
            t = {i: v[m] for i, v in treated.sets[name].items()}
            b = {i: v[m] for i, v in base.sets[name].items()}
            diffs.append(stats.paired_differences(t, b, name=where))
            ids.append(sorted(t))  # paired_differences orders by id
        runs.extend(float(np.mean(d)) for d in diffs)  # one value per trained (part, seed)
        if name != TEST:  # retention: the same images in every part; average over parts first
            diffs, ids = [np.mean(diffs, axis=0)], ids[:1]
            parts = ["all"]
        else:
            parts = [part for part, _, _ in pairs]
        groups[seed] = diffs
        by_id[seed] = {
            i: float(v)
            for d, part_ids in zip(diffs, ids, strict=True)
            for i, v in zip(part_ids, d, strict=True)
        }
        strata[seed] = {i: p for p, part_ids in zip(parts, ids, strict=True) for i in part_ids}
    first = next(iter(strata.values()))
    if name != TEST and len(groups) > 1 and all(s == first for s in strata.values()):
        # A retention set: every seed scored the same images. Resample each image once for all
        # seeds, since seeds' differences on one image are correlated (about 0.35 on the encoder
        # page); resampling them per seed gives too narrow an interval. The test sets keep the
        # hierarchical bootstrap the grids registered before their first run (images within seed and
        # part), which a result may not change.
        ci = stats.shared_image_bootstrap(by_id, strata=first, n_boot=n_boot)
    else:
        ci = stats.hierarchical_bootstrap(groups, n_boot=n_boot)
    per_seed = stats.seed_means(groups)
    agree, total = stats.sign_agreement(list(per_seed.values()), ci.estimate)
    run = stats.run_level(runs)
    return {
        "dataset": dataset,
        "regime": regime,
        "set": name,
        "arm": arm,
        "baseline": baseline,
        "metric": m,
        "difference": ci.estimate,
        "ci_low": ci.low,
        "ci_high": ci.high,
        "seeds_agree": agree,
        "n_seeds": total,
        "n_images": sum(len(d) for g in groups.values() for d in g) // max(1, len(groups)),
        "per_seed": ";".join(f"{s}:{v:.6f}" for s, v in per_seed.items()),
        "runs_positive": run["positive"],
        "runs_negative": run["negative"],
        "n_runs": run["n_runs"],
        "run_mean": run["mean"],
        "run_t_low": run["t_low"],
        "run_t_high": run["t_high"],
        "verdict": _verdict(ci.low, ci.high, run["t_low"], run["t_high"]),
    }


def _verdict(ci_low: float, ci_high: float, t_low: float, t_high: float) -> str:
    """The comparison worded by the weaker of its two intervals: the image bootstrap (models fixed) and the
    run-level t interval (trainings as replicates; NaN with one run). Only when both exclude zero on the same
    side is a difference called one."""

    def side(low: float, high: float) -> int:
        if math.isnan(low) or math.isnan(high):
            return 0
        return 1 if low > 0 else -1 if high < 0 else 0

    image, run = side(ci_low, ci_high), side(t_low, t_high)
    if image == run != 0:
        return "better" if image > 0 else "worse"
    if image != 0:
        return ("better" if image > 0 else "worse") + " on these images only (not across trainings)"
    return "no clear difference"


def retention_table(rows: list[dict], teacher: list[dict], metrics: list[str]) -> list[dict]:
    """Score on each retention set relative to the zero-shot teacher's on the same images, mean +- std over
    seeds per (dataset, regime, set, arm)."""
    ref = {(t["dataset"], t["regime"], t["set"]): t for t in teacher}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if row["set"].startswith(RETENTION):
            groups[(row["dataset"], row["regime"], row["set"], row["arm"])].append(row)
    out = []
    for key, group in sorted(groups.items()):
        t = ref.get(key[:3])
        if t is None:
            continue
        row = dict(zip(("dataset", "regime", "set", "arm"), key, strict=True))
        row["n_seeds"] = len(group)
        for m in metrics:
            mean, std = stats.mean_std([stats.relative(g[m], t[m]) for g in group])
            row[f"{m}_teacher"] = t[m]
            row[f"{m}_relative_mean"], row[f"{m}_relative_std"] = mean, std
        out.append(row)
    return out


LOSS_TERMS = ("seg", "relation", "distill")
"""The training log's columns the loss-terms table reads: L_seg, L_r and L_d (as ``train.py`` logs them)."""

RELATION_TERMS = ("s_rt", "s_rs", "i_rt_rs", "rt_cosine", "rt_std")
"""The relation statistics the loss-terms table adds when the runs logged them (``train.py``'s metrics.csv since
the MobileSAM grid; :data:`infosam.distill.loss.RELATION_STATS`): S(r_t), S(r_s), I(r_t; r_s), the teacher maps'
mean pairwise cosine and their values' spread."""

S_RT_PREDICTION = 0.5
"""The pre-registered mechanism prediction of the MobileSAM grid: with both terms, S(r_t) ends below this (bits)."""


def loss_terms_table(results: list[CellResult]) -> list[dict]:
    """Per dataset and arm: each loss term averaged over a run's first and over its last logged epoch, then the
    mean over the arm's runs (``n_runs``; every finished cell with a training log). A term the arm does not have
    (L_r and L_d of a plain PEFT arm) is NaN. Empty when no arm logged the InfoSAM terms.

    The distillation term is L_d = -I(r_t; r_s), so ``distill_*`` is minus the mutual information (bits) between
    the teacher's and the student's relation maps over the batch."""
    per_arm: dict[tuple[str, str], list[dict]] = defaultdict(list)
    logged = any("s_rt" in row for r in results for row in r.train_log)
    terms = LOSS_TERMS + (RELATION_TERMS if logged else ())
    for r in results:
        rows = [row for row in r.train_log if "epoch" in row]
        if not rows or not any("seg" in row for row in rows):
            continue
        first, last = min(row["epoch"] for row in rows), max(row["epoch"] for row in rows)
        run = {"first_epoch": first, "last_epoch": last}
        for term in terms:
            for name, epoch in (("first", first), ("last", last)):
                values = [row[term] for row in rows if row["epoch"] == epoch and term in row]
                run[f"{term}_{name}"] = float(np.mean(values)) if values else math.nan
        per_arm[(r.cell.dataset, r.cell.arm)].append(run)
    table = []
    for (dataset, arm), runs in sorted(per_arm.items()):
        row = {"dataset": dataset, "arm": arm, "n_runs": len(runs)}
        row["first_epoch"] = int(min(x["first_epoch"] for x in runs))
        row["last_epoch"] = int(max(x["last_epoch"] for x in runs))
        for term in terms:
            for name in ("first", "last"):
                row[f"{term}_{name}"] = float(np.mean([x[f"{term}_{name}"] for x in runs]))
        with_distill = [x for x in runs if not math.isnan(x["distill_first"])]
        row["runs_mi_fell"] = sum(x["distill_last"] > x["distill_first"] for x in with_distill)
        row["runs_with_distill"] = len(with_distill)
        if logged:
            with_stats = [x for x in runs if not math.isnan(x["s_rt_first"])]
            row["runs_with_stats"] = len(with_stats)
            row["runs_i_rose"] = sum(x["i_rt_rs_last"] > x["i_rt_rs_first"] for x in with_stats)
            row["runs_s_rt_below"] = sum(x["s_rt_last"] < S_RT_PREDICTION for x in with_stats)
        table.append(row)
    if not any(r["runs_with_distill"] for r in table):
        return []
    return table
