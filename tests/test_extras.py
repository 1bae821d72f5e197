"""Optional dependencies: the core package trains, evaluates and predicts without them; a command that needs one
says in one line which extra to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infosam.extras import EXTRAS, MissingExtraError, require

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = sorted(EXTRAS)  # gradio, matplotlib, onnx, onnxruntime

BLOCK = "import sys\n"


def _without_extras(tmp_path: Path) -> dict:
    """An environment in which the optional modules look uninstalled: a folder first on PYTHONPATH holds a stub
    package per module whose import raises ModuleNotFoundError, as a missing package's does."""
    import os

    stubs = tmp_path / "no-extras"
    for module in OPTIONAL:
        (stubs / module).mkdir(parents=True)
        (stubs / module / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n"
        )
    path = os.pathsep.join(p for p in (str(stubs), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is in the standard library from Python 3.11")
def test_core_dependencies_leave_the_optional_parts_to_extras():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    for module in OPTIONAL:
        assert module not in core, module
    extras = project["optional-dependencies"]
    for module, extra in EXTRAS.items():
        assert any(req.startswith(module) for req in extras[extra]), (module, extra)
    assert "infosam[all]" in extras["dev"]  # make test installs what the suite needs


def test_require_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(
        MissingExtraError, match=r"infosam report's figures needs matplotlib.*'infosam\[report\]'"
    ):
        require("matplotlib", "infosam report's figures")
    assert require("json", "anything").dumps([1]) == "[1]"


def test_a_command_without_its_extra_is_one_line(tmp_path):
    code = BLOCK + (
        "import torch\n"
        "from infosam.sam.build import build_sam\n"
        "from infosam.cli import main\n"
        f"torch.save(build_sam('tiny').state_dict(), {str(tmp_path / 'tiny.pth')!r})\n"
        f"sys.exit(main(['serve', '--model', 'tiny', '--checkpoint', {str(tmp_path / 'tiny.pth')!r}, "
        "'--port', '0']))\n"
    )
    env = _without_extras(tmp_path)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "infosam serve" in line]
    assert lines and "pip install 'infosam[serve]'" in lines[-1]
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_train_evaluate_and_predict_without_any_extra(tmp_path):
    """`pip install infosam` (no extras): the demo's whole pipeline (pretrain, InfoSAM and plain training,
    evaluation, prediction overlays) runs with gradio, onnx, onnxruntime and matplotlib unavailable."""
    code = BLOCK + (
        "from infosam.cli import main\n"
        f"sys.exit(main(['demo', '--quick', '--out', {str(tmp_path / 'demo')!r}]))\n"
    )
    env = _without_extras(tmp_path)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


def test_export_refuses_a_missing_extra_or_an_existing_output_before_building(tmp_path, monkeypatch):
    """An ONNX export without onnx, or onto an existing file, stops before the (slow) model build, not after it."""
    from infosam.export import export_run
    from infosam.load import ModelSource
    from test_export import make_run

    run = make_run(tmp_path, "decoder")

    def built(*args, **kwargs):
        raise AssertionError("the model was built before the export's inputs were checked")

    monkeypatch.setattr(ModelSource, "open", built)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingExtraError, match=r"--format onnx needs onnx.*'infosam\[export\]'"):
        export_run(run, "onnx")
    taken = tmp_path / "taken.pth"
    taken.write_bytes(b"the user's file")
    with pytest.raises(FileExistsError, match="taken.pth exists; pass --overwrite"):
        export_run(run, "sam", taken)
    assert taken.read_bytes() == b"the user's file"


def test_serve_says_its_missing_extra_before_loading_models(tmp_path, monkeypatch):
    from infosam import serve as serve_module
    from test_export import make_run

    run = make_run(tmp_path, "decoder")

    def loaded(*args, **kwargs):
        raise AssertionError("the models were loaded before the missing extra was named")

    monkeypatch.setattr(serve_module, "load_models", loaded)
    monkeypatch.setitem(sys.modules, "gradio", None)
    with pytest.raises(MissingExtraError, match=r"infosam serve needs gradio.*'infosam\[serve\]'"):
        serve_module.serve(run)


def test_report_without_matplotlib_writes_nothing(tmp_path, monkeypatch):
    """The committed encoder-grid record, reported with matplotlib missing: one clear error, no half-made report."""
    from infosam.experiment.report import write_report

    record = Path(__file__).resolve().parents[1] / "experiments" / "litemedsam" / "results" / "grid_encoder"
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"'infosam\[report\]'"):
        write_report(record, tmp_path / "page.md", n_boot=10)
    assert list(tmp_path.iterdir()) == []
