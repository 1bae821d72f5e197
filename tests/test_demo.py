"""``infosam demo --quick``: every stage runs and writes its files; a demo folder is never reused."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from infosam.cli import main
from infosam.demo import default_out_dir
from infosam.sam.build import build_sam


def test_quick_demo_writes_everything_and_refuses_reuse(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out

    # (a) the teacher is an official-format checkpoint that loads strictly into a fresh tiny SAM
    build_sam("tiny", checkpoint=out / "teacher" / "tiny_source.pth")
    # (b) the fine-tuning went through train(): a run folder with its config and student weights
    assert (out / "run" / "config.yaml").is_file()
    assert list((out / "run").rglob("peft.safetensors"))
    # (c) the table has every row, in the file and on screen
    table = (out / "results.md").read_text().splitlines()
    assert table[0] == "| model | data | S | E_adp | IoU | Dice |"
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["model"], r["domain"]) for r in rows] == [
        ("teacher (tiny SAM, source-pretrained)", "source test"),
        ("teacher zero-shot", "target test"),
        ("plain PEFT fine-tuned (adapter+decoder, no teacher)", "target test"),
        ("InfoSAM fine-tuned (adapter+decoder)", "target test"),
    ]
    assert len(table) == 2 + len(rows)
    for row, line in zip(rows, table[2:], strict=True):
        assert line.startswith(f"| {row['model']} | {row['domain']} |") and line in printed
        assert all(0.0 <= row[m] <= 1.01 for m in ("S", "E_adp", "IoU", "Dice"))
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == 2  # --quick shows two target test images
    strip = np.asarray(Image.open(overlays[0]).convert("L"))
    bar = (
        strip.shape[0] - strip.shape[1] // 5
    )  # image | truth | teacher | plain PEFT | InfoSAM, square panels
    assert 8 <= bar <= 20 and strip.shape[1] % 5 == 0
    panel = strip.shape[1] // 5
    for i in range(5):  # every panel has a caption: dark text on the white bar above it
        caption = strip[:bar, i * panel : (i + 1) * panel]
        assert (caption < 100).sum() > 10 and (caption == 255).mean() > 0.5
    # (b') the plain PEFT baseline: the same run without the teacher, same seed and steps
    from infosam.runs import RunDir

    infosam_run, baseline_run = RunDir(out / "run"), RunDir(out / "run_baseline")
    a, b = infosam_run.read_config(), baseline_run.read_config()
    assert a.infosam.enabled and not b.infosam.enabled
    assert (a.train, a.peft, a.model) == (b.train, b.peft, b.model)
    assert infosam_run.read_summary()["steps"] == baseline_run.read_summary()["steps"] > 0
    assert "plain PEFT" in printed and "InfoSAM" in printed
    # (d) where everything is
    assert f"written in {out}" in printed and "results.md" in printed

    assert main(["demo", "--quick", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_default_out_dir_is_timestamped():
    path = default_out_dir()
    assert path.parent.name == "demo_out" and len(path.name) == len("20250101-120000")


def test_threads_must_be_positive(tmp_path, capsys):
    assert main(["demo", "--quick", "--threads", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--threads" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
