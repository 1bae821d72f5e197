"""The shipped baseline configs (configs/baselines/, configs/distill/) load and validate and are what their names
say, and the experiment grid takes a baseline as one arm line (experiments/baselines/grid.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infosam.config import ConfigError, load_config
from infosam.data.synthetic import write_synthetic_dataset
from infosam.distill.registry import OBJECTIVES
from infosam.experiment.grid import load_grid
from infosam.experiment.plan import cell_config, cells

ROOT = Path(__file__).resolve().parents[1]
BASELINES = sorted((ROOT / "configs" / "baselines").rglob("*.yaml"))
BASELINE_METHODS = [
    m for m in OBJECTIVES if m != "infosam"
]  # infosam's configs are the paper's, not baselines


def test_every_dataset_has_every_baseline():
    names = {f"adapter_{m}.yaml" for m in BASELINE_METHODS} | {"hq_token.yaml", "conv_lora.yaml"}
    folders = [f"baselines/{d}" for d in ("camo", "isic2017", "kvasir", "leaf", "road")]
    folders += ["baselines/litemedsam/kvasir", "baselines/litemedsam/leaf"]
    for folder in folders:
        assert {p.name for p in (ROOT / "configs" / folder).glob("*.yaml")} == names, folder


@pytest.mark.parametrize("path", BASELINES, ids=lambda p: p.relative_to(ROOT / "configs").as_posix())
def test_baseline_config_is_what_its_name_says(path):
    c = load_config(path)
    lite = "litemedsam" in path.parts
    assert c.model.name == ("litemedsam" if lite else "vit_b")
    if path.stem.startswith("adapter_"):
        assert c.distill_method == path.stem.removeprefix("adapter_")
        assert c.peft.methods == "adapter+decoder"
    else:
        assert c.distill_method == "none"
        assert c.peft.methods == {"hq_token": "hq_token", "conv_lora": "conv_lora+decoder"}[path.stem]
    paper = load_config(
        ROOT / "configs" / ("litemedsam" if lite else "") / path.parent.name / "adapter_infosam.yaml"
    )
    assert (c.data, c.train, c.eval) == (paper.data, paper.train, paper.eval)  # only the method differs


def test_hq_token_refuses_the_student_prefix_cache():
    with pytest.raises(ConfigError, match="cache.student_prefix=false"):
        load_config(None, ["data.path=/tmp", "peft.methods=hq_token", "cache.enabled=true"])


def test_grid_arm_is_one_line_per_baseline(tmp_path, monkeypatch):
    write_synthetic_dataset(tmp_path / "kvasir-seg", 210, domain="target")
    monkeypatch.setenv("INFOSAM_DATA", str(tmp_path))
    grid = load_grid(ROOT / "experiments" / "baselines" / "grid.yaml")
    assert set(grid.arms) >= {"adapter", "adapter-infosam", *(f"adapter-{m}" for m in OBJECTIVES)}
    by_arm = {c.arm: c for c in cells(grid)}
    configs = {a: cell_config(grid, c, tmp_path / "splits", tmp_path / "runs" / a) for a, c in by_arm.items()}
    assert (
        configs["adapter-pkt"].distill_method == "pkt"
        and configs["adapter-infosam"].distill_method == "infosam"
    )
    assert configs["adapter"].distill_method == "none"
    assert configs["adapter-pkt"].peft == configs["adapter-infosam"].peft == configs["adapter"].peft
    assert (
        configs["hq-sam"].peft.methods == "hq_token"
        and configs["convlora-sam"].peft.methods == "conv_lora+decoder"
    )
