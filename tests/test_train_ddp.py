"""Two processes on CPU (gloo) via torchrun: the run folder is written once, and each process sees its own data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from infosam.data.synthetic import write_synthetic_dataset

SRC = Path(__file__).resolve().parents[1] / "src"


def child_env() -> dict[str, str]:
    """The environment of the worker processes: this checkout's sources first on an absolute PYTHONPATH (the
    children run in another folder, where a relative entry such as PYTHONPATH=src would name nothing and an
    installed infosam would be imported instead), any other entries made absolute, one thread each."""
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    paths = [str(SRC), *(str(Path(p).resolve()) for p in entries if Path(p).resolve() != SRC)]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), OMP_NUM_THREADS="1")


def test_two_processes_share_one_run_folder_and_split_the_data(tmp_path):
    data = tmp_path / "data"
    write_synthetic_dataset(data / "train", 8, domain="target")
    write_synthetic_dataset(data / "test", 2, domain="target", start=100)
    script = tmp_path / "infosam_cli.py"
    script.write_text(
        "import sys\nimport infosam\nfrom infosam.cli import main\n"
        "print('infosam from', infosam.__file__, file=sys.stderr)\nsys.exit(main())\n"
    )
    run = tmp_path / "run"
    (tmp_path / "empty.yaml").write_text("{}\n")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
        "train", "--no-progress", "--output", str(run), "--config", str(tmp_path / "empty.yaml"),
        "--set", "model.name=tiny", "--set", f"data.path={data}", "--set", "train.cpu=true",
        "--set", "train.batch_size=2", "--set", "train.epochs=1", "--set", "train.log_every_steps=1",
        "--set", "infosam.global_batch=true", "--set", "eval.last_epochs=1", "--set", "train.log_samples=true",
    ]  # fmt: skip
    result = subprocess.run(command, env=child_env(), capture_output=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()[-4000:]
    # Both workers ran this checkout's code, wherever pytest was started from.
    assert result.stderr.decode().count(f"infosam from {SRC / 'infosam' / '__init__.py'}") == 2

    # 8 images over 2 processes with 2 per batch: 2 optimizer steps, each logged once (by the main process).
    steps = [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2"]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    for name in ("config.yaml", "summary.json", "eval/epoch-001.json", "weights/final/peft.safetensors"):
        assert (run / name).is_file(), name

    seen = {}
    for rank in (0, 1):
        lines = (run / f"samples-rank{rank}.txt").read_text().splitlines()
        seen[rank] = [i for line in lines for i in line.split("\t")[2].split()]
    assert len(seen[0]) == len(seen[1]) == 4
    assert not set(seen[0]) & set(seen[1]), "both processes trained on the same images"
    assert len(set(seen[0]) | set(seen[1])) == 8
