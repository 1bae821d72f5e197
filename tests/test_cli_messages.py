"""Messages point at things that exist, and user mistakes end in one line (no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infosam.cli import main
from infosam.config import load_config
from infosam.data.check import DatasetCheckError, validate_dataset
from infosam.data.formats import open_dataset

REPO = Path(__file__).resolve().parents[1]


def _pair(root: Path, stem: str, *, image_bytes: bytes | None = None) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    if image_bytes is None:
        Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(root / "images" / f"{stem}.png")
    else:
        (root / "images" / f"{stem}.png").write_bytes(image_bytes)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:20] = 255
    Image.fromarray(mask).save(root / "masks" / f"{stem}.png")


def test_bad_pairs_refusal_names_an_override_that_works(tmp_path):
    _pair(tmp_path, "good")
    _pair(tmp_path, "bad", image_bytes=b"not an image")
    with pytest.raises(DatasetCheckError) as caught:
        validate_dataset(open_dataset(tmp_path))
    message = str(caught.value)
    assert "--skip-bad-pairs" not in message
    assert "--set data.skip_bad_pairs=true" in message
    # ... and what it names is accepted and does what it says.
    config = load_config(None, ["data.path=x", "data.skip_bad_pairs=true"])
    assert config.data.skip_bad_pairs is True
    dataset, report = validate_dataset(open_dataset(tmp_path), skip_bad=config.data.skip_bad_pairs)
    assert dataset.ids == ["images/good.png"] and len(report.errors) == 1


def test_config_that_is_a_directory_says_so(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("train: {lr: 1.0e-4}\n")
    assert main(["train", "--config", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and "a.yaml" in err and "not found" not in err
    assert len(err.strip().splitlines()) == 1


def test_fp16_on_cpu_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "--set",
        f"data.path={tmp_path}",
        "--set",
        "train.precision=fp16",
        "--set",
        "train.cpu=true",
    ]
    assert main([*argv, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "train.precision=fp16 needs a CUDA GPU" in err and "bf16" in err
    assert not out.exists()


def test_closed_pipe_ends_quietly(tmp_path):
    """`infosam info --json | head -c 1`: the reader leaves early; no BrokenPipeError traceback."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "infosam", "info", "--model", "tiny", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    proc.stdout.close()  # before the command writes (it imports torch first): every write hits a closed pipe
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
    assert proc.returncode == 141
