"""Training, evaluation and export give the numbers the code gave before the third architecture step.

Each case trains a tiny model for four steps through :func:`infosam.train.train` (every path the step and the
trainer have: no teacher, InfoSAM, a baseline objective, a PEFT method with its own loss, the caches, each model
family), evaluates it, and exports it. What it logged, the final trained tensors and the exported model are
reduced to a few numbers each and compared with ``tests/data/behaviour_pin.json``.

That file was written by this module run as a script (``python tests/test_behaviour_pin.py OUT.json``) with the
code of commit fc69211, the last one before the refactoring of issue 34; on the machine that wrote it, the code
after the refactoring gave the same numbers bit for bit (docs/architecture.md). The comparison here allows for the
last bits a different CPU's float32 kernels change (relative 1e-4 on losses and tensor sums, a few threshold
pixels on scores), far below what a changed loss term, a skipped step or a shifted random draw moves.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest

PIN = Path(__file__).with_name("data") / "behaviour_pin.json"
STEPS = 4  # 4 training pairs, batch 2, 2 epochs

CASES: dict[str, list[str]] = {
    "plain-decoder": ["model.name=tiny", "peft.methods=decoder", "infosam.enabled=false"],
    "infosam-adapter": ["model.name=tiny", "peft.methods=adapter"],
    "pkt-lora": ["model.name=tiny", "peft.methods=lora", "distill.method=pkt"],
    "infosam-conv_lora": ["model.name=tiny", "peft.methods=conv_lora"],
    "infosam-adapter-cached": ["model.name=tiny", "peft.methods=adapter", "cache.enabled=true"],
    "infosam-tinyvit": ["model.name=tiny_tinyvit", "peft.methods=adapter"],
    "infosam-sam2": ["model.name=tiny_sam2", "peft.methods=lora"],
}
REL = 1e-4
SCORE_ATOL = 2e-3  # conftest.REAL_MODEL_SCORE_ATOL: a few threshold pixels


def _tensor_digest(tensors: dict) -> dict[str, list[float]]:
    """Per tensor: its sum and its sum of squares, in float64."""
    out = {}
    for name in sorted(tensors):
        t = tensors[name].double()
        out[name] = [float(t.sum()), float((t * t).sum())]
    return out


def pin_case(name: str, root: Path) -> dict:
    """Train, evaluate and export case ``name`` under ``root``; the numbers this module compares."""
    import torch
    from safetensors.torch import load_file

    from infosam.config import load_config
    from infosam.data.synthetic import write_synthetic_dataset
    from infosam.evaluate import evaluate_run
    from infosam.export.command import export_run
    from infosam.train import train

    torch.set_num_threads(1)
    data = root / "data"
    write_synthetic_dataset(data / "train", 4, domain="target")
    write_synthetic_dataset(data / "test", 2, domain="target", start=100)
    run = root / "run"
    config = load_config(
        None,
        [
            f"data.path={data}",
            "train.batch_size=2",
            "train.epochs=2",
            "train.cpu=true",
            "train.log_every_steps=1",
            "eval.last_epochs=1",
            "eval.batch_size=2",
            f"cache.dir={root / 'cache'}",
            f"output={run}",
            *CASES[name],
        ],
    )
    train(config)
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    skip = {"step", "epoch", "lr", "images_per_s", "seconds"}
    logged = {  # columns a case does not fill (e.g. the test scores of rows without an evaluation) left out
        k: [float(r[k]) for r in rows] for k in rows[0] if k not in skip and all(r[k] != "" for r in rows)
    }
    weights = {}
    for file in sorted((run / "weights" / "final").glob("*.safetensors")):
        weights.update({f"{file.stem}/{k}": v for k, v in load_file(file).items()})
    _, summary = evaluate_run(run, data, "test", device="cpu")
    exported = export_run(run, "infosam", root / "student.safetensors")
    return {
        "steps": [int(r["step"]) for r in rows],
        "logged": logged,
        "weights": _tensor_digest(weights),
        "scores": {k: summary[k] for k in ("IoU", "Dice", "MAE", "S")},
        "export": _tensor_digest(load_file(exported)),
    }


def _close(a: float, b: float, rel: float) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=rel * 1e-2)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_training_evaluation_and_export_give_the_pinned_numbers(name, tmp_path):
    expected = json.loads(PIN.read_text())[name]
    got = pin_case(name, tmp_path)
    assert got["steps"] == expected["steps"] == list(range(1, STEPS + 1))
    assert set(got["logged"]) == set(expected["logged"]), "the logged terms changed"
    for term, values in expected["logged"].items():
        for step, (a, b) in enumerate(zip(got["logged"][term], values, strict=True), start=1):
            assert _close(a, b, REL), f"{name}: {term} at step {step}: {a!r}, pinned {b!r}"
    for what in ("weights", "export"):
        assert set(got[what]) == set(expected[what]), f"{name}: the {what} tensors' names changed"
        for tensor, pair in expected[what].items():
            for a, b in zip(got[what][tensor], pair, strict=True):
                assert _close(a, b, REL), f"{name}: {what} {tensor}: {a!r}, pinned {b!r}"
    for metric, value in expected["scores"].items():
        assert got["scores"][metric] == pytest.approx(value, abs=SCORE_ATOL), f"{name}: {metric}"


def test_the_pin_covers_every_case_and_is_not_vacuous():
    pinned = json.loads(PIN.read_text())
    assert set(pinned) == set(CASES)
    for name, case in pinned.items():
        assert case["weights"] and case["export"] and case["logged"]["loss"], name
        teacher = "infosam.enabled=false" not in CASES[name]
        assert ("distill" in case["logged"]) == teacher, name  # the objective's term is logged with a teacher
    # The tolerance would catch a real change: the pinned losses of two cases differ by far more.
    a, b = pinned["infosam-adapter"]["logged"]["loss"], pinned["infosam-adapter-cached"]["logged"]["loss"]
    assert not _close(a[-1] + 1e-3, a[-1], REL)
    assert len(a) == len(b) == STEPS


if (
    __name__ == "__main__"
):  # python tests/test_behaviour_pin.py OUT.json: write the pin with the code on the path
    import tempfile

    out = {}
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            out[case] = pin_case(case, Path(tmp))
            print(case, out[case]["logged"]["loss"], file=sys.stderr)
    Path(sys.argv[1]).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
