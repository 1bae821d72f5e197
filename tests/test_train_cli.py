"""`infosam train` fails before any work on bad options, naming them; the run-folder helpers are atomic."""

from __future__ import annotations

import pytest
import torch

from infosam import runs
from infosam.cli import main
from infosam.files import atomic_write
from infosam.load import load_run


def _cfg(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"model: {{name: tiny}}\ndata: {{path: {tmp_path}}}\noutput: {tmp_path / 'run'}\n")
    return str(path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "train.lrr=1"], "unknown option train.lrr"),
        (["--set", "train.batch_size=1"], "train.batch_size must be >= 2 when infosam.enabled is true"),
        (["--set", "train.lr"], "must look like section.option=value"),
        (["--resume", "/nonexistent/run"], "--resume continues a run with its saved config"),
    ],
)
def test_bad_options_fail_before_work(tmp_path, capsys, extra, message):
    assert main(["train", "--config", _cfg(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_options_reach_the_config_and_train(tmp_path, capsys, monkeypatch):
    """--config, --set (read as YAML, repeatable), --output, --overwrite and --no-progress arrive in what
    train() is given; the command then names the run folder it returned."""
    seen = {}

    def fake_train(config, *, resume, overwrite, progress):
        seen.update(config=config, resume=resume, overwrite=overwrite, progress=progress)
        return tmp_path / "elsewhere"

    monkeypatch.setattr("infosam.train.train", fake_train)
    args = ["train", "--config", _cfg(tmp_path), "--set", "train.lr=1e-4", "--set", "cache.inputs=false"]
    args += ["--output", str(tmp_path / "elsewhere"), "--overwrite", "--no-progress"]
    assert main(args) == 0
    config = seen["config"]
    assert config.model.name == "tiny" and config.data.path == str(tmp_path)  # from the file
    assert config.train.lr == 1e-4 and config.cache.inputs is False  # --set, values read as YAML
    assert config.output == str(tmp_path / "elsewhere")  # --output wins over the file's output
    assert (seen["resume"], seen["overwrite"], seen["progress"]) == (False, True, False)
    assert f"run folder: {tmp_path / 'elsewhere'}" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()  # the file's output was overridden
    # without the flags: no overwrite, a progress bar
    assert main(["train", "--config", _cfg(tmp_path)]) == 0
    assert (seen["overwrite"], seen["progress"], seen["config"].output) == (
        False,
        True,
        str(tmp_path / "run"),
    )


def test_resume_of_a_non_run_folder_names_it(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a run folder" in capsys.readouterr().err


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for option in ("--config", "--set", "--resume", "--overwrite", "--output", "--no-progress"):
        assert option in out


def test_run_folder_is_never_overwritten_without_the_flag(tmp_path):
    run = tmp_path / "run"
    runs.prepare_run_dir(run)
    (run / "config.yaml").write_text("x")
    with pytest.raises(runs.RunFolderError, match=str(run)):
        runs.prepare_run_dir(run)
    assert runs.prepare_run_dir(run, overwrite=True) == run and (run / "config.yaml").read_text() == "x"


def test_atomic_folder_replace_and_metrics_truncation_on_resume(tmp_path):
    target = tmp_path / "ckpt"
    for text in ("one", "two"):
        atomic_write(target, lambda tmp, t=text: (tmp.mkdir(), (tmp / "f").write_text(t)))
    assert (target / "f").read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    log = runs.MetricsLog(tmp_path / "m.csv", ["step", "loss"])
    for step in (1, 2, 3):
        log.append({"step": step, "loss": 0.5})
    runs.MetricsLog(tmp_path / "m.csv", ["step", "loss"], resume_step=2)
    assert (tmp_path / "m.csv").read_text().splitlines() == ["step,loss", "1,0.5", "2,0.5"]


def test_run_dir_names_every_path_and_load_run_finds_the_weights(tmp_path):
    from infosam.config import config_from_dict
    from infosam.distill.relation import RelationModule
    from infosam.model import build_base
    from infosam.peft import apply_peft

    run = runs.RunDir(tmp_path / "run")
    assert not run.is_run()
    assert run.weights_dir() == run.path / "weights" / "final"
    assert run.weights_dir(3) == run.path / "weights" / "epoch-003"
    assert run.evaluation_file(10) == run.path / "eval" / "epoch-010.json"
    assert run.sample_log(1) == run.path / "samples-rank1.txt"
    assert run.export_dir == run.path / "export" and run.checkpoints_dir == run.path / "checkpoints"
    config = config_from_dict({"model": {"name": "tiny"}, "data": {"path": "x"}, "output": "elsewhere"})
    student = build_base("tiny", seed=config.train.seed)  # what load_run rebuilds the base from
    spec = apply_peft(student, "decoder")
    run.create().write_config(config)
    with pytest.raises(FileNotFoundError, match="holds no trained weights"):
        run.student_weights()
    run.save_weights(student, spec, epoch=2)
    assert run.student_weights() == run.weights_dir(2) / "peft.safetensors"
    run.save_weights(student, spec)
    assert run.student_weights() == run.weights_dir() / "peft.safetensors"
    assert run.relation_weights() is None  # none trained
    run.save_weights(student, spec, RelationModule(8))
    assert run.relation_weights() == run.weights_dir() / "relation.safetensors"
    assert run.relation_weights().is_file()

    loaded_config, loaded = load_run(run.path)
    assert loaded_config.output == str(run.path) and loaded_config.model.name == "tiny"
    assert not loaded.training
    for (name, a), b in zip(loaded.named_parameters(), student.parameters(), strict=True):
        assert torch.equal(a, b), name
