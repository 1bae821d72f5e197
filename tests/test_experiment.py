"""The experiment runner and report: grid checks, reproducible splits, and a tiny grid run end to end, killed
mid-grid and resumed, whose report holds the paired table; plus `infosam eval RUN_DIR`."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import re
import shutil
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import infosam.experiment.cellrun as cellrun_module
import infosam.experiment.runner as runner_module
import infosam.experiment.scoring as scoring_module
import infosam.experiment.sharing as sharing_module
import infosam.experiment.timing as timing_module
import infosam.train as train_module
from conftest import REPO
from infosam.cli import main as run_cli
from infosam.data.formats import open_dataset
from infosam.data.synthetic import write_synthetic_dataset
from infosam.evaluate import evaluate_run, read_evaluation
from infosam.experiment import GridError, cellrun, load_grid, run_experiment, sharing
from infosam.experiment.collect import collect
from infosam.experiment.layout import ExperimentDir
from infosam.experiment.plan import cells
from infosam.experiment.provenance import grid_variables, prompt_sentence, provenance
from infosam.experiment.report import write_report
from infosam.experiment.splits import make_splits
from infosam.metrics import METRIC_NAMES
from infosam.runs import RunDir

TINY = [
    "model.name=tiny",
    "train.batch_size=2",
    "train.epochs=2",
    "train.cpu=true",
    "train.log_every_steps=1",
    "eval.last_epochs=2",
    "eval.batch_size=4",
]


def _grid(tmp: Path, *, extra_arm_set: list[str] | None = None, name: str = "grid.yaml") -> Path:
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
    path = tmp / name
    # JSON is YAML; the leading comment block is the grid's description, quoted by the report
    path.write_text(
        "# A tiny grid for the tests.\n#\n# Fixed before the run.\n" + json.dumps(grid), encoding="utf-8"
    )
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


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory):
    """The tiny grid (2 arms x 2 seeds, one part), run once for the module: killed in the second epoch of its third
    cell, then run again to the end. Tests that change the experiment folder work on a copy."""
    tmp = tmp_path_factory.mktemp("tiny-grid")
    grid = _grid(tmp)
    exp = tmp / "exp"
    facts = SimpleNamespace(tmp=tmp, grid=grid, exp=exp)
    killed = exp / "cells/target/train4/adapter/seed-1"

    # Kill the third cell in its second epoch (after its epoch-1 checkpoint): 2 steps per epoch, 4 per cell.
    real_step, real_train = train_module.train_step, train_module.train
    calls = {"n": 0}

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4 + 4 + 3:
            # what a kill without warning (SIGKILL) would leave: the time written by the step callback so far
            facts.seconds_before_kill = json.loads((killed / "cell.json").read_text())["train_seconds"]
            raise KeyboardInterrupt("killed")
        return real_step(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_module, "train_step", dying_step)
        mp.setattr(timing_module, "TIMING_WRITE_SECONDS", 0.0)  # write the attempt's time after every step
        facts.first = []
        with pytest.raises(KeyboardInterrupt):
            run_experiment(grid, exp, on_progress=facts.first.append)
    killed_info = json.loads((killed / "cell.json").read_text())
    facts.killed_status, facts.killed_seconds = killed_info["status"], killed_info["train_seconds"]
    killed_run = RunDir(killed / "run")
    facts.killed_resumable, facts.killed_finished = killed_run.is_resumable(), killed_run.is_finished()

    facts.started, facts.second = [], []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            train_module,
            "train",
            lambda config, **kw: (
                facts.started.append((Path(config.output).parent.name, kw)) or real_train(config, **kw)
            ),
        )
        run_experiment(grid, exp, on_progress=facts.second.append)
    return facts


def test_tiny_grid_end_to_end_killed_resumed_and_reported(tiny_experiment, tmp_path):
    t = tiny_experiment
    exp = t.exp
    seen = t.first
    assert [p.done for p in seen] == [1, 2] and seen[-1].total == 4 and seen[-1].eta_seconds > 0
    assert t.killed_status == "training"
    # the killed attempt's time counts: written by its steps, then once more as it stopped
    assert 0 < t.seconds_before_kill < t.killed_seconds
    assert t.killed_resumable and not t.killed_finished

    seen, started = t.second, t.started
    assert [p.skipped for p in seen] == [True, True, False, False]
    assert started[0][1]["resume"] is True and started[1][1].get("resume", False) is False
    assert len(started) == 2

    # The cell's own test evaluation (evaluate_run) equals what training logged for its last epoch.
    cell = exp / "cells/target/train4/adapter-infosam/seed-0"
    rows, summary = read_evaluation(cell / "eval" / "test")
    logged = RunDir(cell / "run").evaluations()[2]
    assert summary["n_images"] == len(rows) == 4
    assert summary["Dice"] == pytest.approx(logged["Dice"], abs=1e-6)
    assert (cell / "eval" / "retention-source" / "epoch-001" / "per_image.csv").is_file()
    assert len(read_evaluation(exp / "teacher" / "source" / "heldout")[0]) == 3

    markdown = write_report(exp, n_boot=200)
    report = exp / "report"
    assert markdown == report / "report.md"
    text = markdown.read_text()
    assert "4 of 4 cells finished" in text and "nan" not in text
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
    assert "](figures/curves-target-train4.png)" in text  # a folder report links its figures as before
    assert "retention-source" in (report / "retention.csv").read_text()

    # A changed arm config under the same name is refused, naming the cell (on a copy: the refusal rewrites the
    # folder's grid copy).
    changed = tmp_path / "exp"
    shutil.copytree(exp, changed)
    with pytest.raises(GridError, match="adapter-infosam/seed-0 .* another config"):
        run_experiment(_grid(t.tmp, extra_arm_set=["infosam.lam2=0.25"], name="changed.yaml"), changed)


def test_final_test_score_is_the_runs_last_evaluation_not_scored_twice(
    tiny_experiment, tmp_path, monkeypatch
):
    """A cell's final test score is taken from training's own evaluation after its last epoch (same weights,
    split, settings and cache use), and it is the file scoring the test split again would write."""
    exp = tmp_path / "exp"
    shutil.copytree(tiny_experiment.exp, exp)
    cell = exp / "cells/target/train4/adapter-infosam/seed-1"
    test = cell / "eval" / "test"
    real_score, scored = scoring_module.score, []

    def counting_score(grid, source, dataset, split, out, exp_dir, **kw):
        scored.append(Path(out).relative_to(cell).as_posix())
        return real_score(grid, source, dataset, split, out, exp_dir, **kw)

    monkeypatch.setattr(scoring_module, "score", counting_score)
    shutil.rmtree(test)
    run_experiment(tiny_experiment.grid, exp)
    assert scored == [] and (test / "summary.json").is_file()  # reused: nothing scored
    reused_rows, reused = read_evaluation(test)
    reused_csv = (test / "per_image.csv").read_bytes()
    logged = json.loads(RunDir(cell / "run").evaluation_file(2).read_text())
    assert reused_rows == logged["rows"] and reused["cached_features"] is False

    # The same cell scored again, the runner's way: the same bytes per image and the same summary.
    shutil.rmtree(test)
    monkeypatch.setattr(scoring_module, "reuse_final_evaluation", lambda *args, **kwargs: False)
    run_experiment(tiny_experiment.grid, exp)
    assert scored == ["eval/test"]
    assert (test / "per_image.csv").read_bytes() == reused_csv
    assert json.loads((test / "summary.json").read_text()) == reused
    assert list(json.loads((test / "summary.json").read_text())) == list(reused)  # same key order too


def _links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)]+)\)", text)


def test_report_to_a_markdown_file_with_assets_beside_it(tiny_experiment, monkeypatch, capsys):
    """`--out NAME.md`: the Markdown at that path, its tables, figures, per-image scores and split lists in NAME/,
    every link relative to the Markdown; a "How these numbers were made" section with the commands, the devices
    and the cells' wall time; unrelated files left alone."""
    t = tiny_experiment
    monkeypatch.chdir(t.tmp)
    markdown = t.tmp / "docs" / "results" / "tiny.md"
    assets = t.tmp / "docs" / "results" / "tiny"
    assets.mkdir(parents=True)
    (assets / "notes.txt").write_text("mine")
    assert run_cli(["report", "exp", "--out", "docs/results/tiny.md", "--n-boot", "100"]) == 0
    assert capsys.readouterr().out.strip() == "wrote docs/results/tiny.md"
    text = markdown.read_text()
    assert not (assets / "report.md").exists() and (assets / "notes.txt").read_text() == "mine"
    assert [p.name for p in t.tmp.glob("docs/results/.tmp-*")] == []  # atomic writes leave nothing behind

    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(figures) == [
        "tiny/figures/curves-target-train4.png",
        "tiny/figures/relation-target-train4.png",
    ]
    for link in _links(text):
        assert not Path(link).is_absolute() and (markdown.parent / link).exists(), link
    for name in ("scores.csv", "summary.csv", "paired.csv", "retention.csv", "per_image.csv"):
        assert f"](tiny/{name})" in text and (assets / name).is_file()

    # The split lists, byte for byte.
    splits = sorted(p.relative_to(t.exp / "splits") for p in (t.exp / "splits").rglob("*.csv"))
    assert (
        splits
        and sorted(p.relative_to(assets / "splits") for p in (assets / "splits").rglob("*.csv")) == splits
    )
    for rel in splits:
        assert (assets / "splits" / rel).read_bytes() == (t.exp / "splits" / rel).read_bytes()

    # Provenance: commands as run from here, devices and wall time from the cells' cell.json.
    assert "> A tiny grid for the tests.\n>\n> Fixed before the run.\n" in text
    # The prompts the cells were scored with (the grid's eval settings): the defaults, the release's noisy box.
    assert (
        "Test prompts (the grid's eval settings; every arm and the zero-shot teacher scored alike): noisy_box "
        "(release: both corners moved by one shared shift below min(5 px, half the shorter side) at 1024 px, "
        "scaled to the model input), prompt seed 42.\n" in text
    )
    section = text[text.index("## How these numbers were made") :]
    assert "`infosam experiment grid.yaml --out exp`" in section
    assert "`infosam report exp --out docs/results/tiny.md`" in section
    assert "Cells finished: 4 of 4." in section and "cpu (4 cells)" in section
    infos = [json.loads(p.read_text()) for p in (t.exp / "cells").rglob("cell.json")]
    assert len(infos) == 4
    # every training attempt is counted (the killed cell: killed, resumed) and its code named once per version
    from infosam.experiment.cellrun import code_version

    assert sorted(i["attempts"] for i in infos) == [1, 1, 1, 2]
    assert all(i["code"] == [code_version()] for i in infos)
    assert f"trained with (every training attempt, resumes included): {code_version()} (4 cells)." in section
    train = [i["train_seconds"] for i in infos]
    resumed = json.loads((t.exp / "cells/target/train4/adapter/seed-1/cell.json").read_text())[
        "train_seconds"
    ]
    assert resumed > t.killed_seconds  # both attempts
    assert "(their `cell.json`; a killed training attempt counts up to its last minute): training" in section
    # a cell resumed under older code (no `timing`, two attempts) lost its killed attempt's time: said so
    finished, total = collect(t.exp, load_grid(t.grid))
    for r in finished:
        if r.info["attempts"] == 2:
            del r.info["timing"]
            r.info["code"] *= 2  # and, as older code wrote it, one code entry per attempt, no attempt count
            del r.info["attempts"]
    old = "\n".join(provenance(t.exp, load_grid(t.grid), finished, total, markdown, assets))
    assert "last minute, except in 1 cell resumed under older code, which lost that time): training" in old
    scoring = [i["eval_seconds"] for i in infos]
    assert f"training {sum(train):.1f} s" in section and f"median {statistics.median(train):.1f} s" in section
    assert f"scoring after training {sum(scoring):.1f} s" in section
    assert f"median {statistics.median(scoring):.1f} s per cell." in section
    assert f"Python {platform.python_version()}, torch {torch.__version__}" in section

    # per_image.csv: every (cell, scored set, image) and the teacher's rows for each (dataset, part, set).
    rows = list(csv.DictReader(open(assets / "per_image.csv")))
    test_ids, heldout_ids = 4, 3
    assert len(rows) == 4 * (test_ids + heldout_ids) + (test_ids + heldout_ids)
    assert list(rows[0])[:6] == ["dataset", "part", "arm", "seed", "set", "id"]
    assert set(METRIC_NAMES) <= set(rows[0])
    cell = t.exp / "cells/target/train4/adapter/seed-1/eval/retention-source"
    mine = {
        r["id"]: r for r in rows if (r["arm"], r["seed"], r["set"]) == ("adapter", "1", "retention-source")
    }
    for r in read_evaluation(cell)[0]:
        assert float(mine[r["id"]]["Dice"]) == pytest.approx(r["Dice"], abs=1e-12)
    teacher = [r for r in rows if r["arm"] == "teacher (zero-shot)"]
    assert len(teacher) == test_ids + heldout_ids and {r["seed"] for r in teacher} == {""}
    truth = {r["id"]: r["IoU"] for r in read_evaluation(t.exp / "teacher" / "target" / "train4-test")[0]}
    assert {
        r["id"]: pytest.approx(float(r["IoU"]), abs=1e-12) for r in teacher if r["set"] == "test"
    } == truth

    # A Markdown file that is not a report is never replaced.
    (t.tmp / "notes.md").write_text("# My notes\n")
    with pytest.raises(FileExistsError, match="notes.md exists and is not an infosam report"):
        write_report(t.exp, t.tmp / "notes.md", n_boot=10)
    assert (t.tmp / "notes.md").read_text() == "# My notes\n"


