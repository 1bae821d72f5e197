"""LiteMedSAM through the whole method: a tiny InfoSAM run from the bundled weights (box prompts, teacher cache),
zero-shot ``infosam eval --checkpoint bundled`` on a few real Kvasir images (``infosam info --model litemedsam``:
tests/test_cli_info.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import infosam.step
from infosam.cli import main
from infosam.config import load_config
from infosam.data.synthetic import write_synthetic_dataset
from infosam.train import train


def _smallest(folder: Path, n: int) -> list[str]:
    """Stems of the ``n`` smallest image files (small decodes keep the test quick)."""
    files = sorted((p for p in (folder / "images").iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
    return [p.stem for p in files[:n]]


def test_infosam_trains_litemedsam_from_the_bundled_weights(tmp_path, monkeypatch):
    data = tmp_path / "data"
    # Two training images (one batch, two steps over two epochs), one test image; non-square, so the padding is
    # cropped on the way back. The bundled weights run at a 64-px input here (TinyViT has no position embedding,
    # its attention works on fixed windows, so the weights load unchanged; 16 x 16 embeddings): a 256-px encoding
    # costs seconds on a busy CPU, and 256 px is what the eval test below and the parity tests run.
    write_synthetic_dataset(data / "train", 2, domain="target", size=(60, 90))
    write_synthetic_dataset(data / "test", 1, domain="target", size=(60, 90), start=100)
    seen_p_box = []
    original = infosam.step.batch_prompts

    def recording(*args, **kwargs):
        seen_p_box.append(kwargs["p_box"])
        return original(*args, **kwargs)

    monkeypatch.setattr(infosam.step, "batch_prompts", recording)
    config = load_config(
        None,
        [
            "model.name=litemedsam",
            "model.checkpoint=bundled",
            "model.image_size=64",
            "peft.methods=decoder",
            "train.prompt=box",
            f"data.path={data}",
            "train.batch_size=2",
            "train.epochs=2",
            "train.cpu=true",
            "eval.last_epochs=1",
            "eval.batch_size=1",
            "cache.enabled=true",
            f"cache.dir={tmp_path / 'cache'}",
            f"output={tmp_path / 'run'}",
        ],
    )
    run = train(config)

    assert seen_p_box == [1.0, 1.0]  # two steps, boxes only
    header, *rows = (run / "metrics.csv").read_text().splitlines()
    values = dict(zip(header.split(","), rows[-1].split(","), strict=False))
    assert values["step"] == "2"
    for term in ("loss", "seg", "relation", "distill"):
        assert math.isfinite(float(values[term])), term
    summary = json.loads((run / "summary.json").read_text())
    assert 0.0 <= summary["reported"]["IoU"] <= 1.0
    manifest = next((tmp_path / "cache").rglob("manifest.json"))
    assert '"litemedsam"' in manifest.read_text()  # the cache is keyed by LiteMedSAM's own transform
    assert {p.name for p in (run / "weights" / "final").iterdir()} == {
        "peft.safetensors",
        "relation.safetensors",
        "manifest.json",
    }


def test_eval_cli_scores_bundled_litemedsam_without_a_download(tmp_path, kvasir_dir, capsys):
    split = tmp_path / "few.txt"
    split.write_text("\n".join(_smallest(kvasir_dir, 2)) + "\n")
    argv = ["eval", "--model", "litemedsam", "--checkpoint", "bundled", "--data", str(kvasir_dir)]
    argv += ["--split", str(split), "--workers", "0", "--out", str(tmp_path / "eval")]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["n_images"] == 2
    # A noisy box on polyps: the real weights through LiteMedSAM's own transform segment them well (the whole
    # 100-image table is 0.88 IoU with a tight box); a wrong transform or random weights scores far below.
    assert summary["IoU"] > 0.8  # measured 0.95 on these two
