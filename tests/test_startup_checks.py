"""Start-up checks of the ``infosam`` command: a broken install ends in one line that says how to fix it."""

from __future__ import annotations

import sys

import pytest

from infosam.cli import main, torchpair


def _versions(monkeypatch, torch_version: str, torchvision_version: str) -> None:
    table = {"torch": torch_version, "torchvision": torchvision_version}
    monkeypatch.setattr(torchpair, "installed", table.get)
    monkeypatch.delenv("INFOSAM_SKIP_TORCH_CHECK", raising=False)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("torch_version", "vision_version", "expected"),
    [
        ("2.13.0+cpu", "0.28.0", True),
        ("2.14.1", "0.29.1", True),
        ("2.9.0+cu126", "0.24.0+cu126", True),
        ("2.6.0a0+ecf3bae", "0.21.0a0", True),
        ("2.13.0+cpu", "0.29.1", False),
        ("2.9.1", "0.28.0", False),
        ("3.0.0", "0.30.0", None),  # a scheme this code does not know: not refused
        ("not-a-version", "0.28.0", None),
    ],
)
def test_release_pairing(torch_version, vision_version, expected):
    assert torchpair.pairs(torch_version, vision_version) is expected


def test_matching_torchvision_follows_the_minor_offset():
    assert torchpair.matching_torchvision("2.13.0+cpu") == "0.28.0"
    assert torchpair.matching_torchvision("2.14.1") == "0.29.1"
    assert torchpair.matching_torchvision("2.9.0") == "0.24.0"


def test_mismatched_releases_are_one_line_before_any_command(monkeypatch, capsys):
    _versions(monkeypatch, "2.13.0+cpu", "0.29.1")
    imported = []
    monkeypatch.setattr(torchpair, "_import_torchvision", lambda: imported.append(True))
    assert main(["info", "--model", "tiny"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("infosam info: error: torch 2.13.0+cpu and torchvision 0.29.1 do not match")
    assert "pip install --force-reinstall torch==2.13.0 torchvision==0.28.0" in line
    assert "--index-url https://download.pytorch.org/whl/cpu" in line
    assert not imported  # the version comparison alone decides; nothing was imported


def test_cuda_torchvision_beside_cpu_torch_is_one_line(monkeypatch, capsys):
    """The reported case: matching releases, different builds; torchvision's import fails on its operators."""
    _versions(monkeypatch, "2.13.0+cpu", "0.28.0")

    def broken():
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(torchpair, "_import_torchvision", broken)
    assert main(["info", "--model", "tiny"]) == 2
    line = _one_error_line(capsys)
    assert "torch 2.13.0+cpu and torchvision 0.28.0 do not match" in line
    assert "operator torchvision::nms does not exist" in line
    assert "torch==2.13.0 torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cpu" in line


def test_other_runtime_errors_are_not_renamed(monkeypatch):
    _versions(monkeypatch, "2.14.1", "0.29.1")

    def broken():
        raise RuntimeError("something else entirely")

    monkeypatch.setattr(torchpair, "_import_torchvision", broken)
    with pytest.raises(RuntimeError, match="something else"):
        torchpair.check_torch_pair(import_torchvision=True)


def test_the_check_can_be_skipped(monkeypatch):
    _versions(monkeypatch, "2.13.0+cpu", "0.29.1")
    monkeypatch.setenv("INFOSAM_SKIP_TORCH_CHECK", "1")
    torchpair.check_torch_pair(import_torchvision=True)  # no error


def test_the_installed_pair_passes():
    torchpair.check_torch_pair(import_torchvision=True)


@pytest.mark.parametrize("missing", ["sam2", "hydra"])
def test_sam2_model_without_sam2_is_one_line(monkeypatch, capsys, missing):
    """`infosam info --model sam2_hiera_tiny` without Meta's sam2 (or its hydra) says what to install, in one
    line, like the other extras."""
    from infosam.extras import MissingExtraError
    from infosam.sam.sam2 import _sam2_package

    for name in [m for m in sys.modules if m == missing or m.startswith(missing + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` -> ModuleNotFoundError, as when absent
    if missing != "sam2":  # sam2 itself imports hydra on import: make it import afresh
        for name in [m for m in sys.modules if m == "sam2" or m.startswith("sam2.")]:
            monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingExtraError, match=rf"needs Meta's sam2 package \({missing} is not installed\)"):
        _sam2_package()
    assert main(["info", "--model", "sam2_hiera_tiny"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("infosam info: error: the SAM 2 family needs Meta's sam2 package")
    assert "pip install" in line and "sam2>=1.1" in line