def test_shards_keep_a_groups_arms_together():
    from infosam.experiment.grid import Cell
    from infosam.experiment.sharing import shard_cells

    todo = [
        Cell("d", f"fold{f}of3", arm, seed) for seed in (0, 1) for f in (1, 2, 3) for arm in ("a", "a-info")
    ]
    shares = [shard_cells(todo, k, 2) for k in (1, 2)]
    assert sorted(c.name for share in shares for c in share) == sorted(c.name for c in todo)  # a partition
    assert [(c.part, c.seed) for c in shares[0][::2]] == [("fold1of3", 0), ("fold3of3", 0), ("fold2of3", 1)]
    for share in shares:
        assert [c.arm for c in share] == ["a", "a-info"] * 3  # both arms of a group in one process


def test_report_of_a_partly_run_grid(tiny_experiment, tmp_path):
    """One cell unfinished (InfoSAM's seed 1): the score tables use whole seeds only (seed 0: both arms on the same
    images; the baseline's finished seed 1 is left out there), the header says so, a spread over one seed is '-',
    and the paired table still has its bootstrap interval over images (seed 0 only)."""
    exp = tmp_path / "exp"
    shutil.copytree(tiny_experiment.exp, exp, ignore=shutil.ignore_patterns("report"))
    info_path = exp / "cells/target/train4/adapter-infosam/seed-1/cell.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "status": "trained"}))
    markdown = write_report(exp, tmp_path / "partial.md", n_boot=200)
    text = markdown.read_text()
    assert (
        "3 of 4 cells finished (the score and retention tables and the curves use the 2 cells of whole seeds"
        in text
    )
    assert "Cells finished: 3 of 4." in text and "cpu (3 cells)" in text
    assert "nan" not in text.lower()
    row = next(
        line for line in text.splitlines() if line.startswith("| target | train4 | test | adapter-infosam |")
    )
    assert "| 1 |" in row and row.count("± -") == len(load_grid(tiny_experiment.grid).metrics)
    row = next(line for line in text.splitlines() if line.startswith("| target | train4 | test | adapter |"))
    assert "| 1 |" in row and row.count("± -") == len(load_grid(tiny_experiment.grid).metrics)
    scores = list(csv.DictReader(open(tmp_path / "partial" / "scores.csv")))
    assert {(r["arm"], r["seed"]) for r in scores if r["set"] == "test"} == {
        ("teacher (zero-shot)", ""),
        ("adapter", "0"),
        ("adapter-infosam", "0"),
    }

    paired = list(csv.DictReader(open(tmp_path / "partial" / "paired.csv")))
    dice = next(p for p in paired if p["set"] == "test" and p["metric"] == "Dice")
    assert dice["n_seeds"] == "1" and dice["seeds_agree"] in ("0", "1")
    a = read_evaluation(exp / "cells/target/train4/adapter-infosam/seed-0/eval/test")[0]
    b = {r["id"]: r["Dice"] for r in read_evaluation(exp / "cells/target/train4/adapter/seed-0/eval/test")[0]}
    diffs = [r["Dice"] - b[r["id"]] for r in a]
    assert float(dice["difference"]) == pytest.approx(sum(diffs) / len(diffs), abs=1e-9)
    low, high = float(dice["ci_low"]), float(dice["ci_high"])
    assert math.isfinite(low) and math.isfinite(high) and low <= float(dice["difference"]) <= high
    if len(set(diffs)) > 1:
        assert low < high  # resampling images gives an interval even with one seed
    line = next(x for x in text.splitlines() if "| test | adapter-infosam - adapter | Dice |" in x)
    assert "| 1/1 |" in line or "| 0/1 |" in line
    assert re.search(r"\| \[[+-]\d+\.\d+(e-\d+)?, [+-]\d+\.\d+(e-\d+)?\] \|", line)
    # one training run: the run-level interval does not exist, and the reading says what the images alone show
    assert "of 1 | - |" in line and dice["n_runs"] == "1"
    assert line.endswith("| no clear difference |") or "on these images only" in line

    assert "No whole seed" not in text
    # With seed 0's baseline unfinished too, no seed is whole (the score tables say so) and no pair is left.
    info_path = exp / "cells/target/train4/adapter/seed-0/cell.json"
    info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "status": "trained"}))
    none_whole = write_report(exp, tmp_path / "none.md", n_boot=10).read_text()
    assert none_whole.count("No whole seed has finished yet") == 2
    assert "no seed has finished whole yet" in none_whole and "use the 0 cells" not in none_whole
    assert "| dataset | regime | set | arm | seeds |" not in none_whole  # no table that is only a header
    assert "\n\n\n" not in none_whole
    assert "| test | adapter-infosam - adapter | Dice |" not in none_whole  # no finished pair left either
    info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "status": "done"}))

    rows = list(csv.DictReader(open(tmp_path / "partial" / "per_image.csv")))
    assert len(rows) == 3 * (4 + 3) + (4 + 3)
    assert not [r for r in rows if (r["arm"], r["seed"]) == ("adapter-infosam", "1")]


