"""A run killed with SIGKILL after a checkpoint and resumed ends bitwise equal to an uninterrupted run (CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from infosam.data.synthetic import write_synthetic_dataset

INFOSAM = [sys.executable, "-c", "import sys; from infosam.cli import main; sys.exit(main())"]
# train() through the library with a step callback that pauses 3 s after every optimizer step, so the test can
# kill the run between two checkpoints however fast the machine.
SLOW_TRAIN = [
    sys.executable,
    "-c",
    "import sys, time; from infosam.config import load_config; from infosam.train import train; "
    "train(load_config(sys.argv[1], ['output=' + sys.argv[2]]), on_step=lambda step: time.sleep(3))",
]


def _tiny_setup(tmp_path: Path, model: str = "tiny") -> Path:
    """Synthetic train/test folders and a tiny-SAM config: 4 images, batch 2, 2 epochs = 4 steps."""
    data = tmp_path / "data"
    write_synthetic_dataset(data / "train", 4, domain="target")
    write_synthetic_dataset(data / "test", 2, domain="target", start=100)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"model: {{name: {model}}}\n"
        f"peft: {{methods: adapter+decoder, options: {{adapter: {{init: torch}}}}}}\n"
        f"data: {{path: {data}}}\n"
        f"train: {{batch_size: 2, epochs: 2, save_every_steps: 1, cpu: true}}\n"
        f"eval: {{last_epochs: 0}}\n",
        encoding="utf-8",
    )
    return config


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    return env


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    final = run / "weights" / "final"
    tensors = load_file(str(final / "peft.safetensors"))
    tensors.update({f"relation.{k}": v for k, v in load_file(str(final / "relation.safetensors")).items()})
    return tensors


@pytest.mark.parametrize("model", ["tiny", "tiny_sam2"])
def test_kill_9_then_resume_matches_uninterrupted_run(tmp_path, model):
    config = _tiny_setup(tmp_path, model)
    full, killed = tmp_path / "full", tmp_path / "killed"
    args = ["train", "--config", str(config), "--no-progress", "--output"]
    subprocess.run([*INFOSAM, *args, str(full)], check=True, env=_env(), capture_output=True, timeout=600)

    proc = subprocess.Popen(
        [*SLOW_TRAIN, str(config), str(killed)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 300
        while not (killed / "checkpoints" / "latest").is_file():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "weights" / "final").exists(), "the run finished before it was killed"
    stopped_at = (killed / "checkpoints" / "latest").read_text().strip()

    resumed = subprocess.run(
        [*INFOSAM, "train", "--resume", str(killed), "--no-progress"],
        env=_env(),
        capture_output=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert f"from {stopped_at}" in resumed.stderr.decode()

    a, b = _final_weights(full), _final_weights(killed)
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resume"
    steps = [line.split(",")[0] for line in (killed / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps), key=int), "metrics.csv repeats steps after resume"


def test_existing_run_folder_is_refused(tmp_path):
    config = _tiny_setup(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    result = subprocess.run(
        [*INFOSAM, "train", "--config", str(config), "--output", str(out)],
        env=_env(),
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert str(out) in result.stderr.decode() and "--overwrite" in result.stderr.decode()
    assert (out / "keep.txt").read_text() == "x"
