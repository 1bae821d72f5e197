"""evaluate() and ``infosam eval`` on a tiny SAM and a handful of synthetic pairs."""

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from infosam.cli import eval as eval_cli
from infosam.data.formats import open_dataset
from infosam.evaluate import evaluate
from infosam.metrics import METRIC_NAMES


@pytest.fixture
def tiny_dataset(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(40, 30), (50, 70), (64, 64)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"p{i}.png")
        m = np.zeros((h, w), np.uint8)
        m[h // 4 : h // 2, w // 5 : w // 2 + i] = 255
        Image.fromarray(m).save(root / "masks" / f"p{i}.png")
    (root / "one.txt").write_text("p1\n")  # a one-pair split for the CLI test
    return root


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="infosam")
    eval_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_evaluate_rows_summary_and_batch_independence(tiny_sam, tiny_dataset, monkeypatch):
    import infosam.evaluate as evaluate_module

    sam = tiny_sam()
    assert all(p.requires_grad for p in sam.parameters())
    tracked = []
    real_forward = evaluate_module.sam_forward

    def spy(model, images, **prompts):
        out = real_forward(model, images, **prompts)
        tracked.append(out.low_res_logits.requires_grad)
        return out

    monkeypatch.setattr(evaluate_module, "sam_forward", spy)
    ds = open_dataset(tiny_dataset, image_size=64)
    rows, summary = evaluate(sam, ds, prompt="box", batch_size=1)
    assert [r["id"] for r in rows] == ds.ids
    assert set(METRIC_NAMES) <= set(rows[0]) and summary["n_images"] == 3
    for name in METRIC_NAMES:
        assert 0 <= summary[name] <= 1.02
        assert summary[name] == pytest.approx(np.mean([r[name] for r in rows]))
    assert summary["prompt"] == "box" and summary["seed"] == 42 and summary["compat"] is False
    rows3, _ = evaluate(sam, ds, prompt="box", batch_size=3)  # prompts do not depend on the batch
    for a, b in zip(rows, rows3, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    assert tracked and not any(tracked)  # evaluation builds no autograd graph, though the weights accept one
    assert not sam.training


def test_evaluate_points_compat_and_size_check(tiny_sam, tiny_dataset):
    sam = tiny_sam()
    ds = open_dataset(tiny_dataset, image_size=64)
    rows, summary = evaluate(sam, ds.subset([1]), prompt="points", n_fg=1, n_bg=2, compat=True)
    assert len(rows) == 1 and summary["compat"] is True and (summary["n_fg"], summary["n_bg"]) == (1, 2)
    with pytest.raises(ValueError, match="image_size 1024 differs from the model's input size 64"):
        evaluate(sam, open_dataset(tiny_dataset, image_size=1024))
    with pytest.raises(ValueError, match="prompt 'mask' is not one of"):
        evaluate(sam, ds, prompt="mask")


def test_cli_eval_writes_files_and_refuses_overwrite(tiny_sam, tiny_dataset, tmp_path, capsys):
    ckpt = tmp_path / "tiny.pth"
    torch.save(tiny_sam().state_dict(), ckpt)
    out = tmp_path / "out"
    argv = [
        "eval",
        "--model",
        "tiny",
        "--checkpoint",
        str(ckpt),
        "--data",
        str(tiny_dataset),
        "--split",
        "one",
        "--out",
        str(out),
    ]
    assert run_cli([*argv, "--workers", "0", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "images" in printed and "IoU" in printed
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert len(rows) == 1 and rows[0]["id"] == "images/p1.png"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 1 and summary["model"] == "tiny" and summary["prompt"] == "box"
    with pytest.raises(eval_cli.CLIError, match="per_image.csv.*--overwrite"):
        run_cli([*argv, "--workers", "0"])
    assert run_cli([*argv, "--workers", "0", "--overwrite", "--prompt", "points", "--points", "1", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompt"] == "points" and summary["n_fg"] == 1 and summary["n_bg"] == 2


# --------------------------------------------------------------------------------------------- checked before work


@pytest.fixture
def tiny_checkpoint(tiny_sam, tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(tiny_sam().state_dict(), path)
    return path


def _eval_argv(checkpoint, data, out, *extra):
    return [
        "eval",
        "--model",
        "tiny",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(data),
        "--out",
        str(out),
        *extra,
    ]


def test_zero_shot_image_size(tiny_checkpoint, tiny_dataset, tmp_path):
    from infosam.evaluate import evaluate_run

    rows, summary = evaluate_run(
        "tiny", tiny_dataset, checkpoint=tiny_checkpoint, image_size=32, device="cpu"
    )
    assert summary["image_size"] == 32 and len(rows) == 3
    out = tmp_path / "out32"
    assert (
        run_cli([*_eval_argv(tiny_checkpoint, tiny_dataset, out), "--image-size", "32", "--workers", "0"])
        == 0
    )
    assert json.loads((out / "summary.json").read_text())["image_size"] == 32
    with pytest.raises(eval_cli.CLIError, match="--image-size is for zero-shot SAM"):
        run_cli(["eval", str(tmp_path), "--data", str(tiny_dataset), "--out", str(out), "--image-size", "32"])


def test_bad_pairs_are_all_listed_before_the_model_loads(
    tiny_checkpoint, tiny_dataset, tmp_path, capsys, monkeypatch
):
    from infosam.cli import main

    (tiny_dataset / "images" / "p1.png").write_bytes(b"corrupt")
    (tiny_dataset / "masks" / "p2.png").unlink()

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr("infosam.load.ModelSource.open", refuse)
    out = tmp_path / "out"
    assert main(_eval_argv(tiny_checkpoint, tiny_dataset, out)) == 2
    err = capsys.readouterr().err
    assert "p1.png" in err and "p2.png" in err and "nothing was scored" in err
    assert "Traceback" not in err and not out.exists()


def test_empty_dataset_is_an_error(tiny_checkpoint, tmp_path, capsys):
    from infosam.cli import main

    data = tmp_path / "empty"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    assert main(_eval_argv(tiny_checkpoint, data, tmp_path / "out")) == 2
    assert "no image/mask pairs to evaluate" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_empty_ground_truth_is_scored_with_a_warning(tiny_checkpoint, tiny_dataset, caplog):
    from infosam.evaluate import evaluate_run

    Image.fromarray(np.zeros((70, 50), np.uint8)).save(tiny_dataset / "masks" / "p1.png")
    with caplog.at_level("WARNING", logger="infosam.evaluate"):
        rows, summary = evaluate_run("tiny", tiny_dataset, checkpoint=tiny_checkpoint, device="cpu")
    assert summary["n_images"] == 3
    assert "1 of 3 ground-truth masks are empty (images/p1.png)" in caplog.text
    assert "IoU" in caplog.text


@pytest.mark.parametrize("points", [["-1", "3"], ["0", "0"]])
def test_bad_point_counts_are_one_line_errors(tiny_checkpoint, tiny_dataset, tmp_path, capsys, points):
    from infosam.cli import main

    argv = _eval_argv(
        tiny_checkpoint, tiny_dataset, tmp_path / "out", "--prompt", "points", "--points", *points
    )
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--points N_FG N_BG" in err and len(err.strip().splitlines()) == 1


def test_cli_cache_fills_the_teacher_cache_then_scores_the_same(tiny_checkpoint, tiny_dataset, tmp_path):
    from infosam.cache import TEACHER_KIND, read_manifest

    cache = tmp_path / "cache"
    plain, first, second = tmp_path / "plain", tmp_path / "first", tmp_path / "second"
    assert run_cli([*_eval_argv(tiny_checkpoint, tiny_dataset, plain), "--workers", "0"]) == 0
    assert not cache.exists()
    for out in (first, second):
        argv = [*_eval_argv(tiny_checkpoint, tiny_dataset, out), "--workers", "0", "--cache", str(cache)]
        assert run_cli(argv) == 0
    assert read_manifest(cache)["kind"] == TEACHER_KIND and len(list(cache.glob("**/*.safetensors"))) == 3
    scores = [json.loads((o / "summary.json").read_text()) for o in (plain, first, second)]
    assert scores[1] == scores[2]  # the second run read what the first stored
    for metric in ("IoU", "Dice"):
        assert scores[1][metric] == pytest.approx(scores[0][metric], abs=1e-3), metric  # float16 storage
    with pytest.raises(eval_cli.CLIError, match="--cache DIR is for zero-shot SAM"):
        run_cli(
            ["eval", str(tmp_path), "--data", str(tiny_dataset), "--out", str(tmp_path / "x"), "--cache", "d"]
        )


# --------------------------------------------------------------------------------------------- prompts named (issue 22)


def test_points_alone_imply_point_prompts_and_box_with_points_is_refused(
    tiny_checkpoint, tiny_dataset, tmp_path, capsys
):
    from infosam.cli import main

    out = tmp_path / "out"
    argv = _eval_argv(tiny_checkpoint, tiny_dataset, out, "--workers", "0", "--points", "1", "3")
    assert main(argv) == 0  # was: the points silently ignored, a box scored
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["prompt"], summary["n_fg"], summary["n_bg"]) == ("points", 1, 3)
    assert summary["prompt_kind"] == "points" and "prompt: points (1 foreground + 3 background" in (
        capsys.readouterr().out
    )
    for extra in (["--prompt", "box", "--points", "1", "3"], ["--points", "1", "3", "--tight-box"]):
        assert main(_eval_argv(tiny_checkpoint, tiny_dataset, tmp_path / "o2", *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--points" in err[0], err
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize(
    "flags, rule, kind, words",
    [
        (
            ["--box-noise", "per-coordinate"],
            "per-coordinate",
            "noisy_box",
            "each box coordinate moved independently by up to 5 px of the 64-px",
        ),
        ([], "release", "noisy_box", "one shared shift below min(5 px, half the shorter"),  # the default
        (
            ["--box-noise", "release"],
            "release",
            "noisy_box",
            "one shared shift below min(5 px, half the shorter",
        ),
        (["--tight-box"], "none", "tight_box", "tight_box (the box around the ground-truth mask"),
        (["--box-noise", "none"], "none", "tight_box", "tight_box"),
    ],
)
def test_box_prompts_are_named_with_their_rule_and_scale(
    tiny_checkpoint, tiny_dataset, tmp_path, capsys, flags, rule, kind, words
):
    from infosam.cli import main

    out = tmp_path / "out"
    assert main(_eval_argv(tiny_checkpoint, tiny_dataset, out, "--workers", "0", *flags)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["box_noise"], summary["prompt_kind"]) == (rule, kind)
    assert words in summary["prompt_description"]
    assert f"prompt: {summary['prompt_description']}" in capsys.readouterr().out


def test_eval_help_names_the_prompt_kinds(capsys):
    with pytest.raises(SystemExit):
        run_cli(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for word in ("--tight-box", "tight_box", "noisy_box", "per-coordinate", "release", "1024 px"):
        assert word in text, word


def test_eval_of_a_run_reads_it_once_and_builds_one_model(
    tiny_checkpoint, tiny_dataset, tmp_path, monkeypatch
):
    """`infosam eval RUN_DIR --cache` reads the run's config once and builds one model: the decoder-only student's
    frozen encoder is the checkpoint's, so it serves as its own reference for the teacher cache (before: three
    config reads, and a second base model built only to compare encoder weights)."""
    from infosam import model as model_module
    from infosam.cli import main
    from infosam.config import save_config
    from infosam.runs import RunDir
    from test_export import make_run

    run = make_run(tmp_path, "decoder", checkpoint=str(tiny_checkpoint))
    config = RunDir(run).read_config()
    config.cache.dir = str(tmp_path / "cache")
    save_config(config, run / "config.yaml")
    reads, builds = [], []
    real_read, real_build = RunDir.read_config, model_module.build_base
    monkeypatch.setattr(RunDir, "read_config", lambda self: reads.append(self.path) or real_read(self))
    monkeypatch.setattr(model_module, "build_base", lambda *a, **k: builds.append(a) or real_build(*a, **k))

    out = tmp_path / "out"
    argv = ["eval", str(run), "--data", str(tiny_dataset), "--out", str(out), "--workers", "0", "--cache"]
    assert main(argv) == 0
    assert len(reads) == 1 and len(builds) == 1
    cached = json.loads((out / "summary.json").read_text())
    assert cached["cached_features"] is True and len(list((tmp_path / "cache").glob("**/*.safetensors"))) == 3
    assert main([*argv[:-1], "--out", str(tmp_path / "plain")]) == 0
    plain = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert plain["cached_features"] is False
    for metric in ("IoU", "Dice"):  # float16 features, the same scores within their rounding
        assert cached[metric] == pytest.approx(plain[metric], abs=1e-3), metric


@pytest.mark.parametrize("flags", [["--tight-box"], ["--box-noise", "release"]])
def test_box_noise_on_a_run_scored_with_points_is_refused(
    tiny_checkpoint, tiny_dataset, tmp_path, capsys, flags
):
    """A run whose eval section asks for point prompts draws no box: ``--tight-box`` (or ``--box-noise``) given
    without ``--prompt box`` is a one-line error naming the option and the run's prompt mode (was: silently
    ignored, points scored); with ``--prompt box`` the tight box is scored."""
    from infosam.cli import main
    from infosam.config import save_config
    from infosam.runs import RunDir
    from test_export import make_run

    run = make_run(tmp_path, "decoder", checkpoint=str(tiny_checkpoint))
    config = RunDir(run).read_config()
    config.eval.prompt = "points"
    save_config(config, run / "config.yaml")
    out = tmp_path / "out"
    argv = ["eval", str(run), "--data", str(tiny_dataset), "--out", str(out), "--workers", "0", *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flags[0] in err[0] and "eval.prompt is points" in err[0], err
    assert "--prompt box" in err[0] and not out.exists()
    assert main([*argv, "--prompt", "box"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompt"] == "box" and summary["box_noise"] == flags[-1].replace("--tight-box", "none")


def test_eval_of_a_run_checks_each_thing_once(tiny_checkpoint, tiny_dataset, tmp_path, monkeypatch):
    """`infosam eval RUN_DIR` parses and calls; the library checks the run folder, the prompt settings and the
    outputs once each (a review found the prompt check made three times, the folder and output checks twice).
    A RUN_DIR that is no folder is still refused with the one-line message naming it."""
    import infosam.evaluate as evaluate_module
    from infosam.cli import main
    from infosam.runs import RunDir
    from test_export import make_run

    run = make_run(tmp_path, "decoder", checkpoint=str(tiny_checkpoint))
    calls: dict[str, int] = {}

    def counted(name, real):
        def spy(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return real(*args, **kwargs)

        return spy

    for name in ("check_prompt_settings", "check_box_noise", "check_outputs", "check_eval_data"):
        monkeypatch.setattr(evaluate_module, name, counted(name, getattr(evaluate_module, name)))
    monkeypatch.setattr(RunDir, "read_config", counted("read_config", RunDir.read_config))
    monkeypatch.setattr(RunDir, "is_run", counted("is_run", RunDir.is_run))
    real_is_dir = Path.is_dir

    def is_dir(self):  # counted only for RUN_DIR itself (the data folder is looked at by its own checks)
        if self == Path(run):
            calls["RUN_DIR is_dir"] = calls.get("RUN_DIR is_dir", 0) + 1
        return real_is_dir(self)

    monkeypatch.setattr(Path, "is_dir", is_dir)
    out = tmp_path / "out"
    argv = [
        "eval",
        str(run),
        "--data",
        str(tiny_dataset),
        "--out",
        str(out),
        "--workers",
        "0",
        "--points",
        "1",
        "2",
    ]
    assert main(argv) == 0
    assert calls == {
        "check_prompt_settings": 1,
        "check_box_noise": 1,
        "check_outputs": 1,
        "check_eval_data": 1,
        "read_config": 1,
        "is_run": 1,
        "RUN_DIR is_dir": 1,
    }
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["prompt"], summary["n_fg"], summary["n_bg"]) == ("points", 1, 2)
    monkeypatch.setattr(Path, "is_dir", counted("is_dir", Path.is_dir))
    calls.clear()
    gone = tmp_path / "gone"
    assert main(["eval", str(gone), "--data", str(tiny_dataset), "--out", str(tmp_path / "o2")]) == 2
    assert calls == {"is_dir": 1}  # the library's one look, before anything else is read