def test_prompt_sentence_names_each_datasets_prompt_kind(tmp_path):
    """The report says which prompts scored the cells, per dataset when their eval settings differ (a dataset's
    `set` overrides the grid's: here a tight box for the target, points for the retention set)."""
    path = _grid(tmp_path)
    data = json.loads(path.read_text().split("\n", 3)[3])
    data["set"] = [*data["set"], "eval.box_noise=none", "eval.seed=7"]
    data["datasets"]["source"]["set"] = ["eval.prompt=points", "eval.n_fg=1", "eval.n_bg=2"]
    path.write_text(json.dumps(data), encoding="utf-8")
    text = prompt_sentence(load_grid(path))
    assert text == (
        "Test prompts (the grid's eval settings; every arm and the zero-shot teacher scored alike): `target`: "
        "tight_box (the box around the ground-truth mask, no noise), prompt seed 7; `source`: points (1 foreground "
        "+ 2 background, uniform over the mask and the rest of the image), prompt seed 7."
    )


def test_provenance_names_thegrid_variables(tmp_path):
    """The variables a grid's paths read (the committed grid reads INFOSAM_DATA), never words of its comments."""
    committed = Path(__file__).resolve().parents[1] / "experiments" / "litemedsam" / "grid.yaml"
    assert grid_variables(committed) == ["INFOSAM_DATA"]
    path = tmp_path / "g.yaml"
    path.write_text("# $NOT_ME\ndatasets: {a: {path: $A/x}, b: {path: '${B}/y'}, c: {path: '${A}/z'}}\n")
    assert grid_variables(path) == ["A", "B"]
    assert grid_variables(tmp_path / "gone.yaml") == []


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
    # one dataset, one part, two seeds, two arms: shard 1 runs seed 0's two arms, shard 2 seed 1's
    assert [n.split("/")[-1] for n in names] == ["seed-0", "seed-0", "seed-1", "seed-1"]
    run_experiment(grid, exp, on_progress=seen.append, shard=(2, 2))
    assert [p.cell.name for p in seen] == names[2:] and seen[-1].total == 2
    done = {str(p.parent.relative_to(exp / "cells")) for p in exp.glob("cells/**/cell.json")}
    assert done == set(names[2:])  # only shard 2's cells were touched
    seen.clear()
    run_experiment(grid, exp, on_progress=seen.append, shard=(1, 2))
    assert [p.cell.name for p in seen] == names[:2] and not any(p.skipped for p in seen)
    seen.clear()
    run_experiment(grid, exp, on_progress=seen.append)  # the whole grid: nothing left to do
    assert [p.skipped for p in seen] == [True] * 4
    for bad in ("3/2", "0/2", "x"):
        assert run_cli(["experiment", str(grid), "--out", str(exp), "--shard", bad]) == 2
        assert "--shard must be K/N" in capsys.readouterr().err


