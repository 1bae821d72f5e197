"""`infosam train` says what it is about to do, and --resume says what it finds (finished run, no checkpoint)."""

from __future__ import annotations

import logging

from infosam.cli import main
from infosam.data.synthetic import write_synthetic_dataset
from infosam.model import student_parameters
from infosam.runs import RunDir


def _argv(tmp_path, *extra):
    data = tmp_path / "data"
    write_synthetic_dataset(data / "train", 4, domain="target")
    write_synthetic_dataset(data / "test", 2, domain="target", start=100)
    return [
        "train",
        "--set", "model.name=tiny",
        "--set", f"data.path={data}",
        "--set", "train.batch_size=2",
        "--set", "train.epochs=1",
        "--set", "train.cpu=true",
        "--set", "eval.last_epochs=1",
        "--output", str(tmp_path / "run"),
        "--no-progress",
        *extra,
    ]  # fmt: skip


def test_startup_line_then_a_finished_run_is_not_resumed(tmp_path, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="infosam.train"):
        assert main(_argv(tmp_path, "--threads", "1")) == 0
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("training "))
    info = student_parameters("tiny", "adapter+decoder", {})  # what `infosam info` reports for this student
    student, relation = info["parameters"]["total"]["trainable"], info["relation_module"]
    assert "InfoSAM (teacher on)" in line and "4 images" in line
    assert "2 steps per epoch x 1 epochs = 2 steps" in line
    assert "device cpu" in line and "1 thread(s)" in line
    assert (
        f"trains {student + relation:,} parameters (adapter+decoder + relation module {relation:,})" in line
    )
    assert f"run folder {tmp_path / 'run'}" in line
    capsys.readouterr()

    run = RunDir(tmp_path / "run")
    before = run.metrics_file.read_bytes(), run.summary_file.stat().st_mtime_ns
    caplog.clear()
    assert main(["train", "--resume", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "already finished (2 steps" in out and "nothing to resume" in out
    assert (run.metrics_file.read_bytes(), run.summary_file.stat().st_mtime_ns) == before
    assert not any(r.getMessage().startswith("training ") for r in caplog.records)


def test_resume_without_a_checkpoint_says_it_starts_over(tmp_path, caplog):
    from infosam.config import load_config

    argv = _argv(tmp_path)
    overrides = [value for flag, value in zip(argv, argv[1:], strict=False) if flag == "--set"]
    config = load_config(None, [*overrides, f"output={tmp_path / 'run'}"])
    run = RunDir(config.output).create()
    run.write_config(config)  # the run was killed before its first checkpoint
    with caplog.at_level(logging.INFO, logger="infosam.train"):
        assert main(["train", "--resume", str(run.path), "--no-progress"]) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("no checkpoint in" in m and "starts over from step 0" in m for m in messages)
    assert run.is_finished()


def test_published_config_outside_the_repository_explains_the_checkpoint_path(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "configs" / "kvasir" / "adapter_infosam.yaml"
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", str(config), "--set", f"data.path={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "checkpoints/sam_vit_b_01ec64.pth does not exist" in err
    assert f"read from the working directory {tmp_path}" in err and "--set model.checkpoint=" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_one_launcher_recipe_for_several_gpus(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    assert "torchrun --nproc_per_node 4 -m infosam train" in help_text
    assert "accelerate launch" not in help_text
