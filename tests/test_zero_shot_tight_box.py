"""``infosam eval --tight-box`` on real images scores what ``benchmarks/zero_shot_priors.py`` (the README's zero-shot
table) scores for LiteMedSAM on the same images (issue 22, item 5). Three images per dataset, each scored twice: about a minute on one CPU thread;
skipped when ../shared/data (or $INFOSAM_DATA) is absent."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from conftest import REAL_MODEL_SCORE_ATOL, REPO
from infosam.cli import main

sys.path.insert(0, str(REPO / "benchmarks"))
import zero_shot_priors  # noqa: E402

N_IMAGES = 3


@pytest.mark.realdata
@pytest.mark.parametrize("dataset", ["kvasir_dir", "leaf_dir"])
def test_tight_box_eval_scores_what_the_zero_shot_benchmark_scores(dataset, request, tmp_path, capsys):
    data = request.getfixturevalue(dataset)
    lines = tmp_path / "bench.jsonl"
    assert (
        zero_shot_priors.main(
            ["--data", str(data), "--every", "25", "--limit", str(N_IMAGES), "--jsonl", str(lines)]
        )
        == 0
    )
    bench = {row["id"]: row["LiteMedSAM (box)"] for row in map(json.loads, lines.read_text().splitlines())}
    assert len(bench) == N_IMAGES
    split = tmp_path / "split.txt"
    split.write_text("".join(f"{i.split('/')[-1].rsplit('.', 1)[0]}\n" for i in bench))
    out = tmp_path / "eval"
    argv = ["eval", "--model", "litemedsam", "--checkpoint", "bundled", "--data", str(data)]
    argv += ["--split", str(split), "--out", str(out), "--tight-box", "--workers", "0", "--device", "cpu"]
    assert main(argv) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompt_kind"] == "tight_box" and summary["n_images"] == N_IMAGES
    with open(out / "per_image.csv", newline="") as f:
        rows = {r["id"]: (float(r["IoU"]), float(r["Dice"])) for r in csv.DictReader(f)}
    assert rows.keys() == bench.keys()
    for image_id, (iou, dice) in bench.items():
        # two code paths over a real model: equal up to a few threshold pixels on any CPU or GPU (conftest)
        assert rows[image_id] == pytest.approx((iou, dice), abs=REAL_MODEL_SCORE_ATOL), image_id