def test_relation_figure_without_dataset_images(tiny_experiment, tmp_path):
    """--no-images: the relation figure holds the two computed maps per image and no image/mask column."""
    from PIL import Image

    exp = str(tiny_experiment.exp)
    assert run_cli(["report", exp, "--out", str(tmp_path / "full.md"), "--n-boot", "10"]) == 0
    assert run_cli(["report", exp, "--out", str(tmp_path / "bare.md"), "--n-boot", "10", "--no-images"]) == 0
    with_images = Image.open(tmp_path / "full" / "figures" / "relation-target-train4.png").size
    bare = Image.open(tmp_path / "bare" / "figures" / "relation-target-train4.png").size
    assert bare[1] == with_images[1] and bare[0] == pytest.approx(with_images[0] * 2 / 3, abs=2)


def test_results_record_reports_identically_without_the_experiment_folder(
    tiny_experiment, tmp_path, monkeypatch
):
    """A grid with a results folder: its record (made here with --record-only from the finished experiment
    folder) gives the same tables from a fresh clone that has no experiment folder, and `infosam experiment` on
    that clone runs nothing; a record of another config under the same cell name is refused."""
    t = tiny_experiment
    repo = tmp_path / "repo"
    shutil.copytree(t.tmp / "data", repo / "data")
    text = t.grid.read_text(encoding="utf-8")
    grid = repo / "grid.yaml"
    data = json.loads(text.split("\n", 3)[3])
    data["results"] = "results/tiny"
    grid.write_text("# A tiny grid for the tests.\n" + json.dumps(data), encoding="utf-8")
    exp = tmp_path / "exp"
    shutil.copytree(t.exp, exp)
    run_experiment(grid, exp, record_only=True)
    record = repo / "results" / "tiny"
    assert len(list(record.glob("cells/*/*/*/*/cell.json"))) == 4
    logs = sorted(record.glob("cells/*/*/*/*/train-log.csv"))
    assert len(logs) == 4  # every cell keeps its training log: the run's metrics.csv, as written
    for path in logs:
        assert (
            path.read_bytes() == (exp / path.relative_to(record).parent / "run" / "metrics.csv").read_bytes()
        )
    # A record made before records kept the log gets it from the experiment folder (--record-only), and only then.
    older = logs[1]
    older.unlink()
    run_experiment(grid, exp, record_only=True)
    assert older.read_bytes() == (exp / older.relative_to(record).parent / "run" / "metrics.csv").read_bytes()
    assert not list(record.glob("**/*.safetensors")) and not list(record.glob("**/run"))
    for path in record.glob("**/*.json"):  # no machine paths in a committed record
        values = json.loads(path.read_text())
        flat = values.values() if isinstance(values, dict) else []
        strings = [v for v in flat if isinstance(v, str)]
        assert not any(v.startswith("/") for v in strings), (path, strings)

    monkeypatch.chdir(repo)
    from_exp = write_report(exp, tmp_path / "from-exp", n_boot=200)
    clone = tmp_path / "clone"
    shutil.copytree(
        repo, clone, ignore=shutil.ignore_patterns("data")
    )  # a fresh clone: no data, no experiment
    monkeypatch.chdir(clone)
    from_record = write_report(clone / "results" / "tiny", clone / "docs" / "tiny.md", n_boot=200)
    for name in (
        "scores.csv",
        "summary.csv",
        "paired.csv",
        "retention.csv",
        "per_image.csv",
        "loss_terms.csv",
    ):
        assert (from_record.parent / "tiny" / name).read_text() == (from_exp.parent / name).read_text(), name
    page = from_record.read_text()
    assert "4 of 4 cells finished" in page and "results record `results/tiny`" in page
    section = page.split("## InfoSAM's loss terms during training", 1)[1].split("\n## ", 1)[0]
    assert re.search(
        r"\| target \| adapter-infosam \| 2 \| 1 → 2 \| [+-]\d\.\d{3} → [+-]\d\.\d{3} \|", section
    )
    assert re.search(
        r"\| target \| adapter \| 2 \| 1 → 2 \| [+-]\d\.\d{3} → [+-]\d\.\d{3} \| - \| - \| - \|", section
    )
    assert str(tmp_path) not in page  # repository-relative paths only
    # the wall-time line (with what it says of the killed and resumed cell's time) is the same from the record
    timing = [re.findall(r"^- Wall time of .*$", p.read_text(), re.M) for p in (from_record, from_exp)]
    assert timing[0] == timing[1] and "counts up to its last minute)" in timing[0][0]

    shutil.copytree(repo / "data", clone / "data")  # the new machine has the data, not the experiment folder
    real_train = train_module.train
    monkeypatch.setattr(
        train_module, "train", lambda *a, **k: pytest.fail("a recorded cell was trained again")
    )
    seen = []
    run_experiment(clone / "grid.yaml", tmp_path / "new-exp", on_progress=seen.append)
    assert [p.skipped for p in seen] == [True] * 4
    monkeypatch.setattr(train_module, "train", real_train)

    changed = json.loads((clone / "grid.yaml").read_text().split("\n", 1)[1])
    changed["arms"]["adapter-infosam"]["set"].append("infosam.lam2=0.25")
    (clone / "grid.yaml").write_text(json.dumps(changed), encoding="utf-8")
    with pytest.raises(GridError, match=r"record .*adapter-infosam/seed-0.*another config"):
        run_experiment(clone / "grid.yaml", tmp_path / "newer-exp")


def test_pairs_order_and_dataset_seeds(tmp_path):
    path = _grid(tmp_path)
    data = json.loads(path.read_text().split("\n", 3)[3])
    data["arms"]["lora"] = {"set": ["peft.methods=lora+decoder", "infosam.enabled=false"]}
    data["arms"]["lora-infosam"] = {"set": ["peft.methods=lora+decoder"], "baseline": "lora"}
    data["order"] = "pairs"
    data["datasets"]["target"]["seeds"] = [0]
    data["datasets"]["other"] = {"path": "data/target", "folds": 2, "split_seed": 3}
    path.write_text(json.dumps(data), encoding="utf-8")
    grid = load_grid(path)
    names = [c.name for c in cells(grid)]
    assert names == [
        "target/train4/adapter/seed-0",
        "target/train4/adapter-infosam/seed-0",
        "other/fold1of2/adapter/seed-0",
        "other/fold1of2/adapter-infosam/seed-0",
        "other/fold2of2/adapter/seed-0",
        "other/fold2of2/adapter-infosam/seed-0",
        "target/train4/lora/seed-0",
        "target/train4/lora-infosam/seed-0",
        "other/fold1of2/lora/seed-0",
        "other/fold1of2/lora-infosam/seed-0",
        "other/fold2of2/lora/seed-0",
        "other/fold2of2/lora-infosam/seed-0",
        "other/fold1of2/adapter/seed-1",  # target runs seed 0 only
        "other/fold1of2/adapter-infosam/seed-1",
        "other/fold2of2/adapter/seed-1",
        "other/fold2of2/adapter-infosam/seed-1",
        "other/fold1of2/lora/seed-1",
        "other/fold1of2/lora-infosam/seed-1",
        "other/fold2of2/lora/seed-1",
        "other/fold2of2/lora-infosam/seed-1",
    ]
    from infosam.experiment.sharing import shard_cells

    shares = [shard_cells(cells(grid), k, 2, grid=grid) for k in (1, 2)]
    assert sorted(c.name for s in shares for c in s) == sorted(names)
    for share in shares:  # a pair's two arms of one part stay in one process
        assert all(share[i].arm + "-infosam" == share[i + 1].arm for i in range(0, len(share), 2))
    data["datasets"]["target"]["seeds"] = [5]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(GridError, match=r"datasets\.target\.seeds must be .* of the grid's seeds \[0, 1\]"):
        load_grid(path)
    data["datasets"]["target"]["seeds"] = [0]
    data["order"] = "arms"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(GridError, match=r"order must be one of \['seeds', 'pairs'\]"):
        load_grid(path)


