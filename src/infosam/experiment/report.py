"""``infosam report``: tables, paired statistics and figures from an experiment folder.

Writes into ``<exp>/report/`` (or another folder ``DIR``: ``DIR/report.md`` with its assets beside it in
``DIR``), or, when the output names a Markdown file ``NAME.md``, that file with its assets in the folder ``NAME/``
beside it (``docs/results/litemedsam.md`` + ``docs/results/litemedsam/``), so a report can be committed as a
results page. The Markdown links its figures relative to itself.

- the Markdown: mean +- std over seeds per arm and metric (folds pooled: each image counted once per seed), the
  paired differences InfoSAM minus its baseline with 95% hierarchical-bootstrap intervals and sign agreement over
  seeds, retention relative to the zero-shot teacher, links to the figures, and how the numbers were made (grid
  file, the commands, devices and wall time of the cells, the machine that wrote the report);
- ``scores.csv`` (per arm and seed), ``summary.csv`` (per arm), ``paired.csv``, ``retention.csv``;
- ``per_image.csv``: every finished cell's final score per scored set and image, and the zero-shot teacher's;
- ``splits/<dataset>/<split>.csv``: the experiment's exact image lists;
- ``figures/curves-<dataset>-<regime>.png``: target and retention scores per evaluated epoch;
- ``figures/relation-<dataset>-<regime>.png``: relation maps of teacher and student for a few test images.

A partly run grid is reported from its finished cells (the header says how many of the grid's cells finished);
a spread or interval that does not exist (one seed) is shown as ``-``.

The statistics are the pure functions of :mod:`infosam.stats`; this module only gathers the numbers.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import re
import shlex
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .. import stats
from ..files import atomic_write, atomic_write_text
from ..metrics import METRIC_NAMES
from .grid import Cell, Grid, cells, model_config
from .records import read_test_curve
from .runner import CELL_FILE, EXPERIMENT_FILE, GRID_COPY, cell_dir, load_experiment_grid, teacher_dir

TEACHER = "teacher (zero-shot)"
LOWER_IS_BETTER = {"MAE"}
TITLE = "# Experiment report"
"""First words of every report's Markdown: an existing ``.md`` output that does not start so is never replaced."""


@dataclass
class CellResult:
    cell: Cell
    sets: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """Per scored set (``test``, ``retention-<dataset>``): ``{image id: {metric: value}}``."""
    curves: dict[str, dict[int, tuple[dict, int]]] = field(default_factory=dict)
    """Per set: ``{epoch: (summary, n_images)}``."""
    info: dict = field(default_factory=dict)
    """The cell's ``cell.json`` (status, ``train_seconds``, ``eval_seconds``, ``device``)."""


def _rows_by_id(path: Path) -> dict[str, dict[str, float]]:
    from ..evaluate import read_evaluation

    rows, _ = read_evaluation(path)
    return {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in rows}


def collect(exp_dir: Path, grid: Grid) -> tuple[list[CellResult], int]:
    """The finished cells' per-image scores and curves, and the number of cells in the grid."""
    from ..runview import read_run

    todo = cells(grid)
    results = []
    for cell in todo:
        folder = cell_dir(exp_dir, cell)
        info_path = folder / CELL_FILE
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        if info.get("status") != "done":
            continue
        result = CellResult(cell, info=info)
        names = ["test"] + [f"retention-{o}" for o in grid.datasets[cell.dataset].retention]
        test_curve = read_test_curve(folder)  # a results record; an experiment folder has the run itself
        if test_curve is None:
            record = read_run(folder / "run")
            test_curve, epochs = record.epoch_evals, record.config.train.epochs
        else:
            epochs = int(info["epochs"])
        for name in names:
            if not (folder / "eval" / name / "summary.json").is_file():
                continue
            result.sets[name] = _rows_by_id(folder / "eval" / name)
            curve: dict[int, tuple[dict, int]] = {}
            if name == "test":
                for epoch, summary in test_curve.items():
                    curve[epoch] = (summary, int(summary.get("n_images", 0)))
            else:
                for path in sorted((folder / "eval" / name).glob("epoch-*/summary.json")):
                    summary = json.loads(path.read_text(encoding="utf-8"))
                    curve[int(path.parent.name.split("-")[1])] = (summary, int(summary["n_images"]))
                final = json.loads((folder / "eval" / name / "summary.json").read_text(encoding="utf-8"))
                curve[epochs] = (final, int(final["n_images"]))
            result.curves[name] = curve
        results.append(result)
    return results, len(todo)


