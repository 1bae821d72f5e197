"""The experiment runner and report: grid checks, reproducible splits, and a tiny grid run end to end, killed
mid-grid and resumed, whose report holds the paired table; plus `infosam eval RUN_DIR`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import infosam.train as train_module
from infosam.cli import main as run_cli
from infosam.data.formats import open_dataset
from infosam.data.synthetic import write_synthetic_dataset
from infosam.evaluate import evaluate_run, read_evaluation
from infosam.experiment import GridError, load_grid, run_experiment
from infosam.experiment.grid import cells, make_splits
from infosam.experiment.report import write_report
from infosam.runview import read_run

TINY = [
    "model.name=tiny",
    "train.batch_size=2",
    "train.epochs=2",
    "train.cpu=true",
    "train.log_every_steps=1",
    "eval.last_epochs=2",
    "eval.batch_size=4",
]


def _grid(tmp: Path, *, extra_arm_set: list[str] | None = None) -> Path:
    data = tmp / "data"
    if not data.exists():
        write_synthetic_dataset(data / "target", 8, domain="target")
        write_synthetic_dataset(data / "source", 3, domain="source")
    grid = {
        "set": TINY,
        "seeds": [0, 1],
        "datasets": {
            "target": {"path": "data/target", "test": 4, "train": [4], "retention": ["source"]},
            "source": {"path": "data/source", "target": False},
        },
        "arms": {
            "adapter": {"set": ["peft.methods=adapter+decoder", "infosam.enabled=false"]},
            "adapter-infosam": {
                "set": ["peft.methods=adapter+decoder", *(extra_arm_set or [])],
                "baseline": "adapter",
            },
        },
    }
    path = tmp / "grid.yaml"
    path.write_text(json.dumps(grid), encoding="utf-8")  # JSON is YAML
    return path


def test_grid_errors_name_the_key(tmp_path):
    path = tmp_path / "g.yaml"
    cases = [
        ("seeds: []\n", "seeds must be a non-empty list"),
        ("seeds: [0]\ndatasets: {a: {path: x, folds: 5, test: 3}}\narms: {p: {}}\n", "exactly one of folds"),
        ("seeds: [0]\ndatasets: {a: {path: x, folds: 5, retention: [b]}}\narms: {p: {}}\n", "names 'b'"),
        ("seeds: [0]\ndatasets: {a: {path: x, folds: 5}}\narms: {p: {baseline: q}}\n", "baseline names 'q'"),
        (
            "seeds: [0]\ndatasets: {a: {path: x, folds: 5, fold: 2}}\narms: {p: {}}\n",
            r"unknown key\(s\) \['fold'\]",
        ),
        ("seeds: [0]\ndatasets: {a: {path: x, folds: 1}}\narms: {p: {}}\n", "folds must be an integer >= 2"),
    ]
    for text, message in cases:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(GridError, match=message):
            load_grid(path)


def test_kfold_and_low_data_splits(tmp_path):
    write_synthetic_dataset(tmp_path / "d", 11, domain="target")
    path = tmp_path / "g.yaml"
    path.write_text(
        "seeds: [0, 1]\n"
        "datasets:\n  k: {path: d, folds: 3, split_seed: 4}\n  f: {path: d, test: 3, train: [2, 0.5]}\n"
        "arms: {a: {}, b: {baseline: a}}\n",
        encoding="utf-8",
    )
    grid = load_grid(path)
    assert len(cells(grid)) == (3 + 2) * 2 * 2
    everything = {p for p in make_splits(grid.datasets["k"])["heldout"]}
    k = make_splits(grid.datasets["k"])
    tests = [set(k[f"fold{i}of3-test"]) for i in (1, 2, 3)]
    assert set().union(*tests) == everything and sum(len(t) for t in tests) == 11  # each image tested once
    for i in (1, 2, 3):
        assert set(k[f"fold{i}of3-train"]) == everything - tests[i - 1]
    assert make_splits(grid.datasets["k"]) == k  # fixed by split_seed
    f = make_splits(grid.datasets["f"])
    assert len(f["heldout"]) == 3 and f["train2-test"] == f["train0p5-test"] == f["heldout"]
    assert len(f["train2-train"]) == 2 and len(f["train0p5-train"]) == 4  # half of the 8 left
    assert set(f["train2-train"]) <= set(f["train0p5-train"])  # nested
    assert not set(f["train0p5-train"]) & set(f["heldout"])


def test_split_file_outside_the_dataset_folder(tmp_path):
    root = write_synthetic_dataset(tmp_path / "d", 4, domain="source")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "two.csv").write_text(
        "image,label\nimages/source_00003.png,masks/source_00003.png\nimages/source_00001.png,masks/source_00001.png\n"
    )
    (tmp_path / "lists" / "one.txt").write_text("source_00002\n")
    ds = open_dataset(root, split=str(tmp_path / "lists" / "two.csv"), image_size=64)
    assert ds.ids == ["images/source_00003.png", "images/source_00001.png"]
    assert open_dataset(root, split=str(tmp_path / "lists" / "one.txt"), image_size=64).ids == [
        "images/source_00002.png"
    ]
    with pytest.raises(ValueError, match="split file not found"):
        open_dataset(root, split=str(tmp_path / "lists" / "three.csv"))


def test_tiny_grid_end_to_end_killed_resumed_and_reported(tmp_path, monkeypatch):
    grid = _grid(tmp_path)
    exp = tmp_path / "exp"

    # Kill the third cell in its second epoch (after its epoch-1 checkpoint): 2 steps per epoch, 4 per cell.
    real_step = train_module.train_step
    calls = {"n": 0}

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4 + 4 + 3:
            raise KeyboardInterrupt("killed")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", dying_step)
    seen = []
    with pytest.raises(KeyboardInterrupt):
        run_experiment(grid, exp, on_progress=seen.append)
    assert [p.done for p in seen] == [1, 2] and seen[-1].total == 4 and seen[-1].eta_seconds > 0
    killed = exp / "cells/target/train4/adapter/seed-1"
    assert json.loads((killed / "cell.json").read_text())["status"] == "training"
    assert read_run(killed / "run").resumable and not read_run(killed / "run").finished

    monkeypatch.setattr(train_module, "train_step", real_step)
    started = []
    real_train = train_module.train
    monkeypatch.setattr(
        train_module,
        "train",
        lambda config, **kw: (
            started.append((Path(config.output).parent.name, kw)) or real_train(config, **kw)
        ),
    )
    seen = []
    run_experiment(grid, exp, on_progress=seen.append)
    assert [p.skipped for p in seen] == [True, True, False, False]
    assert started[0][1]["resume"] is True and started[1][1].get("resume", False) is False
    assert len(started) == 2

    # The cell's own test evaluation (evaluate_run) equals what training logged for its last epoch.
    cell = exp / "cells/target/train4/adapter-infosam/seed-0"
    rows, summary = read_evaluation(cell / "eval" / "test")
    logged = read_run(cell / "run").epoch_evals[2]
    assert summary["n_images"] == len(rows) == 4
    assert summary["Dice"] == pytest.approx(logged["Dice"], abs=1e-6)
    assert (cell / "eval" / "retention-source" / "epoch-001" / "per_image.csv").is_file()
    assert len(read_evaluation(exp / "teacher" / "source" / "heldout")[0]) == 3

    report = write_report(exp, n_boot=200)
    text = (report / "report.md").read_text()
    assert "## Paired differences" in text
    assert "| target | train4 | test | adapter-infosam - adapter | Dice |" in text
    assert "| target | train4 | retention-source | adapter-infosam - adapter | IoU |" in text
    paired = list(csv.DictReader(open(report / "paired.csv")))
    dice = next(p for p in paired if p["set"] == "test" and p["metric"] == "Dice")
    assert float(dice["ci_low"]) <= float(dice["difference"]) <= float(dice["ci_high"])
    assert dice["n_seeds"] == "2" and dice["n_images"] == "4"
    # The estimate is the mean over seeds of the per-image differences of the two arms' CSVs.
    per_seed = []
    for seed in (0, 1):
        a = read_evaluation(exp / f"cells/target/train4/adapter-infosam/seed-{seed}/eval/test")[0]
        b = {
            r["id"]: r["Dice"]
            for r in read_evaluation(exp / f"cells/target/train4/adapter/seed-{seed}/eval/test")[0]
        }
        per_seed.append(sum(r["Dice"] - b[r["id"]] for r in a) / len(a))
    assert float(dice["difference"]) == pytest.approx(sum(per_seed) / 2, abs=1e-9)
    assert (report / "figures" / "curves-target-train4.png").stat().st_size > 0
    assert (report / "figures" / "relation-target-train4.png").stat().st_size > 0
    assert "retention-source" in (report / "retention.csv").read_text()

    # A changed arm config under the same name is refused, naming the cell.
    with pytest.raises(GridError, match="adapter-infosam/seed-0 .* another config"):
        run_experiment(_grid(tmp_path, extra_arm_set=["infosam.lam2=0.25"]), exp)


def test_cli_eval_of_a_run_folder(tmp_path, capsys):
    data = write_synthetic_dataset(tmp_path / "d", 4, domain="target")
    run = tmp_path / "run"
    from infosam.config import load_config
    from infosam.train import train

    config = load_config(None, [f"data.path={data}", f"output={run}", "infosam.enabled=false", *TINY])
    config.train.epochs, config.data.train_split, config.data.test_split = 1, "all", "all"
    config.eval.last_epochs = 1
    train(config)
    out = tmp_path / "scores"
    assert (
        run_cli(
            ["eval", str(run), "--data", str(data), "--split", "all", "--out", str(out), "--workers", "0"]
        )
        == 0
    )
    rows, summary = read_evaluation(out)
    assert len(rows) == 4 and summary["run"] == str(run) and summary["prompt"] == "box"
    logged = json.loads((run / "eval" / "epoch-001.json").read_text())["summary"]
    assert summary["IoU"] == pytest.approx(logged["IoU"], abs=1e-6)
    same, _ = evaluate_run(run, data, "all", device="cpu")
    assert [r["id"] for r in same] == [r["id"] for r in rows]
    assert run_cli(["eval", str(tmp_path / "nope"), "--data", str(data), "--out", str(out)]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.realdata
def test_litemedsam_grid_splits_on_the_real_data(kvasir_dir, leaf_dir, monkeypatch):
    """The committed grid: 126 cells; leaf 5 x 20 test images covering all 100; Kvasir's held-out 200 shared by
    both sizes, its 50 training images inside its 200, none of them tested."""
    assert kvasir_dir.parent == leaf_dir.parent
    monkeypatch.setenv("INFOSAM_DATA", str(kvasir_dir.parent))
    grid = load_grid(Path(__file__).resolve().parents[1] / "experiments" / "litemedsam" / "grid.yaml")
    assert len(cells(grid)) == 126 and grid.datasets["leaf"].retention == ["kvasir-50"]
    leaf = make_splits(grid.datasets["leaf"])
    assert sorted(sum((leaf[f"fold{k}of5-test"] for k in range(1, 6)), [])) == leaf["heldout"]
    assert {len(leaf[f"fold{k}of5-train"]) for k in range(1, 6)} == {80}
    small, large = make_splits(grid.datasets["kvasir-50"]), make_splits(grid.datasets["kvasir-200"])
    assert small["heldout"] == large["heldout"] and len(small["heldout"]) == 200
    assert set(small["train50-train"]) < set(large["train200-train"])
    assert not set(large["train200-train"]) & set(large["heldout"])


def test_shards_split_the_cells_of_one_folder(tmp_path, capsys):
    grid = _grid(tmp_path)
    exp = tmp_path / "exp"
    names = [c.name for c in cells(load_grid(grid))]
    seen = []
    run_experiment(grid, exp, on_progress=seen.append, shard=(2, 2))
    assert [p.cell.name for p in seen] == names[1::2] and seen[-1].total == 2
    done = {str(p.parent.relative_to(exp / "cells")) for p in exp.glob("cells/**/cell.json")}
    assert done == set(names[1::2])  # only shard 2's cells were touched
    seen.clear()
    run_experiment(grid, exp, on_progress=seen.append, shard=(1, 2))
    assert [p.cell.name for p in seen] == names[0::2] and not any(p.skipped for p in seen)
    seen.clear()
    run_experiment(grid, exp, on_progress=seen.append)  # the whole grid: nothing left to do
    assert [p.skipped for p in seen] == [True] * 4
    for bad in ("3/2", "0/2", "x"):
        assert run_cli(["experiment", str(grid), "--out", str(exp), "--shard", bad]) == 2
        assert "--shard must be K/N" in capsys.readouterr().err