def test_processes_on_one_folder_share_the_cells_as_they_go(tmp_path, monkeypatch, capsys, caplog):
    """A second process (here: a nested run, which holds separate flocks) arriving while the first trains cell 1
    leaves that cell to it and runs the others; the first then finds them finished. Every cell trains once."""
    grid = _grid(tmp_path)
    exp = tmp_path / "exp"
    names = [c.name for c in cells(load_grid(grid))]
    real_train, trained, first = train_module.train, [], []

    def train(config, **kw):
        trained.append(str(Path(config.output).parent.relative_to(exp / "cells")))
        if len(trained) == 1:  # the second process starts while the first is in cell 1
            assert run_cli(["experiment", str(grid), "--out", str(exp)]) == 0
        return real_train(config, **kw)

    monkeypatch.setattr(train_module, "train", train)
    with caplog.at_level("INFO", logger="infosam.experiment"):
        run_experiment(grid, exp, on_progress=first.append)
    assert sorted(trained) == sorted(names) and trained[0] == names[0]  # each cell trained exactly once
    assert [(p.skipped, p.busy) for p in first] == [(False, False)] + [(True, False)] * 3
    err = capsys.readouterr().err
    assert f"[1/4] {names[0]}: another process is running it (left to that process)" in err
    assert f"{names[0]}: pid {os.getpid()} on host" in caplog.text  # the holder is named
    assert all(f"{name}: done in" in err for name in names[1:])
    for name in names:
        assert json.loads((exp / "cells" / name / "cell.json").read_text())["status"] == "done"
    first.clear()
    run_experiment(grid, exp, on_progress=first.append)  # nothing held, nothing left
    assert [(p.skipped, p.busy) for p in first] == [(True, False)] * 4 and len(trained) == 4


def test_shards_do_not_score_the_same_teacher_split_twice(tmp_path, monkeypatch):
    """A teacher split another process is scoring (its folder locked) is skipped, not scored a second time."""
    from infosam.experiment import runner, scoring
    from infosam.lock import RunLock

    grid = load_grid(_grid(tmp_path))
    exp = tmp_path / "exp"
    runner._write_splits(grid, ExperimentDir(exp))
    scored = []
    monkeypatch.setattr(
        scoring, "score", lambda grid, model, dataset, split, out, *a, **k: scored.append(split)
    )
    busy = ExperimentDir(exp).teacher("source", "heldout")
    busy.mkdir(parents=True)
    with RunLock(busy):  # another shard holds it
        scoring.teacher_evaluations(grid, cells(grid), exp)
    assert scored == ["train4-test"]
    scoring.teacher_evaluations(grid, cells(grid), exp)  # free again: now scored (the other had died)
    assert scored == ["train4-test", "train4-test", "heldout"]  # the fake scorer writes no summary


