"""How a report's numbers were made: grid file, commands, datasets, devices, code and times, and the machine.

Every path a page shows is relative to the current folder (a committed page never names a machine's absolute
paths); datasets are named by folder and the digest of their ``SHA256SUMS``.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from .collect import CellResult
from .grid import Grid
from .layout import CHECKSUM_FILE, KILLED_ATTEMPTS_TIMED, ExperimentDir


def experiment_info(exp_dir: Path) -> dict:
    """The experiment folder's (or record's) ``experiment.json``."""
    return ExperimentDir(exp_dir).info()


def recorded_grid_file(exp_dir: Path, grid: Grid) -> Path:
    """The grid file the experiment was started with (a results record names it relative to itself)."""
    recorded = Path(experiment_info(exp_dir).get("grid", str(grid.path)))
    return recorded if recorded.is_absolute() else (exp_dir / recorded).resolve()


def grid_name(exp_dir: Path, grid: Grid) -> str:
    """The name of the grid file the experiment was started with (the folder's copy is always grid.yaml)."""
    return recorded_grid_file(exp_dir, grid).name


def prompt_sentence(grid: Grid) -> str:
    """The sentence naming the prompts every set was scored with: each dataset's ``eval`` settings in the grid
    (:func:`~infosam.experiment.plan.eval_config`: every arm and the zero-shot teacher scored alike), as
    :func:`infosam.data.prompts.describe_prompt` words them (box rule, or point counts), with the prompt seed; one
    description when every dataset shares it."""
    from ..data.prompts import describe_prompt
    from .plan import eval_config

    described = {}
    for name in grid.datasets:
        e = eval_config(grid, name)
        text = describe_prompt(e.prompt, e.box_noise, n_fg=e.n_fg, n_bg=e.n_bg) + f", prompt seed {e.seed}"
        described[name] = text + ("; the release's metric quirks (eval.compat)" if e.compat else "")
    head = "Test prompts (the grid's eval settings; every arm and the zero-shot teacher scored alike): "
    if len(set(described.values())) <= 1:
        return head + "".join(set(described.values())) + "."
    return head + "; ".join(f"`{name}`: {text}" for name, text in described.items()) + "."


def grid_description(exp_dir: Path, grid: Grid) -> list[str]:
    """The grid file's leading comment block (what the grid is and why: its pre-registration), quoted, or
    nothing when the file is gone or starts without one."""
    recorded = recorded_grid_file(exp_dir, grid)
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
    info = experiment_info(exp_dir)
    recorded = recorded_grid_file(exp_dir, grid)
    lines = _commands(exp_dir, info, _shown(recorded), md, assets)
    lines.append(_datasets(grid, info, recorded))
    lines += _cells(results, total)
    lines += _machine()
    return lines


def _commands(exp_dir: Path, info: dict, grid_file: str, md: Path, assets: Path) -> list[str]:
    """The grid file, where the numbers are read from, and the commands that make them again."""
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
            f"`{_shown(ExperimentDir(exp_dir).grid_copy)}`).",
            f"- Reproduce: `infosam experiment {grid_file} --out {_shown(exp_dir)}` (finished cells are kept; a "
            f"killed cell resumes), then `infosam report {_shown(exp_dir)} --out {report_out}`.",
        ]
    return lines


def _datasets(grid: Grid, info: dict, recorded: Path) -> str:
    """The datasets by folder name and the digest of their checksum list, and the variables the grid reads."""
    variables = grid_variables(Path(recorded))
    described = []
    for name, d in grid.datasets.items():
        entry = (info.get("datasets") or {}).get(name) or {}
        folder = entry.get("folder") or d.path.name
        digest = entry.get("sha256sums_sha256") if entry else _dataset_digest(d.path)
        described.append(
            f"`{name}`: folder `{folder}`"
            + (
                f" (sha256 of its {CHECKSUM_FILE}: `{digest[:16]}`)"
                if digest
                else f" (no {CHECKSUM_FILE} digest recorded)"
            )
        )
    where = (
        "; the grid file reads the environment variable(s) " + ", ".join(f"`{v}`" for v in variables)
        if variables
        else ""
    )
    return "- Datasets: " + ", ".join(described) + where + "."


def _cells(results: list[CellResult], total: int) -> list[str]:
    """How many cells finished, and the devices, code and times they trained with."""
    lines = [f"- Cells finished: {len(results)} of {total}."]
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
            # Older code lost a killed training attempt's time; a cell it timed with more than one attempt may miss
            # some (older records count attempts as entries of "code", which listed each attempt's version).
            short = sum(
                1
                for r in timed
                if r.info.get("timing") != KILLED_ATTEMPTS_TIMED
                and r.info.get("attempts", len(r.info.get("code") or [])) > 1
            )
            counted = "a killed training attempt counts up to its last minute" + (
                f", except in {short} cell{'s' * (short != 1)} resumed under older code, which lost that time"
                if short
                else ""
            )
            lines.append(
                f"- Wall time of {len(timed)} finished cells (their `cell.json`; {counted}): "
                f"training {_seconds(sum(train))} in total, median {_seconds(float(np.median(train)))} "
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
    return lines


def _machine() -> list[str]:
    """The machine writing the report (not necessarily the one that ran the cells)."""
    import torch

    from .. import __version__

    return [
        f"- Machine that wrote this report (not necessarily the one that ran the cells): Python "
        f"{platform.python_version()}, torch {torch.__version__}, infosam {__version__}, {platform.platform()}, "
        f"{os.cpu_count()} CPUs.",
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


def grid_variables(grid_file: Path) -> list[str]:
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
