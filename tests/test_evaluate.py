"""evaluate() and ``infosam eval`` on a tiny SAM and a handful of synthetic pairs."""

import argparse
import csv
import json

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
