"""The file names of experiment folders, results records and reports are spelled once, in
``infosam.experiment.layout``, and those of run folders in ``infosam.runs`` (docs/architecture.md, Conventions).

A string in the code of any other module of ``src/infosam`` that is one of those names, or a path ending in or
passing through one (``"eval/summary.json"``, a glob ``"*/*/summary.json"``, the constant part of an f-string),
fails here. Docstrings and prose (a message that names a file among other words) may name them.
"""

import ast
from pathlib import Path

import pytest

from infosam import evaluate, runs
from infosam.experiment import layout

SRC = Path(__file__).resolve().parents[1] / "src" / "infosam"

EXPERIMENT_NAMES = {
    layout.EXPERIMENT_FILE,
    layout.GRID_COPY,
    layout.CELL_FILE,
    layout.TRAIN_LOG_FILE,
    layout.CURVE_FILE,
    layout.CHECKSUM_FILE,
    layout.PER_IMAGE_FILE,
    layout.SUMMARY_FILE,
    layout.REPORT_FILE,
    *layout.REPORT_TABLES.values(),
}
RUN_NAMES = {runs.CONFIG_FILE, runs.METRICS_FILE, runs.SUMMARY_FILE}
NAMES = EXPERIMENT_NAMES | RUN_NAMES

OWNERS = {
    "experiment/layout.py": EXPERIMENT_NAMES,
    "runs.py": RUN_NAMES,
    # A scored set's two files are written by infosam.score_files (write_evaluation), a layer below experiments:
    # it keeps its own spelling, which layout's must equal (test below).
    "score_files.py": {evaluate.PER_IMAGE_FILE, evaluate.SUMMARY_FILE},
}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that stand alone as statements (docstrings, attribute docs)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def _spelled(text: str) -> set[str]:
    """The names ``text`` spells as a file name or a path component."""
    parts = text.replace("\\", "/").split("/")
    return {name for name in NAMES if name in parts}


def spellings(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every file name of :data:`NAMES` a string of the code of ``path`` spells."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            found += [(node.lineno, name) for name in sorted(_spelled(node.value))]
    return found


def test_file_names_are_spelled_only_by_the_module_that_owns_the_folder():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        allowed = OWNERS.get(rel, set())
        wrong += [f"{rel}:{line}: {name!r}" for line, name in spellings(path) if name not in allowed]
    assert not wrong, (
        "file names of experiment folders, records and reports belong to infosam.experiment.layout "
        "(run folders': infosam.runs.RunDir); use its constants or ExperimentDir:\n" + "\n".join(wrong)
    )


def test_a_scored_sets_files_are_named_alike_everywhere():
    assert (layout.PER_IMAGE_FILE, layout.SUMMARY_FILE) == (evaluate.PER_IMAGE_FILE, evaluate.SUMMARY_FILE)


@pytest.mark.parametrize(
    "code",
    [
        'x = "summary.json"',
        'x = folder / "cell.json"',
        'x = sorted(root.glob("*/*/summary.json"))',
        'x = f"splits/{d}/{s}/per_image.csv"',
        'x = "teacher/SHA256SUMS"',
    ],
)
def test_the_scan_sees_a_name_in_code(tmp_path, code):
    path = tmp_path / "module.py"
    path.write_text(f'"""Writes summary.json and cell.json."""\n\n{code}\n')
    assert len(spellings(path)) == 1


def test_the_scan_leaves_docstrings_and_prose_alone(tmp_path):
    path = tmp_path / "module.py"
    path.write_text(
        '"""summary.json"""\n\n\ndef f():\n    """The cell.json of a cell."""\n    '
        'raise ValueError("no config.yaml in that folder")\n'
    )
    assert spellings(path) == []
