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

The parts: :mod:`~infosam.experiment.collect` gathers the finished cells' scores, :mod:`~infosam.experiment.tables`
makes the numbers (the statistics are :mod:`infosam.stats`), :mod:`~infosam.experiment.figures` draws,
:mod:`~infosam.experiment.provenance` says how the numbers were made, :mod:`~infosam.experiment.page` words the
Markdown; this module writes the files.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from .. import stats
from ..files import atomic_write, atomic_write_text, remove
from ..metrics import METRIC_NAMES
from .collect import collect, complete_seeds, per_image_rows
from .figures import curve_figures, relation_figures
from .layout import (
    REPORT_FIGURES,
    REPORT_FILE,
    REPORT_TABLES,
    SPLIT_SUFFIX,
    SPLITS_DIR,
    ExperimentDir,
)
from .page import TITLE, files_section, markdown
from .provenance import provenance
from .records import verify_results
from .runner import load_experiment_grid
from .tables import arm_summary, loss_terms_table, paired_table, retention_table, seed_scores, teacher_scores

log = logging.getLogger(__name__)

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
    splits = ExperimentDir(exp_dir).splits
    for path in sorted(splits.rglob(f"*{SPLIT_SUFFIX}")):
        written.append(atomic_write_text(folder / path.relative_to(splits), path.read_text("utf-8")))
    return written


def report_paths(exp_dir: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """(Markdown file, asset folder) of a report of ``exp_dir`` written to ``out``.

    ``out`` a folder ``DIR`` (default ``<exp_dir>/report``): ``DIR/report.md`` and ``DIR``. ``out`` a path ending
    in ``.md`` that is not an existing folder: that file, and the folder beside it with the file's stem."""
    if out is None:
        folder = ExperimentDir(Path(exp_dir).expanduser()).report
        return folder / REPORT_FILE, folder
    out = Path(out).expanduser()
    if out.suffix.lower() == ".md" and not out.is_dir():
        return out, out.with_suffix("")
    return out / REPORT_FILE, out


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


def _verify(exp_dir: Path, grid) -> None:
    """Every record read is verified (checksums, strict per-image rows) before anything is written: a damaged
    record refuses the report and leaves no trace of it; a legacy record (no checksum list) is read with a
    warning."""
    legacy = verify_results(exp_dir, grid)
    if legacy:
        log.warning(
            "%d record(s) of %s have no checksum list (written before records carried one), read unverified: "
            "infosam experiment GRID --record-only adds them",
            len(legacy),
            exp_dir,
        )


def _write_tables(
    assets: Path, tables: dict[str, list[dict]], losses: list[dict], per_image: list[dict], metrics: list[str]
) -> None:
    """The report's CSV tables (:data:`~infosam.experiment.layout.REPORT_TABLES`) into ``assets``."""
    paths = {name: assets / file for name, file in REPORT_TABLES.items()}
    for name, rows in tables.items():
        _write_csv(paths[name], rows)
    if losses:
        _write_csv(paths["loss_terms"], losses)
    else:  # no run of this report logged the InfoSAM terms: an earlier report's table would be stale
        remove(paths["loss_terms"])
    _write_csv(paths["per_image"], per_image, ["dataset", "part", "arm", "seed", "set", "id", *metrics])


def write_report(
    exp_dir: str | Path,
    out: str | Path | None = None,
    *,
    n_boot: int = stats.N_BOOT,
    show_images: bool = True,
) -> Path:
    """Write the report of the experiment folder ``exp_dir`` to ``out``; returns the Markdown file's path.

    ``out``: a folder (default ``<exp_dir>/report``; the Markdown is its ``report.md``) or a Markdown file
    ``NAME.md`` (its assets go into ``NAME/`` beside it), see :func:`report_paths`. Files of the report are
    replaced atomically; nothing else in the output folder is touched."""
    from ..extras import require

    exp_dir = Path(exp_dir).expanduser().resolve()
    grid = load_experiment_grid(exp_dir)
    md, assets = report_paths(exp_dir, out)
    _check_outputs(md, assets)
    require("matplotlib", "infosam report's figures")  # before anything is written: no half-made report
    _verify(exp_dir, grid)
    finished, total = collect(exp_dir, grid)
    figures_dir = assets / REPORT_FIGURES
    figures_dir.mkdir(parents=True, exist_ok=True)
    # Scores, retention and curves average over a seed's images: only whole seeds (every part and arm of the
    # regime finished; a later phase's arm joins when its own cells have) keep every row on the same images.
    # Paired differences pair cells themselves: all of them.
    results = complete_seeds(finished, grid)
    metrics = list(METRIC_NAMES)
    rows = seed_scores(results, metrics)
    teacher = teacher_scores(exp_dir, results, metrics)
    summary = arm_summary(rows, metrics)
    paired = paired_table(finished, grid, grid.metrics, n_boot=n_boot)
    retention = retention_table(rows, teacher, grid.metrics)
    losses = loss_terms_table(finished)
    tables = {"scores": teacher + rows, "summary": summary, "paired": paired, "retention": retention}
    _write_tables(assets, tables, losses, per_image_rows(exp_dir, finished, metrics), metrics)
    _copy_splits(exp_dir, assets / SPLITS_DIR)
    figures = curve_figures(results, teacher, grid, figures_dir)
    figures += relation_figures(finished, grid, exp_dir, figures_dir, show_images=show_images)
    text = markdown(
        grid,
        exp_dir,
        (len(finished), len(results)),
        total,
        summary,
        teacher,
        paired,
        retention,
        losses,
        figures,
        n_boot,
        md,
    )
    text += (
        "\n".join(
            files_section(md, assets, bool(losses)) + provenance(exp_dir, grid, finished, total, md, assets)
        )
        + "\n"
    )
    atomic_write_text(md, text)
    return md