def test_arm_phases_datasets_and_seeds(tmp_path):
    """An arm restricted to some targets and seeds has cells only there; a later phase runs after every cell of
    the earlier ones (an arm added last never delays the registered ones); bad values name the key."""
    path = _grid(tmp_path)
    data = json.loads(path.read_text().split("\n", 3)[3])
    data["datasets"]["other"] = {"path": "data/target", "folds": 2, "split_seed": 3}
    data["arms"]["adapter-vid"] = {
        "set": ["distill.method=vid"],
        "baseline": "adapter",
        "datasets": ["other"],
        "seeds": [0],
        "phase": 2,
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    names = [c.name for c in cells(load_grid(path))]
    assert names[-2:] == ["other/fold1of2/adapter-vid/seed-0", "other/fold2of2/adapter-vid/seed-0"]
    assert not any("adapter-vid" in n for n in names[:-2])
    assert len(names) == 2 * 3 * 2 + 2  # (target + two folds) x two arms x two seeds, then the two VID cells
    for key, value, message in [
        ("phase", 0, r"arms\.adapter-vid\.phase must be an integer >= 1"),
        ("seeds", [7], r"arms\.adapter-vid\.seeds must be a non-empty list of the grid's seeds"),
        ("datasets", ["nope"], r"arms\.adapter-vid\.datasets must name target datasets"),
    ]:
        bad = json.loads(json.dumps(data))
        bad["arms"]["adapter-vid"][key] = value
        path.write_text(json.dumps(bad), encoding="utf-8")
        with pytest.raises(GridError, match=message):
            load_grid(path)


def test_loss_terms_table_by_hand():
    """Each term: the mean over a run's first (last) logged epoch, then over the arm's runs; 'I fell' counts runs
    whose L_d rose; a plain arm has no L_r or L_d ('-', NaN); no InfoSAM arm at all: no table."""
    from infosam.experiment.collect import CellResult
    from infosam.experiment.grid import Cell
    from infosam.experiment.tables import loss_terms_table

    def run(arm, seed, rows):
        cell = Cell(dataset="d", part="p", arm=arm, seed=seed)
        return CellResult(
            cell, train_log=[dict(zip(("epoch", "seg", "relation", "distill"), r, strict=True)) for r in rows]
        )

    a = run("x-infosam", 0, [(1, 1.0, -0.5, -1.0), (1, 0.8, -0.7, -0.5), (2, 0.4, -1.0, -0.25)])
    b = run("x-infosam", 1, [(1, 0.6, -0.2, -0.5), (2, 0.2, -0.4, -0.75), (2, 0.4, -0.6, -0.75)])
    plain = CellResult(
        Cell(dataset="d", part="p", arm="x", seed=0),
        train_log=[{"epoch": 1, "seg": 1.0}, {"epoch": 2, "seg": 0.5}],
    )
    unlogged = CellResult(Cell(dataset="d", part="p", arm="x", seed=1))  # a record without its training log
    table = loss_terms_table([a, b, plain, unlogged])
    by_arm = {r["arm"]: r for r in table}
    infosam = by_arm["x-infosam"]
    assert infosam["n_runs"] == 2 and (infosam["first_epoch"], infosam["last_epoch"]) == (1, 2)
    assert infosam["seg_first"] == pytest.approx((0.9 + 0.6) / 2) and infosam["seg_last"] == pytest.approx(
        0.35
    )
    assert infosam["relation_first"] == pytest.approx((-0.6 - 0.2) / 2)
    assert infosam["relation_last"] == pytest.approx((-1.0 - 0.5) / 2)
    assert infosam["distill_first"] == pytest.approx((-0.75 - 0.5) / 2)
    assert infosam["distill_last"] == pytest.approx((-0.25 - 0.75) / 2)
    assert (infosam["runs_mi_fell"], infosam["runs_with_distill"]) == (1, 2)  # run a's I fell, run b's rose
    assert by_arm["x"]["n_runs"] == 1 and by_arm["x"]["seg_last"] == pytest.approx(0.5)
    assert math.isnan(by_arm["x"]["distill_first"]) and by_arm["x"]["runs_with_distill"] == 0
    assert loss_terms_table([plain, unlogged]) == []


@pytest.mark.parametrize(("metric", "scale", "label"), [("Dice", 100.0, "Dice (%)"), ("MAE", 1.0, "MAE")])
def test_curves_are_drawn_in_the_tables_units(tmp_path, monkeypatch, metric, scale, label):
    """The per-epoch curves show what the tables show: percent (MAE stays a fraction), the teacher's line too; a
    seed's parts are weighted by their images, then seeds averaged."""
    import infosam.experiment.figures as figures_module
    from infosam.experiment.collect import CellResult
    from infosam.experiment.grid import Cell

    drawn = []
    monkeypatch.setattr(figures_module, "_save", lambda fig, path: drawn.append(fig) or path)

    def result(arm, seed, part, curve):
        return CellResult(
            Cell(dataset="d", part=part, arm=arm, seed=seed),
            curves={"test": {e: ({metric: v}, n) for e, (v, n) in curve.items()}},
        )

    results = [  # seed 0: two parts of 3 and 1 images; seed 1: one part
        result("x", 0, "fold1of2", {1: (0.50, 3), 2: (0.60, 3)}),
        result("x", 0, "fold2of2", {1: (0.90, 1), 2: (0.20, 1)}),
        result("x", 1, "fold1of2", {1: (0.40, 2), 2: (0.70, 2)}),
    ]
    grid = SimpleNamespace(metrics=[metric], arms={"x": SimpleNamespace(baseline=None)})
    teacher = [{"dataset": "d", "regime": "2fold", "set": "test", metric: 0.25}]
    written = figures_module.curve_figures(results, teacher, grid, tmp_path)
    assert [caption for caption, _ in written] == [f"{metric} per epoch: d 2fold"]
    (ax,) = drawn[0].axes
    arm_line, teacher_line = ax.get_lines()
    seed0 = [(0.50 * 3 + 0.90) / 4, (0.60 * 3 + 0.20) / 4]
    expected = [scale * (s0 + s1) / 2 for s0, s1 in zip(seed0, [0.40, 0.70], strict=True)]
    assert list(arm_line.get_xdata()) == [1, 2]
    assert list(arm_line.get_ydata()) == pytest.approx(expected)
    assert list(teacher_line.get_ydata()) == pytest.approx([scale * 0.25] * 2)
    assert ax.get_ylabel() == label


def _committed_grids() -> list[Path]:
    """Every committed grid file whose results record is committed too."""
    found = []
    for path in sorted((REPO / "experiments").glob("*/*.yaml")):
        text = path.read_text(encoding="utf-8")
        match = re.search(r"^results:\s*(\S+)", text, re.M)
        if match and (path.parent / match.group(1) / "cells").is_dir():
            found.append(path)
    return found


COMMITTED_GRIDS = _committed_grids()


def test_the_committed_records_are_found():
    names = {p.relative_to(REPO / "experiments").as_posix() for p in COMMITTED_GRIDS}
    assert names >= {"litemedsam/grid_cpu.yaml", "litemedsam/grid_encoder.yaml", "mobilesam/grid.yaml"}


@pytest.mark.parametrize(
    "grid_file", COMMITTED_GRIDS, ids=lambda p: p.relative_to(REPO / "experiments").as_posix()
)
def test_committed_records_keep_their_config_hashes(grid_file, tmp_path, monkeypatch):
    """Every recorded cell of every committed grid hashes as recorded with today's code, so the runner counts it
    finished and trains nothing: a changed default (the release box rule) moves no hash (HASH_PINNED_DEFAULTS), nor
    does a change of how the code is laid out, so the records stay valid. (A grid's record may be partial: this
    holds for the cells it has.)"""
    from infosam.experiment.hashing import config_hash
    from infosam.experiment.plan import cell_config

    monkeypatch.setenv("INFOSAM_DATA", str(tmp_path / "data"))  # never read: only the configs are built
    monkeypatch.setenv("INFOSAM_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setattr(
        train_module, "train", lambda *a, **k: pytest.fail("a recorded cell would be trained")
    )
    grid = load_grid(grid_file)
    checked = 0
    for cell in cells(grid):
        record = (
            grid.results / "cells" / cell.dataset / cell.part / cell.arm / f"seed-{cell.seed}" / "cell.json"
        )
        if not record.is_file():
            continue
        config = cell_config(grid, cell, tmp_path / "splits", tmp_path / "cells" / "run")
        assert config_hash(config, tmp_path) == json.loads(record.read_text())["config_hash"], cell.name
        assert sharing.run_cell(grid, cell, tmp_path / "exp", False) == cellrun.FINISHED, cell.name
        checked += 1
    assert checked == len(list((grid.results / "cells").rglob("cell.json"))) >= 1  # every record was checked
    assert not (tmp_path / "exp" / "cells").exists()  # nothing was started for a recorded cell


def _committed_pages() -> list[tuple[str, str]]:
    """(record, page) of every committed report page, read from the reproduce line each page ends with."""
    found = set()
    for page in sorted((REPO / "docs" / "results").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        found |= set(re.findall(r"infosam report (experiments/\S+) --out (docs/results/\S+\.md)`", text))
    return sorted(found)


@pytest.mark.slow
@pytest.mark.parametrize("record, page", _committed_pages(), ids=lambda x: x)
def test_committed_records_report_as_committed(record, page, tmp_path, monkeypatch):
    """``infosam report`` on each committed record, written where its page is committed, gives that page and its
    tables byte for byte (the page is the report's output: a record and its page are committed together), so the
    records read the same with today's code."""
    assert page in {f"docs/results/{p.name}" for p in (REPO / "docs" / "results").glob("*.md")}
    clone = tmp_path / "clone"
    shutil.copytree(REPO / "experiments", clone / "experiments")
    monkeypatch.chdir(clone)
    assert run_cli(["report", record, "--out", page]) == 0
    written = sorted(
        p.relative_to(clone).as_posix()
        for p in (clone / "docs" / "results").rglob("*")
        if p.is_file() and p.suffix in (".md", ".csv")
    )
    assert page in written and len(written) > 1
    for name in written:
        assert (clone / name).read_bytes() == (REPO / name).read_bytes(), name


def test_every_committed_record_has_its_page():
    records = {p.relative_to(REPO).as_posix() for g in COMMITTED_GRIDS for p in [_results_of(g)]}
    assert records <= {record for record, _ in _committed_pages()}


def _results_of(grid_file: Path) -> Path:
    match = re.search(r"^results:\s*(\S+)", grid_file.read_text(encoding="utf-8"), re.M)
    return (grid_file.parent / match.group(1)).resolve()


# --------------------------------------------------------------------------------------------- records check themselves


def _recorded(tiny_experiment, tmp_path) -> tuple[Path, Path, Path]:
    """(grid, experiment folder, record) of the tiny grid with a results folder, recorded with --record-only."""
    t = tiny_experiment
    repo = tmp_path / "repo"
    shutil.copytree(t.tmp / "data", repo / "data")
    data = json.loads(t.grid.read_text(encoding="utf-8").split("\n", 3)[3])
    data["results"] = "results/tiny"
    grid = repo / "grid.yaml"
    grid.write_text(json.dumps(data), encoding="utf-8")
    exp = tmp_path / "exp"
    shutil.copytree(t.exp, exp)
    run_experiment(grid, exp, record_only=True)
    return grid, exp, repo / "results" / "tiny"


def _report_refused(record: Path, out: Path, capsys, message: str) -> None:
    """`infosam report` refuses the record in one line matching ``message`` and writes nothing."""
    assert run_cli(["report", str(record), "--out", str(out / "page.md"), "--n-boot", "10"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not out.exists()  # a refused report writes nothing, not even its figures folder


def test_a_record_with_a_changed_byte_is_refused_and_can_be_rerecorded(tiny_experiment, tmp_path, capsys):
    """Every recorded cell and teacher evaluation carries SHA256SUMS, written last; one changed byte (a value that
    still parses) makes `infosam report` and `infosam experiment` refuse in one line naming the file; a refused
    report writes nothing; --record-only records the cell again from the experiment folder."""
    from infosam.experiment.layout import CHECKSUM_FILE
    from infosam.experiment.records import write_checksums

    grid, exp, record = _recorded(tiny_experiment, tmp_path)
    cell = record / "cells/target/train4/adapter/seed-0"
    sums = (cell / CHECKSUM_FILE).read_text()
    assert "eval/test/per_image.csv" in sums and "cell.json" in sums and CHECKSUM_FILE not in sums
    assert len(list(record.glob(f"teacher/*/*/{CHECKSUM_FILE}"))) == 2
    assert run_cli(["report", str(record), "--out", str(tmp_path / "ok" / "page.md"), "--n-boot", "10"]) == 0
    capsys.readouterr()

    target = cell / "eval/test/per_image.csv"
    good = target.read_bytes()
    i = len(good) - 3  # a late digit of the last Dice: the file still parses and its mean still agrees
    changed = good[:i] + (b"1" if good[i : i + 1] != b"1" else b"2") + good[i + 1 :]
    target.write_bytes(changed)
    _report_refused(
        record, tmp_path / "bad", capsys, rf"{re.escape(str(target))}: changed since it was recorded"
    )
    assert run_cli(["experiment", str(grid), "--out", str(tmp_path / "other-exp")]) != 0
    assert f"{target}: changed since it was recorded" in capsys.readouterr().err

    extra = cell / "eval/retention-source/epoch-003/summary.json"  # an added file would change a curve
    target.write_bytes(good)
    extra.parent.mkdir()
    extra.write_text((cell / "eval/retention-source/summary.json").read_text())
    _report_refused(record, tmp_path / "bad", capsys, rf"{re.escape(str(extra))}: not in .*{CHECKSUM_FILE}")
    shutil.rmtree(extra.parent)

    # A record whose writer stopped between cell.json and its checksum list (format 2) is refused too.
    (cell / CHECKSUM_FILE).unlink()
    _report_refused(
        record, tmp_path / "bad", capsys, rf"cell\.json: a record of format 2 .* without its {CHECKSUM_FILE}"
    )
    write_checksums(cell)

    # Changed on purpose: --record-only records the cell again from the experiment folder.
    target.write_bytes(changed)
    run_experiment(grid, exp, record_only=True)
    assert target.read_bytes() == good == (exp / target.relative_to(record)).read_bytes()
    assert (cell / CHECKSUM_FILE).read_text() == sums
    assert (
        run_cli(["report", str(record), "--out", str(tmp_path / "again" / "page.md"), "--n-boot", "10"]) == 0
    )
    assert (tmp_path / "again" / "page.md").read_text().split("## Files")[0] == (
        tmp_path / "ok" / "page.md"
    ).read_text().split("## Files")[0]


def test_legacy_records_report_unverified_parse_strictly_and_get_their_checksums(
    tiny_experiment, tmp_path, capsys, caplog
):
    """A record written before checksums (record_version 1, no SHA256SUMS) still reports; its per-image rows are
    read strictly: a file cut short (last value "0."), cut mid-row, or short of a row is refused naming the file
    and the fault; --record-only adds the checksum list, from the record alone (no experiment folder)."""
    from infosam.experiment.layout import CHECKSUM_FILE

    grid, exp, record = _recorded(tiny_experiment, tmp_path)
    for sums in record.glob(f"**/{CHECKSUM_FILE}"):
        sums.unlink()
    for info_path in record.glob("cells/*/*/*/*/cell.json"):
        info = json.loads(info_path.read_text())
        info["record_version"] = 1
        info_path.write_text(json.dumps(info, indent=2) + "\n")
    assert (
        run_cli(["report", str(record), "--out", str(tmp_path / "legacy" / "page.md"), "--n-boot", "10"]) == 0
    )
    assert "6 record(s) of" in caplog.text and "have no checksum list" in caplog.text
    caplog.clear()
    capsys.readouterr()

    target = record / "cells/target/train4/adapter-infosam/seed-1/eval/test/per_image.csv"
    good = target.read_text()
    last = good.rstrip("\n").rsplit(",", 1)
    lines = good.split("\n")  # header, four rows, "" (the final newline)
    for text, message in [
        (last[0] + ",0.", "its last line has no newline"),  # the last Dice became "0."
        ("\n".join(lines[:2] + [lines[2][:9]] + lines[3:]), "line 3 has 1 fields, the header 8"),
        (good[: good.rstrip("\n").rindex("\n") + 1], "3 rows, its summary summary.json counts 4 images"),
        (last[0] + ",nan\n", "Dice = 'nan' is not a finite number"),
    ]:
        target.write_text(text)
        _report_refused(
            record, tmp_path / "bad", capsys, rf"{re.escape(str(target))}: .*{re.escape(message)}"
        )
    target.write_text(good)

    # --record-only on a fresh machine (no experiment folder): every legacy record gets its list, verified after
    run_experiment(grid, tmp_path / "fresh-exp", record_only=True)
    assert len(list(record.glob(f"cells/*/*/*/*/{CHECKSUM_FILE}"))) == 4
    assert len(list(record.glob(f"teacher/*/*/{CHECKSUM_FILE}"))) == 2
    assert (
        run_cli(["report", str(record), "--out", str(tmp_path / "sealed" / "page.md"), "--n-boot", "10"]) == 0
    )
    assert "no checksum list" not in caplog.text
    capsys.readouterr()
    target.write_text(last[0] + ",0.5\n")
    _report_refused(
        record, tmp_path / "bad", capsys, rf"{re.escape(str(target))}: changed since it was recorded"
    )


# --------------------------------------------------------------------------------------------- splits of a target


def _split_grid(tmp_path: Path, dataset: dict, *, batch: int = 2) -> Path:
    if not (tmp_path / "data" / "d").exists():
        write_synthetic_dataset(tmp_path / "data" / "d", 8, domain="target")
    path = tmp_path / "g.yaml"
    grid = {
        "set": [*TINY, f"train.batch_size={batch}"],
        "seeds": [0],
        "datasets": {"d": {"path": "data/d", **dataset}},
        "arms": {"adapter": {"set": ["peft.methods=adapter+decoder", "infosam.enabled=false"]}},
    }
    path.write_text(json.dumps(grid), encoding="utf-8")
    return path


def test_a_grid_without_train_trains_on_every_image_not_in_test(tmp_path, monkeypatch):
    """`test: 3` and no `train:`: one part, `trainall`, whose training set is the 5 images not in the test part
    (not one image); a training set smaller than one batch is refused before anything trains or is scored."""
    from infosam.experiment.plan import cell_config

    grid = load_grid(_split_grid(tmp_path, {"test": 3}))
    assert [c.name for c in cells(grid)] == ["d/trainall/adapter/seed-0"]
    splits = make_splits(grid.datasets["d"])
    assert len(splits["trainall-train"]) == 5 and splits["trainall-test"] == splits["heldout"]
    assert not set(splits["trainall-train"]) & set(splits["heldout"])
    everything = {
        p for p in make_splits(load_grid(_split_grid(tmp_path, {"folds": 2})).datasets["d"])["heldout"]
    }
    assert set(splits["trainall-train"]) | set(splits["heldout"]) == everything

    trained = []
    monkeypatch.setattr(train_module, "train", lambda config, **kw: trained.append(config))
    monkeypatch.setattr(runner_module, "teacher_evaluations", lambda *a, **k: None)
    monkeypatch.setattr(sharing_module, "run_locked_cell", lambda *a, **k: cellrun_module.RAN)
    exp = tmp_path / "exp"
    run_experiment(_split_grid(tmp_path, {"test": 3}), exp)
    config = cell_config(grid, cells(grid)[0], exp / "splits", exp / "run")
    assert len(Path(config.data.train_split).read_text().splitlines()) == 1 + 5  # header + every other image

    monkeypatch.setattr(runner_module, "teacher_evaluations", lambda *a, **k: pytest.fail("scored"))
    with pytest.raises(
        GridError, match=r"datasets\.d: part trainall trains on 5 image\(s\) .*fewer than one batch"
    ):
        run_experiment(_split_grid(tmp_path, {"test": 3}, batch=6), tmp_path / "exp6")
    assert trained == []


def test_split_files_give_a_target_a_fixed_split(tmp_path):
    """`split_files: {train, test}`: one part, `fixed`, whose lists are those files (checked like `data check
    --split`: a missing image, an image in both lists, a missing file are refused naming the key)."""
    write_synthetic_dataset(tmp_path / "data" / "d", 8, domain="target")
    lists = tmp_path / "lists"
    lists.mkdir()
    names = [f"target_{i:05d}" for i in range(8)]
    (lists / "train.txt").write_text("\n".join(names[:5]) + "\n")
    (lists / "test.txt").write_text("\n".join(names[5:]) + "\n")
    files = {"train": "lists/train.txt", "test": "lists/test.txt"}
    grid = load_grid(_split_grid(tmp_path, {"split_files": files}))
    assert [c.name for c in cells(grid)] == ["d/fixed/adapter/seed-0"]
    splits = make_splits(grid.datasets["d"])
    assert [Path(i).stem for i, _ in splits["fixed-train"]] == names[:5]
    assert [Path(i).stem for i, _ in splits["fixed-test"]] == names[5:] and splits["heldout"] == splits[
        "fixed-test"
    ]

    (lists / "test.txt").write_text("\n".join(names[4:]) + "\n")
    with pytest.raises(GridError, match=r"split_files: 1 image\(s\) in both the train and the test list"):
        make_splits(load_grid(_split_grid(tmp_path, {"split_files": files})).datasets["d"])
    (lists / "test.txt").write_text("\n".join([*names[5:], "target_00099"]) + "\n")
    with pytest.raises(GridError, match=r"split_files\.test: .*test\.txt"):
        make_splits(load_grid(_split_grid(tmp_path, {"split_files": files})).datasets["d"])
    for bad, message in [
        ({"split_files": {"train": "lists/train.txt"}}, "split_files must map train and test"),
        ({"split_files": files, "test": 3}, "split_files is a target's whole split: without test"),
    ]:
        with pytest.raises(GridError, match=message):
            load_grid(_split_grid(tmp_path, bad))


def test_eta_counts_only_this_processs_queue(tmp_path, monkeypatch):
    """The cells left in this process's queue: not finished, not held by another living process (its lock file
    names it); a lock file left by an exited process is free."""
    import socket

    from infosam.experiment.sharing import queue_left

    grid = load_grid(_grid(tmp_path))
    layout = ExperimentDir(tmp_path / "exp")
    todo = cells(grid)
    assert queue_left(grid, todo, layout) == 4
    done, held, dead = (layout.cell(c) for c in todo[:3])
    for folder in (done, held, dead):
        folder.mkdir(parents=True)
    (done / "cell.json").write_text(json.dumps({"status": "done"}))
    for name in ("test", "retention-source"):
        (done / "eval" / name).mkdir(parents=True)
        (done / "eval" / name / "summary.json").write_text("{}")
    host = socket.gethostname()
    (held / ".lock").write_text(f"pid {os.getppid()}\nhost {host}\nsince now\n")
    (dead / ".lock").write_text(f"pid 999999999\nhost {host}\nsince now\n")
    assert queue_left(grid, todo, layout) == 2  # the dead holder's cell and the untouched one


def test_relation_statistics_table_by_hand():
    """With the relation's statistics logged, the loss-terms table adds them (first and last epoch, averaged over
    runs), counts the runs whose I(r_t; r_s) rose and whose final S(r_t) is below the pre-registered 0.5 bit, and
    the report prints one row per arm; without them (the LiteMedSAM grids' logs) nothing is added."""
    from infosam.experiment.collect import CellResult
    from infosam.experiment.grid import Cell
    from infosam.experiment.page import _relation_section
    from infosam.experiment.tables import RELATION_TERMS, loss_terms_table

    keys = ("epoch", "seg", "relation", "distill", "s_rt", "s_rs", "i_rt_rs", "rt_cosine", "rt_std")

    def run(seed, rows):
        log = [dict(zip(keys, r, strict=True)) for r in rows]
        return CellResult(Cell(dataset="d", part="p", arm="x-infosam", seed=seed), train_log=log)

    a = run(
        0, [(1, 1.0, -0.5, -1.0, 1.2, 1.5, 1.0, 0.2, 0.010), (2, 0.5, -1.5, -0.2, 0.4, 1.6, 0.2, 0.6, 0.004)]
    )
    b = run(
        1, [(1, 1.0, -0.5, -0.5, 1.0, 1.4, 0.5, 0.1, 0.012), (2, 0.5, -1.0, -0.9, 0.8, 1.5, 0.9, 0.3, 0.008)]
    )
    (row,) = loss_terms_table([a, b])
    assert row["s_rt_first"] == pytest.approx(1.1) and row["s_rt_last"] == pytest.approx(0.6)
    assert row["i_rt_rs_first"] == pytest.approx(0.75) and row["i_rt_rs_last"] == pytest.approx(0.55)
    assert row["rt_std_last"] == pytest.approx(0.006)
    assert (row["runs_i_rose"], row["runs_s_rt_below"], row["runs_with_stats"]) == (1, 1, 2)
    text = "\n".join(_relation_section([row]))
    assert "| d | x-infosam | 2 | 1.100 → 0.600 | 1.450 → 1.550 | 0.750 → 0.550 | 1 of 2 | 1 of 2 |" in text
    old = CellResult(
        Cell(dataset="d", part="p", arm="x-infosam", seed=2),
        train_log=[{"epoch": 1, "seg": 1.0, "relation": -0.5, "distill": -1.0}],
    )
    (plain,) = loss_terms_table([old])
    assert not any(k.startswith(RELATION_TERMS) for k in plain) and _relation_section([plain]) == []
