"""Every shipped config loads and validates, and the published runs carry the paper's protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from infosam.config import config_from_dict, load_config, read_yaml_tree

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DATASETS = ("camo", "isic2017", "kvasir", "leaf", "road")
RUNS = sorted(p for p in CONFIGS.glob("*/*.yaml") if p.parent.name in DATASETS and p.name != "dataset.yaml")
LITEMEDSAM = CONFIGS / "litemedsam"
LITEMEDSAM_RUNS = sorted(p for p in LITEMEDSAM.glob("*/*_*.yaml") if p.parent.name != "methods")
SAM2_RUNS = sorted(p for p in (CONFIGS / "sam2").glob("*/*_*.yaml"))
PARTS = sorted(set(CONFIGS.rglob("*.yaml")) - set(RUNS) - set(LITEMEDSAM_RUNS) - set(SAM2_RUNS))


def test_one_config_per_published_run():
    expected = {
        f"{d}/{m}_{v}.yaml" for d in DATASETS for m in ("adapter", "lora") for v in ("infosam", "baseline")
    }
    assert {p.relative_to(CONFIGS).as_posix() for p in RUNS} == expected


@pytest.mark.parametrize("path", PARTS, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_partial_configs_have_only_known_options(path):
    config_from_dict(read_yaml_tree(path))


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_published_run_follows_the_protocol(path):
    c = load_config(path)
    dataset, run = path.parent.name, path.stem
    assert c.model.name == "vit_b" and c.model.checkpoint.endswith("sam_vit_b_01ec64.pth")
    assert (c.train.lr, c.train.min_lr, c.train.batch_size, c.train.seed) == (2e-4, 2e-5, 4, 42)
    assert c.train.epochs == (20 if dataset == "road" else 10)
    assert c.eval_epochs() == list(range(c.train.epochs - 4, c.train.epochs + 1))
    assert (c.eval.prompt, c.eval.n_fg, c.eval.n_bg)[: 3 if dataset == "road" else 1] == (
        ("points", 2, 3) if dataset == "road" else ("box",)
    )
    assert c.infosam.enabled == run.endswith("infosam")
    assert (c.infosam.lam, c.infosam.lam1, c.infosam.lam2) == (1.0, 1.0, 0.5)
    if run.startswith("adapter"):
        assert c.peft.methods == "adapter+decoder" and c.peft.options["adapter"]["init"] == "torch"
    else:
        assert c.peft.methods == "lora+decoder" and c.peft.options["lora"]["r"] == 4
    assert c.data.train_split == "train.csv" and c.data.test_split.startswith("test")
    assert c.output == f"runs/{dataset}/{run}"


def test_litemedsam_has_every_method_with_and_without_infosam():
    expected = {
        f"{d}/{m}_{v}.yaml"
        for d in ("kvasir", "leaf", "ecssd", "any")
        for m in ("decoder", "lora", "adapter")
        for v in ("infosam", "baseline")
    }
    assert {p.relative_to(LITEMEDSAM).as_posix() for p in LITEMEDSAM_RUNS} == expected


@pytest.mark.parametrize("path", LITEMEDSAM_RUNS, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_litemedsam_run_is_the_paper_protocol_with_box_prompts(path):
    dataset, run = path.parent.name, path.stem
    overrides = ["data.path=/data/mine", "output=runs/mine"] if dataset == "any" else []
    c = load_config(path, overrides)
    paper = load_config(CONFIGS / dataset / "lora_infosam.yaml") if (CONFIGS / dataset).is_dir() else None
    assert (c.model.name, c.model.checkpoint) == ("litemedsam", "bundled")
    assert (c.train.prompt, c.eval.prompt) == ("box", "box")  # LiteMedSAM was trained with boxes only
    if paper is not None:
        assert (c.data, c.train.lr, c.train.epochs, c.eval.metrics) == (
            paper.data,
            paper.train.lr,
            paper.train.epochs,
            paper.eval.metrics,
        )
    else:  # the protocol of configs/base.yaml
        assert (c.train.lr, c.train.min_lr, c.train.batch_size, c.train.epochs) == (2e-4, 2e-5, 4, 10)
    assert c.infosam.enabled == run.endswith("infosam")
    assert (c.infosam.lam, c.infosam.lam1, c.infosam.lam2) == (1.0, 1.0, 0.5)
    methods = {"decoder": "decoder", "lora": "lora+decoder", "adapter": "adapter+decoder"}
    assert c.peft.methods == methods[run.split("_")[0]]
    assert c.output == ("runs/mine" if dataset == "any" else f"runs/litemedsam/{dataset}/{run}")


def test_sam2_runs_follow_the_protocol_on_sam2():
    """configs/sam2: the paper's SAM 2 table (Kvasir, Leaf, Road; Adapter and LoRA, each +- InfoSAM) on the same
    protocol as the ViT-B runs, with the SAM 2 model and no student-prefix cache (refused on SAM 2)."""
    from infosam.sam.specs import SPECS

    names = {p.relative_to(CONFIGS / "sam2").as_posix() for p in SAM2_RUNS}
    assert names == {
        f"{d}/{m}_{v}.yaml"
        for d in ("kvasir", "leaf", "road")
        for m in ("adapter", "lora")
        for v in ("infosam", "baseline")
    }
    for path in SAM2_RUNS:
        c = load_config(path)
        dataset, run = path.parent.name, path.stem
        assert SPECS[c.model.name].family == "sam2" and c.model.checkpoint.endswith(".pt")
        assert (c.train.lr, c.train.batch_size, c.train.seed) == (2e-4, 4, 42)
        assert c.train.epochs == (20 if dataset == "road" else 10)
        assert c.infosam.enabled == run.endswith("infosam") and not c.cache.student_prefix
        assert c.peft.methods == ("adapter+decoder" if run.startswith("adapter") else "lora+decoder")
        assert c.output == f"runs/sam2/{dataset}/{run}"


@pytest.mark.parametrize("missing", ["data.path", "output"])
def test_dataset_agnostic_litemedsam_config_takes_data_and_output_from_the_command_line(missing):
    from infosam.config import ConfigError

    given = {"data.path": "data.path=/data/mine", "output": "output=runs/mine"}
    del given[missing]
    with pytest.raises(ConfigError, match=missing.replace(".", r"\.") + ".*(--set|--output)"):
        load_config(CONFIGS / "litemedsam" / "any" / "lora_infosam.yaml", list(given.values()))


def test_shipped_split_files_name_the_readme_splits():
    splits = CONFIGS.parent / "splits"
    for name in (
        "kvasir_train",
        "kvasir_test",
        "kvasir_few",
        "leaf_train",
        "leaf_test",
        "ecssd_train",
        "ecssd_test",
    ):
        stems = (splits / f"{name}.txt").read_text().split()
        assert stems and len(stems) == len(set(stems)), name
    train, test = ((splits / f"kvasir_{s}.txt").read_text().split() for s in ("train", "test"))
    assert (len(train), len(test)) == (900, 100) and not set(train) & set(test)
