"""The import directions of docs/architecture.md hold: no part imports a part above it, and there is no cycle.

Every ``import`` of an ``infosam`` module counts, those inside functions too (a lazy import still makes the lower
part depend on the higher one). The one exception is the package's facade, ``infosam/__init__.py``: its
functions may reach any part, and any part may read ``infosam.__version__`` from it.
"""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "infosam"

# The layers, lowest first; a module belongs to the longest entry that is the module or a package above it.
# Keep in step with docs/architecture.md.
LAYERS: list[tuple[str, ...]] = [
    (  # foundations: no infosam import above this line
        "infosam.options",
        "infosam.errors",
        "infosam.guard",
        "infosam.signals",
        "infosam.lock",
        "infosam.files",
        "infosam.weightfile",
        "infosam.metrics",
        "infosam.losses",
        "infosam.stats",
        "infosam.runtime",
        "infosam.extras",
        "infosam.data.reading",
        "infosam.data.prompts",
        "infosam.data.loading",
        "infosam.data.synthetic",
    ),
    ("infosam.sam",),  # the model families and their models (sam.family: what differs between them)
    ("infosam.peft",),  # PEFT methods on a built model
    ("infosam.distill",),  # the InfoSAM objective and the baseline distillers
    ("infosam.config", "infosam.data"),  # what a user writes, and the data it names
    ("infosam.model", "infosam.cache", "infosam.fingerprint", "infosam.prefix", "infosam.data.input_cache"),
    ("infosam.runs", "infosam.checkpoints"),  # the run folder
    ("infosam.load",),  # the one door from a source to a model
    ("infosam.step", "infosam.evaluate", "infosam.score_files", "infosam.predict"),  # using a model
    ("infosam.train", "infosam.export", "infosam.serve", "infosam.demo"),  # the jobs
    ("infosam.experiment",),  # grids of jobs
    ("infosam.cli", "infosam.__main__"),  # the command line
]
FACADE = "infosam"


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The infosam modules ``name`` imports anywhere in its file."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [a.name for a in node.names]
            if module == FACADE and names == ["__version__"]:
                continue  # the version, read from the facade: allowed everywhere
            targets = [f"{module}.{n}" if f"{module}.{n}" in MODULES else module for n in names]
        else:
            continue
        found.update(t for t in targets if t == FACADE or t.startswith(FACADE + "."))
    return {t for t in found if t != name}


def _layer(name: str) -> int:
    """The layer of the longest entry that is ``name`` or a package above it."""
    matches = [
        (len(p), index)
        for index, prefixes in enumerate(LAYERS)
        for p in prefixes
        if name == p or name.startswith(p + ".")
    ]
    if not matches:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS here and to docs/architecture.md")
    return max(matches)[1]


def test_every_module_has_a_layer():
    for name in MODULES:
        if name != FACADE:
            _layer(name)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != FACADE))
def test_no_part_imports_a_part_above_it(name):
    upward = sorted(t for t in _imports(name) if t != FACADE and _layer(t) > _layer(name))
    assert not upward, f"{name} (layer {_layer(name)}) imports {upward}, which sit above it"
    assert FACADE not in _imports(name), f"{name} imports the package facade; import the module that owns it"


def test_no_import_cycle():
    graph = {n: _imports(n) - {FACADE} for n in MODULES if n != FACADE}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycle = stack[stack.index(m) :] + [m]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if m in graph and not state.get(m):
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if not state.get(n):
            visit(n)


def test_the_check_sees_a_lazy_upward_import(tmp_path, monkeypatch):
    """The rule is not vacuous: a lower module with an import inside a function is caught."""
    fake = tmp_path / "metrics.py"
    fake.write_text("def f():\n    from .train import train\n    return train\n")
    monkeypatch.setitem(MODULES, "infosam.metrics", fake)
    assert "infosam.train" in _imports("infosam.metrics")
    with pytest.raises(AssertionError, match="sit above it"):
        test_no_part_imports_a_part_above_it("infosam.metrics")


MAX_MODULE_LINES = 450
"""docs/architecture.md: no module of src/infosam is over this many lines (split it by concern instead)."""


def test_no_module_is_over_the_line_limit():
    long = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {long}"


# The bare builder's callers: build_base (the one place a pretrained base model is built) and the parameter count
# (an empty model on the meta device). docs/architecture.md states this rule.
BUILD_SAM_CALLERS = {"infosam.model", "infosam.peft.count"}


def _imports_build_sam(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and any(a.name == "build_sam" for a in node.names):
            if (node.module or "").endswith("sam.build"):
                return True
    return False


def test_only_build_base_and_the_parameter_count_use_the_bare_builder():
    users = {name for name, path in MODULES.items() if _imports_build_sam(path)}
    assert users <= BUILD_SAM_CALLERS, (
        f"{sorted(users - BUILD_SAM_CALLERS)} build a SAM with sam.build.build_sam; use model.build_base"
    )
    assert "infosam.model" in users  # the rule is not vacuous: build_base is found


def test_the_architecture_doc_names_tests_that_exist():
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    start = doc.index("## Rules")
    rules = doc[start : doc.index("\n## ", start)]
    named = set(re.findall(r"`(tests/test_\w+\.py)`", rules))
    assert len(named) >= 6
    missing = sorted(n for n in named if not (SRC.parents[1] / n).is_file())
    assert not missing, f"docs/architecture.md names tests that do not exist: {missing}"
    for layer in LAYERS:  # every layer's modules appear in the doc's table
        for prefix in layer:
            short = prefix.removeprefix("infosam.")
            assert f"`{short}" in doc, f"{prefix} is not in the layer table of docs/architecture.md"