def _teacher_rows(exp_dir: Path, dataset: str, split: str) -> dict[str, dict[str, float]] | None:
    path = teacher_dir(exp_dir, dataset, split)
    return _rows_by_id(path) if (path / "summary.json").is_file() else None


def _set_source(cell: Cell, name: str) -> tuple[str, str]:
    """(dataset, split) a scored set of a cell comes from."""
    if name == "test":
        return cell.dataset, f"{cell.part}-test"
    return name.removeprefix("retention-"), "heldout"


# --------------------------------------------------------------------------------------------- the numbers


def seed_scores(results: list[CellResult], metrics: list[str]) -> list[dict]:
    """One row per (dataset, regime, set, arm, seed): each metric's mean over the seed's images (parts pooled)."""
    pooled: dict[tuple, dict[str, dict[str, float]]] = defaultdict(dict)
    parts: dict[tuple, set] = defaultdict(set)
    for r in results:
        for name, rows in r.sets.items():
            key = (r.cell.dataset, r.cell.regime, name, r.cell.arm, r.cell.seed)
            # Retention sets are the same images in every part: average over parts per image.
            for image_id, values in rows.items():
                pooled[key].setdefault(f"{r.cell.part}|{image_id}" if name == "test" else image_id, [])
                pooled[key][f"{r.cell.part}|{image_id}" if name == "test" else image_id].append(values)
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
            dataset, split = _set_source(r.cell, name)
            rows = _teacher_rows(exp_dir, dataset, split)
            if rows is None:
                continue
            bucket = seen.setdefault(key, {})
            for image_id, values in rows.items():
                bucket[f"{r.cell.part}|{image_id}" if name == "test" else image_id] = values
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
    results: list[CellResult], grid: Grid, metrics: list[str], *, n_boot: int = 2000
) -> list[dict]:
    """InfoSAM arm minus its baseline per (dataset, regime, set, metric): hierarchical-bootstrap CI over images
    within (seed, part), per-seed means and how many seeds agree in sign."""
    by_key = {(r.cell.dataset, r.cell.part, r.cell.arm, r.cell.seed): r for r in results}
    out = []
    for arm in grid.arms.values():
        if arm.baseline is None:
            continue
        settings: dict[tuple, dict[str, dict[int, list[tuple[str, CellResult, CellResult]]]]] = {}
        for r in results:
            if r.cell.arm != arm.name:
                continue
            base = by_key.get((r.cell.dataset, r.cell.part, arm.baseline, r.cell.seed))
            if base is None:
                continue
            for name in r.sets:
                if name not in base.sets:
                    continue
                setting = settings.setdefault((r.cell.dataset, r.cell.regime, name), {})
                setting.setdefault(r.cell.seed, []).append((r.cell.part, r, base))
        for (dataset, regime, name), seeds in sorted(settings.items(), key=lambda kv: kv[0]):
            for m in metrics:
                groups: dict[int, list[np.ndarray]] = {}
                runs: list[float] = []
                for seed, pairs in sorted(seeds.items()):
                    diffs = []
                    for part, treated, base in pairs:
                        where = f"{dataset}/{part}/{name} seed {seed}"
                        t = {i: v[m] for i, v in treated.sets[name].items()}
                        b = {i: v[m] for i, v in base.sets[name].items()}
                        diffs.append(stats.paired_differences(t, b, name=where))
                    runs.extend(float(np.mean(d)) for d in diffs)  # one value per trained (part, seed)
                    if name != "test":  # retention: the same images in every part; average over parts first
                        diffs = [np.mean(diffs, axis=0)]
                    groups[seed] = diffs
                ci = stats.hierarchical_bootstrap(groups, n_boot=n_boot)
                per_seed = stats.seed_means(groups)
                agree, total = stats.sign_agreement(list(per_seed.values()), ci.estimate)
                run = stats.run_level(runs)
                out.append(
                    {
                        "dataset": dataset,
                        "regime": regime,
                        "set": name,
                        "arm": arm.name,
                        "baseline": arm.baseline,
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
                )
    return out


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
        if row["set"].startswith("retention-"):
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


def per_image_rows(exp_dir: Path, results: list[CellResult], metrics: list[str]) -> list[dict]:
    """One row per (finished cell, scored set, image): the final weights' score in every metric; then the zero-shot
    teacher's rows (``arm`` = ``teacher (zero-shot)``, ``seed`` empty) for every (dataset, part, set) those cells
    were scored on, so teacher and student rows join on (dataset, part, set, id)."""
    rows = []
    sources: dict[tuple[str, str, str], tuple[str, str]] = {}
    for r in results:
        for name, images in r.sets.items():
            where = {"dataset": r.cell.dataset, "part": r.cell.part, "arm": r.cell.arm, "seed": r.cell.seed}
            for image_id, values in images.items():
                rows.append({**where, "set": name, "id": image_id, **{m: values[m] for m in metrics}})
            sources.setdefault((r.cell.dataset, r.cell.part, name), _set_source(r.cell, name))
    teacher: dict[tuple[str, str], dict[str, dict[str, float]] | None] = {}
    for (dataset, part, name), source in sources.items():
        if source not in teacher:
            teacher[source] = _teacher_rows(exp_dir, *source)
        where = {"dataset": dataset, "part": part, "arm": TEACHER, "seed": ""}
        for image_id, values in (teacher[source] or {}).items():
            rows.append({**where, "set": name, "id": image_id, **{m: values[m] for m in metrics}})
    return rows


# --------------------------------------------------------------------------------------------- files


def _write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    """``rows`` as CSV (columns: ``fields``, then any other key in order of appearance), written atomically."""
    fields = list(fields or [])
    for row in rows:
        fields += [k for k in row if k not in fields]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def _copy_splits(exp_dir: Path, folder: Path) -> list[Path]:
    """Copy the experiment's split lists (``splits/**/*.csv``) into ``folder``, keeping their relative paths."""
    written = []
    for path in sorted((exp_dir / "splits").rglob("*.csv")):
        written.append(
            atomic_write_text(folder / path.relative_to(exp_dir / "splits"), path.read_text("utf-8"))
        )
    return written


def _undefined(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _pct(metric: str, value: float) -> str:
    if _undefined(value):
        return "n/a"
    return f"{value:.3f}" if metric in LOWER_IS_BETTER else f"{100 * value:.1f}"


def _pm(metric: str, mean: float, std: float) -> str:
    """``mean ± std``; ``-`` for a spread that does not exist (one seed)."""
    return f"{_pct(metric, mean)} ± {'-' if _undefined(std) else _pct(metric, std)}"


def _points(metric: str, value: float) -> str:
    """A difference in points (MAE: as a fraction); a value that would round to zero but is not keeps two
    significant digits (``+4.0e-05``), so a bound just above zero never reads as zero."""
    if _undefined(value):
        return "-"
    shown, digits = (value, 4) if metric in LOWER_IS_BETTER else (100 * value, 2)
    text = f"{shown:+.{digits}f}"
    if shown != 0 and float(text) == 0:
        return f"{shown:+.1e}"
    return text


def _relative(mean: float, std: float) -> str:
    if _undefined(mean):
        return "-"
    return f"{100 * mean:.1f}% ± {'-' if _undefined(std) else f'{100 * std:.1f}'}"


def report_paths(exp_dir: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """(Markdown file, asset folder) of a report of ``exp_dir`` written to ``out``.

    ``out`` a folder ``DIR`` (default ``<exp_dir>/report``): ``DIR/report.md`` and ``DIR``. ``out`` a path ending
    in ``.md`` that is not an existing folder: that file, and the folder beside it with the file's stem."""
    if out is None:
        folder = Path(exp_dir).expanduser() / "report"
        return folder / "report.md", folder
    out = Path(out).expanduser()
    if out.suffix.lower() == ".md" and not out.is_dir():
        return out, out.with_suffix("")
    return out / "report.md", out


def _check_outputs(md: Path, assets: Path) -> None:
    if assets.exists() and not assets.is_dir():
        raise FileExistsError(
            f"{assets} is a file: the report's tables and figures go into a folder of that name"
        )
    if md.is_file():
        with open(md, encoding="utf-8", errors="replace") as f:
            first = f.readline()
        if not first.startswith(TITLE):
            raise FileExistsError(
                f"{md} exists and is not an infosam report (its first line does not start with {TITLE!r}); "
                "refusing to replace it: give another --out"
            )


def write_report(
    exp_dir: str | Path, out: str | Path | None = None, *, n_boot: int = 2000, show_images: bool = True
) -> Path:
    """Write the report of the experiment folder ``exp_dir`` to ``out``; returns the Markdown file's path.

    ``out``: a folder (default ``<exp_dir>/report``; the Markdown is its ``report.md``) or a Markdown file
    ``NAME.md`` (its assets go into ``NAME/`` beside it), see :func:`report_paths`. Files of the report are
    replaced atomically; nothing else in the output folder is touched."""
    exp_dir = Path(exp_dir).expanduser().resolve()
    grid = load_experiment_grid(exp_dir)
    md, assets = report_paths(exp_dir, out)
    _check_outputs(md, assets)
    (assets / "figures").mkdir(parents=True, exist_ok=True)
    finished, total = collect(exp_dir, grid)
    # Scores, retention and curves average over a seed's images: only whole seeds (every part and arm of the
    # regime finished) keep every row on the same images. Paired differences pair cells themselves: all of them.
    results = complete_seeds(finished, grid)
    metrics = list(METRIC_NAMES)
    rows = seed_scores(results, metrics)
    teacher = teacher_scores(exp_dir, results, metrics)
    summary = arm_summary(rows, metrics)
    paired = paired_table(finished, grid, grid.metrics, n_boot=n_boot)
    retention = retention_table(rows, teacher, grid.metrics)
    _write_csv(assets / "scores.csv", teacher + rows)
    _write_csv(assets / "summary.csv", summary)
    _write_csv(assets / "paired.csv", paired)
    _write_csv(assets / "retention.csv", retention)
    _write_csv(
        assets / "per_image.csv",
        per_image_rows(exp_dir, finished, metrics),
        ["dataset", "part", "arm", "seed", "set", "id", *metrics],
    )
    _copy_splits(exp_dir, assets / "splits")
    figures = _curve_figures(results, teacher, grid, assets / "figures")
    figures += _relation_figures(finished, grid, exp_dir, assets / "figures", show_images=show_images)
    text = _markdown(
        grid,
        exp_dir,
        (len(finished), len(results)),
        total,
        summary,
        teacher,
        paired,
        retention,
        figures,
        n_boot,
        md,
    )
    text += (
        "\n".join(_files_section(md, assets) + provenance(exp_dir, grid, finished, total, md, assets)) + "\n"
    )
    atomic_write_text(md, text)
    return md


def _link(path: Path, md: Path) -> str:
    """``path`` relative to the folder of the Markdown file ``md``, with forward slashes (a Markdown link)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(md).resolve().parent)).as_posix()


_NO_WHOLE_SEED = "No whole seed has finished yet (see the paired differences for the finished pairs)."


def _markdown(grid, exp_dir, counts, total, summary, teacher, paired, retention, figures, n_boot, md) -> str:
    m = grid.metrics
    done, whole = counts
    partial = ""
    if done < total:
        partial = (
            f" (the score and retention tables and the curves use the {whole} cells of whole seeds: seeds in "
            "which every fold or part and every arm of a regime finished, so each row covers the same images; "
            f"the paired differences use every finished pair)"
        )
    lines = [
        f"{TITLE}: {_grid_name(exp_dir, grid)}",
        "",
        f"{'Results record' if 'record_version' in _experiment_info(exp_dir) else 'Experiment folder'} "
        f"`{exp_dir.name}`; {done} of {total} cells finished"
        + partial
        + f"; seeds {grid.seeds}; arms "
        + ", ".join(
            f"`{a}`" + (f" (paired with `{v.baseline}`)" if v.baseline else "") for a, v in grid.arms.items()
        )
        + ".",
        "",
        "Scores in percent (MAE as a fraction). k-fold settings pool the folds: every image is tested once per seed. "
        "'-': a spread or interval that does not exist (one seed).",
        "",
        *_grid_description(exp_dir, grid),
        "## Scores (mean ± std over seeds)",
        "",
        *([] if summary else [_NO_WHOLE_SEED, ""]),
        "| dataset | regime | set | arm | seeds | " + " | ".join(m) + " |",
        "|---|---|---|---|---|" + "---|" * len(m),
    ]
    for t in teacher:
        lines.append(
            f"| {t['dataset']} | {t['regime']} | {t['set']} | {TEACHER} | - | "
            + " | ".join(_pct(k, t[k]) for k in m)
            + " |"
        )
    for s in sorted(summary, key=lambda r: (r["dataset"], r["regime"], r["set"], r["arm"])):
        lines.append(
            f"| {s['dataset']} | {s['regime']} | {s['set']} | {s['arm']} | {s['n_seeds']} | "
            + " | ".join(_pm(k, s[f"{k}_mean"], s[f"{k}_std"]) for k in m)
            + " |"
        )
    lines += [
        "",
        "## Paired differences (arm minus its baseline; same seed, same split, same images)",
        "",
        f"Difference in points (MAE: as a fraction). Two views, and the reading goes by the weaker: the image "
        f"bootstrap (95%, {n_boot} replicates, resampling images within each seed and split part) holds every "
        "trained model fixed, so it shows how sure we are about *these* models on these images; the run-level "
        "view takes each training run (a fold or a seed: its mean difference over its images) as one replicate: "
        "how many runs went each way, and a Student-t 95% interval over the runs (needs two runs or more). "
        "'seeds agree': seeds whose own mean difference has the sign of the estimate.",
        "",
        "| dataset | regime | set | arm - baseline | metric | difference | image-bootstrap 95% CI | seeds agree "
        "| runs + / - | run-level t 95% CI | reading |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in paired:
        ci = (
            "-"
            if _undefined(p["ci_low"]) or _undefined(p["ci_high"])
            else f"[{_points(p['metric'], p['ci_low'])}, {_points(p['metric'], p['ci_high'])}]"
        )
        t_ci = (
            "-"
            if _undefined(p["run_t_low"]) or _undefined(p["run_t_high"])
            else f"[{_points(p['metric'], p['run_t_low'])}, {_points(p['metric'], p['run_t_high'])}]"
        )
        lines.append(
            f"| {p['dataset']} | {p['regime']} | {p['set']} | {p['arm']} - {p['baseline']} | {p['metric']} | "
            f"{_points(p['metric'], p['difference'])} | {ci} | {p['seeds_agree']}/{p['n_seeds']} | "
            f"{p['runs_positive']} / {p['runs_negative']} of {p['n_runs']} | {t_ci} | {p['verdict']} |"
        )
    lines += [
        "",
        "## Retention (score on another domain relative to the zero-shot teacher on the same images)",
        "",
        "100% = the teacher's score. Above 100% the student scores higher than its teacher there: that is not "
        "'nothing forgotten' (e.g. a decoder trained on noisy boxes may handle noisy boxes better in every "
        "domain), only that no loss is measured on this set.",
        "",
        *([] if summary else [_NO_WHOLE_SEED, ""]),
        "| dataset | regime | set | arm | seeds | "
        + " | ".join(f"{k} teacher | {k} relative" for k in m)
        + " |",
        "|---|---|---|---|---|" + "---|---|" * len(m),
    ]
    for r in retention:
        cells_text = []
        for k in m:
            cells_text += [
                _pct(k, r[f"{k}_teacher"]),
                _relative(r[f"{k}_relative_mean"], r[f"{k}_relative_std"]),
            ]
        lines.append(
            f"| {r['dataset']} | {r['regime']} | {r['set']} | {r['arm']} | {r['n_seeds']} | "
            + " | ".join(cells_text)
            + " |"
        )
    lines += ["", "## Figures", ""]
    for title, path in figures:
        lines += [f"### {title}", "", f"![{title}]({_link(path, md)})", ""]
    return "\n".join(lines) + "\n"


def _files_section(md: Path, assets: Path) -> list[str]:
    def f(name: str) -> str:
        return f"[`{name}`]({_link(assets / name, md)})"

    return [
        "## Files",
        "",
        f"{f('scores.csv')} (per arm and seed, every metric), {f('summary.csv')}, {f('paired.csv')} (with per-seed "
        f"differences), {f('retention.csv')}; {f('per_image.csv')}: every finished cell's final score per scored "
        "set and image, and the zero-shot teacher's on the same images (columns dataset, part, arm, seed, set, id "
        f"and every metric; teacher rows: arm `{TEACHER}`, seed empty); [`splits/`]({_link(assets / 'splits', md)})"
        ": the exact image lists of every split (`<dataset>/<split>.csv`, paths relative to the dataset folder). "
        "Per-epoch scores stay in the experiment folder (`cells/*/.../eval/`, `cells/*/.../run/eval/`).",
        "",
    ]


def _shown(path: str | Path) -> str:
    """``path`` relative to the current folder (with ``..`` when outside it: a committed page never names a
    machine's absolute paths); quoted for a shell."""
    path = Path(path).expanduser()
    absolute = path if path.is_absolute() else Path.cwd() / path
    text = Path(os.path.relpath(absolute.resolve(), Path.cwd().resolve())).as_posix()
    return shlex.quote(text or ".")


def _dataset_digest(folder: Path) -> str | None:
    from .records import dataset_digest

    try:
        return dataset_digest(folder)
    except OSError:
        return None


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{value:.1f} s ({value / 3600:.2f} h)"
    if value >= 60:
        return f"{value:.1f} s ({value / 60:.1f} min)"
    return f"{value:.1f} s"


def _grid_variables(grid_file: Path) -> list[str]:
    """Environment variables the grid file's values name (``$X`` / ``${X}``), in order of appearance."""
    try:
        data = yaml.safe_load(grid_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    found: list[str] = []

    def walk(value) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            found.extend(n for n in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", value) if n not in found)

    walk(data)
    return found


def complete_seeds(results: list[CellResult], grid: Grid) -> list[CellResult]:
    """The results whose (dataset, regime, seed) has every cell of the grid finished (all folds or parts of the
    regime, all arms): a seed's mean then covers the same images for every arm and is the whole regime's."""
    wanted: dict[tuple, set] = defaultdict(set)
    for cell in cells(grid):
        wanted[(cell.dataset, cell.regime, cell.seed)].add((cell.part, cell.arm))
    have: dict[tuple, set] = defaultdict(set)
    for r in results:
        have[(r.cell.dataset, r.cell.regime, r.cell.seed)].add((r.cell.part, r.cell.arm))
    return [r for r in results if have[k := (r.cell.dataset, r.cell.regime, r.cell.seed)] >= wanted[k]]


def _experiment_info(exp_dir: Path) -> dict:
    return json.loads((exp_dir / EXPERIMENT_FILE).read_text(encoding="utf-8"))


def _recorded_grid_file(exp_dir: Path, grid: Grid) -> Path:
    """The grid file the experiment was started with (a results record names it relative to itself)."""
    recorded = Path(_experiment_info(exp_dir).get("grid", str(grid.path)))
    return recorded if recorded.is_absolute() else (exp_dir / recorded).resolve()


def _grid_name(exp_dir: Path, grid: Grid) -> str:
    """The name of the grid file the experiment was started with (the folder's copy is always grid.yaml)."""
    return _recorded_grid_file(exp_dir, grid).name


def _grid_description(exp_dir: Path, grid: Grid) -> list[str]:
    """The grid file's leading comment block (what the grid is and why: its pre-registration), quoted, or
    nothing when the file is gone or starts without one."""
    recorded = _recorded_grid_file(exp_dir, grid)
    try:
        text = Path(recorded).read_text(encoding="utf-8")
    except OSError:
        return []
    block = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        block.append(line[1:].strip())
    while block and not block[-1]:
        block.pop()
    if not block:
        return []
    return ["The grid file says:", "", *(f"> {line}" if line else ">" for line in block), ""]


def provenance(
    exp_dir: Path, grid: Grid, results: list[CellResult], total: int, md: Path, assets: Path
) -> list[str]:
    """The Markdown lines of "How these numbers were made": grid file, commands, devices and wall time of the
    finished cells (their ``cell.json``), and the machine writing the report."""
    import torch

    from .. import __version__

    info = _experiment_info(exp_dir)
    recorded = _recorded_grid_file(exp_dir, grid)
    grid_file = _shown(recorded)
    report_out = _shown(md.parent if md.parent == assets else md)
    if "record_version" in info:  # a results record: the experiment folder it came from is not named
        lines = [
            "## How these numbers were made",
            "",
            f"- Grid file: `{grid_file}`; these numbers are read from its results record `{_shown(exp_dir)}` "
            "(per-image scores, per-epoch summaries and times of every finished cell, committed with the grid).",
            f"- Reproduce: `infosam experiment {grid_file} --out EXPERIMENT_FOLDER` (recorded cells are skipped, a "
            f"killed cell resumes; new cells are recorded as they finish), then "
            f"`infosam report {_shown(exp_dir)} --out {report_out}`.",
        ]
    else:
        lines = [
            "## How these numbers were made",
            "",
            f"- Grid file: `{grid_file}` (the experiment folder keeps a copy with absolute paths: "
            f"`{_shown(exp_dir / GRID_COPY)}`).",
            f"- Reproduce: `infosam experiment {grid_file} --out {_shown(exp_dir)}` (finished cells are kept; a "
            f"killed cell resumes), then `infosam report {_shown(exp_dir)} --out {report_out}`.",
        ]
    variables = _grid_variables(Path(recorded))
    described = []
    for name, d in grid.datasets.items():
        entry = (info.get("datasets") or {}).get(name) or {}
        folder = entry.get("folder") or d.path.name
        digest = entry.get("sha256sums_sha256") if entry else _dataset_digest(d.path)
        described.append(
            f"`{name}`: folder `{folder}`"
            + (
                f" (sha256 of its SHA256SUMS: `{digest[:16]}`)"
                if digest
                else " (no SHA256SUMS digest recorded)"
            )
        )
    where = (
        "; the grid file reads the environment variable(s) " + ", ".join(f"`{v}`" for v in variables)
        if variables
        else ""
    )
    lines.append("- Datasets: " + ", ".join(described) + where + ".")
    lines.append(f"- Cells finished: {len(results)} of {total}.")
    if results:
        devices = Counter(str(r.info.get("device", "unknown")) for r in results)
        lines.append(
            "- Devices the finished cells trained on: "
            + ", ".join(f"{name} ({n} cell{'s' * (n != 1)})" for name, n in devices.most_common())
            + "."
        )
        codes = Counter(c for r in results for c in dict.fromkeys(r.info.get("code") or ["not recorded"]))
        lines.append(
            "- Code the finished cells trained with (every training attempt, resumes included): "
            + ", ".join(f"{name} ({n} cell{'s' * (n != 1)})" for name, n in codes.most_common())
            + "."
        )
        timed = [r for r in results if "train_seconds" in r.info]
        if timed:
            train = [float(r.info["train_seconds"]) for r in timed]
            scoring = [float(r.info.get("eval_seconds", 0.0)) for r in timed]
            lines.append(
                f"- Wall time of {len(timed)} finished cells (their `cell.json`; an attempt that was killed is not "
                f"counted): training {_seconds(sum(train))} in total, median {_seconds(float(np.median(train)))} "
                f"per cell; scoring after training {_seconds(sum(scoring))} in total, median "
                f"{_seconds(float(np.median(scoring)))} per cell."
            )
        cpu = [float(r.info["train_cpu_seconds"]) for r in timed if "train_cpu_seconds" in r.info]
        if cpu:
            lines.append(
                f"- CPU time of training ({len(cpu)} cells, the training process only): median "
                f"{_seconds(float(np.median(cpu)))} per cell."
            )
        if len(timed) < len(results):
            lines.append(f"- {len(results) - len(timed)} finished cells have no recorded times.")
    lines += [
        f"- Machine that wrote this report (not necessarily the one that ran the cells): Python "
        f"{platform.python_version()}, torch {torch.__version__}, infosam {__version__}, {platform.platform()}, "
        f"{os.cpu_count()} CPUs.",
        "",
    ]
    return lines


# --------------------------------------------------------------------------------------------- figures


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def _curve_figures(results: list[CellResult], teacher: list[dict], grid: Grid, folder: Path) -> list:
    from ..extras import require

    matplotlib = require("matplotlib", "infosam report's figures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = grid.metrics[0]
    settings: dict[tuple, dict[str, dict[str, dict[int, list[tuple[float, int, int]]]]]] = {}
    for r in results:
        setting = settings.setdefault((r.cell.dataset, r.cell.regime), {})
        for name, curve in r.curves.items():
            for epoch, (summary, n) in curve.items():
                if metric in summary:
                    setting.setdefault(name, {}).setdefault(r.cell.arm, {}).setdefault(epoch, []).append(
                        (summary[metric], n, r.cell.seed)
                    )
    ref = {(t["dataset"], t["regime"], t["set"]): t[metric] for t in teacher}
    written = []
    for (dataset, regime), sets in sorted(settings.items()):
        names = sorted(sets, key=lambda s: (s != "test", s))
        fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            for arm, curve in sorted(sets[name].items()):
                epochs = sorted(curve)
                # Parts weighted by their images within a seed, then the mean over seeds.
                values = []
                for e in epochs:
                    by_seed: dict[int, list[tuple[float, int]]] = defaultdict(list)
                    for v, n, seed in curve[e]:
                        by_seed[seed].append((v, n))
                    values.append(
                        np.mean(
                            [
                                sum(v * n for v, n in vs) / max(1, sum(n for _, n in vs))
                                for vs in by_seed.values()
                            ]
                        )
                    )
                style = "-" if grid.arms[arm].baseline is not None else "--"
                ax.plot(epochs, values, style, marker="o", label=arm)
            if (dataset, regime, name) in ref:
                ax.axhline(ref[(dataset, regime, name)], color="grey", linestyle=":", label=TEACHER)
            ax.set_title(f"{dataset} {regime}: {name}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(metric)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        path = folder / f"curves-{dataset}-{regime}.png"
        _save(fig, path)
        plt.close(fig)
        written.append((f"{metric} per epoch: {dataset} {regime}", path))
    return written


def _relation_figures(
    results: list[CellResult],
    grid: Grid,
    exp_dir: Path,
    folder: Path,
    n_images: int = 3,
    show_images: bool = True,
):
    """Teacher and student relation maps (with the run's relation module) for a few test images of the first
    finished InfoSAM cell of each setting."""
    from ..extras import require

    matplotlib = require("matplotlib", "infosam report's figures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ..data.formats import open_dataset
    from ..data.prompts import eval_prompts
    from ..distill.relation import RelationModule
    from ..evaluate import load_model
    from ..runview import read_run
    from ..sam.transforms import get_transform
    from .grid import eval_config
    from .relmaps import crop_valid, relation_maps

    chosen: dict[tuple, CellResult] = {}
    for r in results:
        if grid.arms[r.cell.arm].baseline is None:
            continue
        chosen.setdefault((r.cell.dataset, r.cell.regime), r)
    written = []
    for (dataset, regime), r in sorted(chosen.items()):
        if not (cell_dir(exp_dir, r.cell) / "run").is_dir():
            continue  # a results record keeps no weights: no relation maps
        record = read_run(cell_dir(exp_dir, r.cell) / "run")
        if record.relation_weights is None:
            continue
        relation = RelationModule.load(record.relation_weights)
        student = record.student()
        teacher, _ = load_model(model_config(grid, r.cell), seed=grid.seeds[0])
        data = open_dataset(
            record.config.data.path,
            split=record.config.data.test_split,
            transform=get_transform(student.spec),  # the model family's own preprocessing (LiteMedSAM's too)
        )
        k = min(n_images, len(data))
        samples = [data[i] for i in range(k)]
        images = torch.stack([s["image"] for s in samples])
        masks = torch.stack([s["mask"] for s in samples])
        sizes = torch.stack([s["input_size"] for s in samples])
        e = eval_config(grid, dataset)
        prompts = eval_prompts(
            masks,
            [s["id"] for s in samples],
            seed=e.seed,
            mode=e.prompt,
            n_fg=e.n_fg,
            n_bg=e.n_bg,
            input_sizes=sizes,
        )
        size = student.image_encoder.img_size
        maps = {
            "teacher": crop_valid(relation_maps(teacher, relation, images, prompts), sizes, size),
            "student": crop_valid(relation_maps(student, relation, images, prompts), sizes, size),
        }
        # Without the image column (show_images=False) the figure holds only computed maps, no dataset pixels:
        # for reports committed where the data may not be redistributed.
        first = 1 if show_images else 0
        fig, axes = plt.subplots(k, 2 + first, figsize=(3 * (2 + first), 3 * k), squeeze=False)
        for i in range(k):
            name = Path(samples[i]["id"]).name
            if show_images:
                picture, truth = data.read_pair(i)
                axes[i][0].imshow(picture)
                axes[i][0].contour(truth, levels=[0.5], colors="yellow", linewidths=0.8)
                axes[i][0].set_title(name, fontsize=8)
            for j, who in enumerate(("teacher", "student"), start=first):
                axes[i][j].imshow(maps[who][i], cmap="magma")
                axes[i][j].set_title(f"{who} relation map" + ("" if show_images else f": {name}"), fontsize=8)
            for ax in axes[i]:
                ax.axis("off")
        fig.suptitle(f"{dataset} {regime}: {r.cell.arm}, seed {r.cell.seed}, {r.cell.part}", fontsize=9)
        fig.tight_layout()
        path = folder / f"relation-{dataset}-{regime}.png"
        _save(fig, path)
        plt.close(fig)
        written.append((f"relation maps: {dataset} {regime}", path))
    return written
