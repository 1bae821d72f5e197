"""SAM 2 through the whole pipeline: ``infosam train`` with InfoSAM on the tiny SAM 2, and exports that Meta's
``build_sam2`` + ``SAM2ImagePredictor`` load and that give the student's logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

from infosam.cli import main
from infosam.data.synthetic import synthetic_pair, write_synthetic_dataset
from infosam.export import load_model
from infosam.predict import predict_logits
from infosam.sam.specs import SPECS
from run_logs import logged_losses
from test_export import BOX, LOGIT_TOL, POINTS, make_run


@pytest.fixture
def image():
    return synthetic_pair(3, domain="target", size=(40, 60))[0]


def meta_predictor(path) -> SAM2ImagePredictor:
    """Meta's builder on the exported file (it raises on missing or unexpected keys), tiny feature sizes set."""
    spec = SPECS["tiny_sam2"]
    model = build_sam2(
        spec.sam2_config, str(path), device="cpu", hydra_overrides_extra=list(spec.sam2_overrides)
    )
    predictor = SAM2ImagePredictor(model)
    g = spec.embedding_size
    predictor._bb_feat_sizes = [(4 * g, 4 * g), (2 * g, 2 * g), (g, g)]
    return predictor


@pytest.mark.parametrize("methods", ["lora+decoder", "bitfit+decoder"])
def test_sam2_export_loads_into_metas_build_sam2_and_gives_the_students_logits(tmp_path, image, methods):
    run = make_run(tmp_path, methods, name="tiny_sam2")
    out = tmp_path / "student_sam2.pt"
    assert main(["export", str(run), "--format", "sam2", "--out", str(out)]) == 0
    predictor = meta_predictor(out)
    predictor.set_image(image)
    student = load_model(run)
    teacher = load_model(run, part="teacher")
    for prompt in (BOX, POINTS):
        box = None if prompt.box is None else np.asarray(prompt.box)
        coords = np.asarray(prompt.points) if prompt.points else None
        labels = np.asarray(prompt.labels) if prompt.points else None
        meta, _, _ = predictor.predict(coords, labels, box, multimask_output=False, return_logits=True)
        ours = predict_logits(student, image, prompt)
        assert np.abs(meta[0] - ours).max() < LOGIT_TOL
        assert np.abs(predict_logits(teacher, image, prompt) - ours).max() > 100 * LOGIT_TOL
    assert main(["export", str(run), "--format", "sam", "--out", str(tmp_path / "x.pth")]) == 2


def test_infosam_train_cli_on_tiny_sam2_then_export_predict(tmp_path, capsys):
    data = tmp_path / "data"
    write_synthetic_dataset(data / "train", 4, domain="target")
    write_synthetic_dataset(data / "test", 2, domain="target", start=100)
    config = tmp_path / "sam2.yaml"
    config.write_text(
        "model: {name: tiny_sam2}\n"
        f"data: {{path: {data}}}\n"
        "peft: {methods: adapter+decoder}\n"
        "train: {batch_size: 2, epochs: 2, cpu: true}\n"
        "eval: {last_epochs: 1, batch_size: 2}\n"
        f"output: {tmp_path / 'run'}\n"
    )
    assert main(["train", "--config", str(config)]) == 0
    run = tmp_path / "run"
    losses = logged_losses(run)
    assert len(losses) >= 2
    for step in losses:  # InfoSAM's two terms are on and finite at every step
        assert all(np.isfinite(step[k]) for k in ("loss", "seg", "relation", "distill"))
        assert step["relation"] != 0.0 and step["distill"] != 0.0
    assert json.loads((run / "summary.json").read_text())
    assert main(["export", str(run), "--format", "infosam", "--out", str(tmp_path / "s.safetensors")]) == 0
    student = load_model(tmp_path / "s.safetensors")
    assert student.spec.name == "tiny_sam2"
    with pytest.raises(ValueError, match="cache.student_prefix is not supported on SAM 2"):
        from infosam.config import load_config
        from infosam.prefix import open_student_prefix

        cfg = load_config(str(config), ["cache.enabled=true", f"cache.dir={tmp_path / 'cache'}"])
        open_student_prefix(cfg, student)
    torch.testing.assert_close(
        torch.from_numpy(predict_logits(student, synthetic_pair(5, domain="target", size=(40, 60))[0], BOX)),
        torch.from_numpy(
            predict_logits(load_model(run), synthetic_pair(5, domain="target", size=(40, 60))[0], BOX)
        ),
    )


def test_experiment_runner_and_report_on_tiny_sam2(tmp_path):
    """The experiment runner trains, scores and records a SAM 2 grid (a pair of arms, InfoSAM and plain), and the
    report reads its record, unchanged code."""
    from infosam.experiment import run_experiment
    from infosam.experiment.report import write_report

    write_synthetic_dataset(tmp_path / "data" / "target", 6, domain="target")
    grid = {
        "set": [
            "model.name=tiny_sam2",
            "train.batch_size=2",
            "train.epochs=1",
            "train.cpu=true",
            "eval.last_epochs=1",
            "eval.batch_size=4",
        ],
        "seeds": [0],
        "results": "results/sam2",
        "datasets": {"target": {"path": "data/target", "test": 2, "train": [4]}},
        "arms": {
            "adapter": {"set": ["peft.methods=adapter+decoder", "infosam.enabled=false"]},
            "adapter-infosam": {"set": ["peft.methods=adapter+decoder"], "baseline": "adapter"},
        },
    }
    path = tmp_path / "grid.yaml"
    path.write_text(json.dumps(grid), encoding="utf-8")
    seen = []
    run_experiment(path, tmp_path / "exp", on_progress=seen.append)
    assert [p.skipped for p in seen] == [False, False]
    record = tmp_path / "results" / "sam2"
    assert len(list(record.glob("cells/*/*/*/*/cell.json"))) == 2
    page = write_report(record, tmp_path / "report.md", n_boot=50).read_text()
    assert (
        "2 of 2 cells finished" in page
        and "| target | train4 | test | adapter-infosam - adapter | Dice |" in page
    )
