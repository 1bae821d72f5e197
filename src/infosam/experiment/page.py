"""The Markdown page of ``infosam report``: the header, the tables (scores, paired differences, retention, the
InfoSAM terms and the relation's entropy during training), the figures and the list of files. The numbers are
:mod:`~infosam.experiment.tables`', the files :mod:`~infosam.experiment.report`'s."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from ..metrics import display_scale
from .collect import TEACHER
from .layout import REPORT_TABLES, SPLITS_DIR
from .provenance import experiment_info, grid_description, grid_name, prompt_sentence
from .tables import S_RT_PREDICTION

TITLE = "# Experiment report"
"""First words of every report's Markdown: an existing ``.md`` output that does not start so is never replaced."""


def _undefined(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _pct(metric: str, value: float) -> str:
    if _undefined(value):
        return "n/a"
    scale, _ = display_scale(metric)
    return f"{scale * value:.{3 if scale == 1 else 1}f}"


def _pm(metric: str, mean: float, std: float) -> str:
    """``mean ± std``; ``-`` for a spread that does not exist (one seed)."""
    return f"{_pct(metric, mean)} ± {'-' if _undefined(std) else _pct(metric, std)}"


def _points(metric: str, value: float) -> str:
    """A difference in points (MAE: as a fraction); a value that would round to zero but is not keeps two
    significant digits (``+4.0e-05``), so a bound just above zero never reads as zero."""
    if _undefined(value):
        return "-"
    scale, _ = display_scale(metric)
    shown, digits = scale * value, (4 if scale == 1 else 2)
    text = f"{shown:+.{digits}f}"
    if shown != 0 and float(text) == 0:
        return f"{shown:+.1e}"
    return text


def _relative(mean: float, std: float) -> str:
    if _undefined(mean):
        return "-"
    return f"{100 * mean:.1f}% ± {'-' if _undefined(std) else f'{100 * std:.1f}'}"


def _link(path: Path, md: Path) -> str:
    """``path`` relative to the folder of the Markdown file ``md``, with forward slashes (a Markdown link)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(md).resolve().parent)).as_posix()


_NO_WHOLE_SEED = "No whole seed has finished yet (see the paired differences for the finished pairs)."


def markdown(
    grid, exp_dir, counts, total, summary, teacher, paired, retention, losses, figures, n_boot, md
) -> str:
    """The page up to its list of files: ``counts`` is (finished cells, cells of whole seeds) of ``total``."""
    lines = _header(grid, exp_dir, counts, total)
    lines += _scores_section(grid.metrics, summary, teacher)
    lines += _paired_section(paired, n_boot)
    lines += _retention_section(grid.metrics, summary, retention)
    lines += _loss_terms_section(losses)
    lines += ["", "## Figures", ""]
    for title, path in figures:
        lines += [f"### {title}", "", f"![{title}]({_link(path, md)})", ""]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines) + "\n")  # one blank line where a table was left out


def _header(grid, exp_dir, counts, total) -> list[str]:
    """Title, what was reported (how many cells finished, seeds, arms), the prompts and the grid's own words."""
    done, whole = counts
    partial = ""
    if done < total and whole:
        partial = (
            f" (the score and retention tables and the curves use the {whole} cells of whole seeds: seeds in "
            "which every fold or part and every arm of a regime finished, so each row covers the same images"
            + (
                "; an arm of a later phase joins when its own cells have finished"
                if len({a.phase for a in grid.arms.values()}) > 1
                else ""
            )
            + "; the paired differences use every finished pair)"
        )
    elif done < total:
        partial = (
            " (no seed has finished whole yet, every fold or part and every arm of a regime: the score and "
            "retention tables and the curves wait for one; the paired differences use every finished pair)"
        )
    lines = [
        f"{TITLE}: {grid_name(exp_dir, grid)}",
        "",
        f"{'Results record' if 'record_version' in experiment_info(exp_dir) else 'Experiment folder'} "
        f"`{exp_dir.name}`; {done} of {total} cells finished"
        + partial
        + f"; seeds {grid.seeds}; arms "
        + ", ".join(
            f"`{a}`" + (f" (paired with `{v.baseline}`)" if v.baseline else "") for a, v in grid.arms.items()
        )
        + "".join(f"; also `{a}` minus `{b}`" for a, b in grid.compare)
        + ".",
        "",
        "Scores in percent (MAE as a fraction). k-fold settings pool the folds: every image is tested once per seed. "
        "'-': a spread or interval that does not exist (one seed).",
        "",
        prompt_sentence(grid),
        "",
        *grid_description(exp_dir, grid),
    ]
    return lines


def _scores_section(m: list[str], summary: list[dict], teacher: list[dict]) -> list[str]:
    """Mean ± std over seeds per arm (the teacher's score first) in the metrics ``m``."""
    lines = [
        "## Scores (mean ± std over seeds)",
        "",
        *([] if summary else [_NO_WHOLE_SEED, ""]),
        *(
            [
                "| dataset | regime | set | arm | seeds | " + " | ".join(m) + " |",
                "|---|---|---|---|---|" + "---|" * len(m),
            ]
            if summary or teacher
            else []
        ),
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
    return lines


def _paired_section(paired: list[dict], n_boot: int) -> list[str]:
    """Each arm minus its baseline, with both views of the uncertainty (image bootstrap, run level)."""
    lines = [
        "",
        "## Paired differences (arm minus its baseline; same seed, same split, same images)",
        "",
        f"Difference in points (MAE: as a fraction). Two views, and the reading goes by the weaker: the image "
        f"bootstrap (95%, {n_boot:,} replicates, resampling images within each seed and split part, as the grids registered for their test sets; on a "
        "retention set, which every seed scored, an image is drawn once for all seeds, since seeds' "
        "differences on one image are correlated) holds every "
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
    return lines


def _retention_section(m: list[str], summary: list[dict], retention: list[dict]) -> list[str]:
    """Scores on other domains relative to the zero-shot teacher's on the same images."""
    lines = [
        "",
        "## Retention (score on another domain relative to the zero-shot teacher on the same images)",
        "",
        "100% = the teacher's score. Above 100% the student scores higher than its teacher there: that is not "
        "'nothing forgotten' (e.g. a decoder trained on noisy boxes may handle noisy boxes better in every "
        "domain), only that no loss is measured on this set.",
        "",
        *([] if summary else [_NO_WHOLE_SEED, ""]),
        *(
            [
                "| dataset | regime | set | arm | seeds | "
                + " | ".join(f"{k} teacher | {k} relative" for k in m)
                + " |",
                "|---|---|---|---|---|" + "---|---|" * len(m),
            ]
            if retention
            else []
        ),
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
    return lines


def _loss_terms_section(losses: list[dict]) -> list[str]:
    """The InfoSAM terms at the start and the end of training (nothing when no run logged them)."""
    if not losses:
        return []
    lines = [
        "",
        "## InfoSAM's loss terms during training",
        "",
        "Each term averaged over a run's first and over its last logged epoch, then over the arm's runs (every "
        "finished cell whose record keeps its training log, `train-log.csv`). L_seg: the segmentation loss. "
        "L_r = I(z_i^T, z_m^T; r_t) up to a constant: only the relation module learns from it. "
        "L_d = -I(r_t; r_s) in bits: minus the mutual information between the teacher's and the student's "
        "relation maps over a batch of B images (at most log2 B; the order-2 estimate can be slightly negative); "
        "a student that copies the teacher's maps reaches I = S(r_t) only when every two of those maps are "
        "orthogonal or parallel; '-': an arm without the term. "
        "'I(r_t; r_s) fell': runs whose L_d rose from the first epoch to the last, i.e. whose relation maps "
        "shared less with the teacher's at the end of training than at its start.",
        "",
        "| dataset | arm | runs | epochs | L_seg first → last | L_r first → last | L_d first → last "
        "| I(r_t; r_s) fell in |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def span(r: dict, term: str) -> str:
        if _undefined(r[f"{term}_first"]):
            return "-"
        return f"{r[f'{term}_first']:+.3f} → {r[f'{term}_last']:+.3f}"

    for r in losses:
        lines.append(
            f"| {r['dataset']} | {r['arm']} | {r['n_runs']} | {r['first_epoch']} → {r['last_epoch']} | "
            f"{span(r, 'seg')} | {span(r, 'relation')} | {span(r, 'distill')} | "
            + (f"{r['runs_mi_fell']} of {r['runs_with_distill']} |" if r["runs_with_distill"] else "- |")
        )
    return lines + _relation_section(losses)


def _relation_section(losses: list[dict]) -> list[str]:
    """The relation maps' entropy and likeness at the start and end of training (runs that logged them)."""
    rows = [r for r in losses if r.get("runs_with_stats")]
    if not rows:
        return []
    lines = [
        "",
        "## The relation's entropy during training",
        "",
        "Each statistic averaged over a run's first and over its last logged epoch, then over the arm's runs "
        "(`train-log.csv`; bits for entropies). S(r_t), S(r_s): the entropy of the teacher's and the student's "
        "relation maps over a batch of B images (between 0 and log2 B); since L_r = S(r_t) - S(z_i, z_m, r_t), "
        "S(r_t) <= L_r + log2 B. I(r_t; r_s) = -L_d, at most min(S(r_t), S(r_s)); the order-2 estimate can be "
        "slightly negative, and a student copying the teacher reaches I = S(r_t) only when every two teacher maps "
        "are orthogonal or parallel. Cosine: the mean cosine between two teacher maps of a batch (1: every image gets "
        "the same map). Std: a teacher map's standard deviation over its values (1/sqrt(HW) = 0.0156 for a "
        f"zero-mean map at HW = 4096, 0 for a uniform one). 'S(r_t) < {S_RT_PREDICTION:g}': runs whose final "
        "S(r_t) is below that (the MobileSAM grid's pre-registered prediction for the paper's terms).",
        "",
        "| dataset | arm | runs | S(r_t) first → last | S(r_s) first → last | I(r_t; r_s) first → last "
        f"| I rose in | S(r_t) < {S_RT_PREDICTION:g} in | cosine first → last | std first → last |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def span(r: dict, term: str, digits: int = 3) -> str:
        return f"{r[f'{term}_first']:.{digits}f} → {r[f'{term}_last']:.{digits}f}"

    for r in rows:
        n = r["runs_with_stats"]
        lines.append(
            f"| {r['dataset']} | {r['arm']} | {n} | {span(r, 's_rt')} | {span(r, 's_rs')} | "
            f"{span(r, 'i_rt_rs')} | {r['runs_i_rose']} of {n} | {r['runs_s_rt_below']} of {n} | "
            f"{span(r, 'rt_cosine')} | {span(r, 'rt_std', 4)} |"
        )
    return lines


def files_section(md: Path, assets: Path, losses: bool = False) -> list[str]:
    """The page's list of the report's files, linked relative to the Markdown ``md``."""
    t = REPORT_TABLES

    def f(name: str) -> str:
        return f"[`{name}`]({_link(assets / name, md)})"

    return [
        "## Files",
        "",
        f"{f(t['scores'])} (per arm and seed, every metric), {f(t['summary'])}, {f(t['paired'])} (with per-seed "
        f"differences), {f(t['retention'])}; {f(t['per_image'])}: every finished cell's final score per scored "
        "set and image, and the zero-shot teacher's on the same images (columns dataset, part, arm, seed, set, id "
        f"and every metric; teacher rows: arm `{TEACHER}`, seed empty); [`{SPLITS_DIR}/`]({_link(assets / SPLITS_DIR, md)})"
        ": the exact image lists of every split (`<dataset>/<split>.csv`, paths relative to the dataset folder). "
        "Per-epoch scores stay in the experiment folder (`cells/*/.../eval/`, `cells/*/.../run/eval/`)."
        + (f" {f(t['loss_terms'])}: the loss-terms table above." if losses else ""),
        "",
    ]
