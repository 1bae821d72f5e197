"""End to end: tiny SAM trains a few steps on a few image/mask pairs, writes a complete run folder, and evaluates.

Also: the teacher's weights are bit-identical before and after training steps, and the plain baseline (InfoSAM
off) goes through the same step.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from infosam.cache import content_keys
from infosam.config import load_config
from infosam.data.formats import open_dataset
from infosam.data.loading import collate
from infosam.data.synthetic import write_synthetic_dataset
from infosam.distill.loss import RELATION_STATS
from infosam.metrics import METRIC_NAMES
from infosam.model import build_base, make_student, make_teacher
from infosam.step import StepParts, Trainee, batch_prompts, train_step
from infosam.train import train


def _synthetic(root: Path) -> Path:
    """train/ (4 pairs) and test/ (2 pairs) of synthetic target-domain images."""
    write_synthetic_dataset(root / "train", 4, domain="target")
    write_synthetic_dataset(root / "test", 2, domain="target", start=100)
    return root


def _kvasir(root: Path, kvasir_dir: Path) -> Path:
    """train/ (4 pairs) and test/ (2 pairs): the first six real Kvasir pairs, linked in (never copied)."""
    images = sorted(p for p in (kvasir_dir / "images").iterdir() if p.suffix.lower() in (".jpg", ".png"))[:6]
    pairs = [(p, next((kvasir_dir / "masks").glob(p.stem + ".*"))) for p in images]
    for split, chunk in (("train", pairs[:4]), ("test", pairs[4:6])):
        for image, mask in chunk:
            for kind, src in (("images", image), ("masks", mask)):
                (root / split / kind).mkdir(parents=True, exist_ok=True)
                (root / split / kind / src.name).symlink_to(src)
    return root


def build_teacher(config):
    return make_teacher(build_base(config.model.name, seed=config.train.seed))


def build_student(config):
    student = build_base(config.model.name, seed=config.train.seed)
    return student, make_student(student, config.peft.methods, config.peft.options)


def _config(tmp_path: Path, *extra: str, data: Path | None = None):
    data = data if data is not None else _synthetic(tmp_path / "data")
    base = [
        "model.name=tiny",
        f"data.path={data}",
        "train.batch_size=2",
        "train.epochs=2",
        "train.cpu=true",
        "eval.last_epochs=1",
        "eval.batch_size=2",
        f"output={tmp_path / 'run'}",
    ]
    return load_config(None, base + list(extra))


def test_train_writes_a_complete_run_folder_and_evaluates(tmp_path):
    _check_complete_run(train(_config(tmp_path)), tmp_path)


def test_train_on_real_kvasir_pairs(tmp_path, kvasir_dir):
    _check_complete_run(train(_config(tmp_path, data=_kvasir(tmp_path / "data", kvasir_dir))), tmp_path)


def _check_complete_run(run: Path, tmp_path: Path) -> None:
    assert run == tmp_path / "run"
    for name in ("config.yaml", "metrics.csv", "summary.json", "checkpoints/latest", "eval/epoch-002.json"):
        assert (run / name).is_file(), name
    for name in ("weights/final", "weights/epoch-002"):
        assert {p.name for p in (run / name).iterdir()} == {
            "peft.safetensors",
            "relation.safetensors",
            "manifest.json",
        }
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    header, *rows = (run / "metrics.csv").read_text().splitlines()
    assert header.split(",")[:6] == ["step", "epoch", "loss", "seg", "relation", "distill"]
    # InfoSAM on: the relation maps' statistics close every row (S(r_t), S(r_s), I(r_t; r_s), ...)
    assert header.split(",")[-len(RELATION_STATS) :] == list(RELATION_STATS)
    with open(run / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            assert 0.0 <= float(row["s_rt"]) <= 1.0 + 1e-6  # log2 of the batch of 2
            assert float(row["i_rt_rs"]) == pytest.approx(-float(row["distill"]), abs=1e-5)
            assert float(row["rt_min"]) <= float(row["rt_mean"]) <= float(row["rt_max"])
    assert [r.split(",")[0] for r in rows] == ["2", "4"]  # one row per epoch end, 2 steps per epoch

    summary = json.loads((run / "summary.json").read_text())
    assert summary["reported_epoch"] == 2 and list(summary["epochs"]) == ["2"]
    for name in METRIC_NAMES:
        assert 0.0 <= summary["reported"][name] <= 1.0, name
        assert summary["best"][name]["epoch"] == 2
    assert len(json.loads((run / "eval/epoch-002.json").read_text())["rows"]) == 2


def test_teacher_is_untouched_and_baseline_shares_the_step(tmp_path):
    config = _config(tmp_path)
    accelerator = Accelerator(cpu=True)
    teacher = build_teacher(config)
    teacher.requires_grad_(True)  # accepts gradients: only the step itself may keep it out of autograd
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student, _ = build_student(config)
    from infosam.distill.infosam import InfoSAMLoss
    from infosam.distill.relation import RelationModule

    dataset = open_dataset(config.data.path, split="train", image_size=64)
    batch = collate([dataset[0], dataset[1]])
    for infosam in (True, False):
        trainee = Trainee(
            student, InfoSAMLoss(RelationModule(32)) if infosam else None, config.train.seg_loss
        )
        optimizer = torch.optim.Adam([p for p in trainee.parameters() if p.requires_grad], lr=1e-3)
        scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
        parts = StepParts(accelerator, trainee, teacher if infosam else None, optimizer, scheduler, seed=0)
        for index in range(2):
            terms = train_step(parts, batch, epoch=0, index=index, window=1, sync=True)
            assert torch.isfinite(terms["loss"])
            assert ("distill" in terms) == infosam
    assert all(p.grad is None for p in teacher.parameters())
    from infosam.step import teacher_forward

    out = teacher_forward(teacher, batch["image"], batch_prompts(batch, seed=0, rank=0, epoch=0, index=0))
    assert not out.image_embeddings.requires_grad and not out.mask_tokens.requires_grad
    assert out.low_res_logits is None  # the teacher's decoder stops after its transformer
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(
        torch.equal(student.state_dict()[k], before[k]) for k in ("mask_decoder.iou_token.weight",)
    )


def test_resume_without_checkpoint_config_fails_clearly(tmp_path):
    from infosam.load import load_run
    from infosam.runs import RunDir

    with pytest.raises(FileNotFoundError, match="not a run folder"):
        RunDir(tmp_path).read_config()
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        load_run(tmp_path)


class _DictCache:
    """Stand-in with TeacherCache's keys/get/put contract: keys from content, stores float16, returns float32 only
    when all keys are held."""

    def __init__(self):
        self.store: dict[str, torch.Tensor] = {}

    def keys(self, images):
        return content_keys(images)

    def get(self, keys):
        if not all(k in self.store for k in keys):
            return None
        return torch.stack([self.store[k] for k in keys]).float()

    def put(self, keys, embeddings):
        self.store.update({k: e.detach().half() for k, e in zip(keys, embeddings, strict=True)})


def test_teacher_forward_reads_the_cache_once_filled(tmp_path, monkeypatch):
    from infosam.step import teacher_forward

    config = _config(tmp_path)
    teacher = build_teacher(config)
    batch = collate([open_dataset(config.data.path, split="train", image_size=64)[i] for i in (0, 1)])
    prompts = batch_prompts(batch, seed=0, rank=0, epoch=0, index=0)
    cache = _DictCache()
    live = teacher_forward(teacher, batch["image"], prompts)
    first = teacher_forward(teacher, batch["image"], prompts, cache=cache)
    monkeypatch.setattr(
        teacher.image_encoder, "forward", lambda x: pytest.fail("encoder ran despite the cache")
    )
    second = teacher_forward(teacher, batch["image"], prompts, cache=cache)
    assert torch.equal(first.mask_tokens, second.mask_tokens)  # first use already sees the stored values
    torch.testing.assert_close(first.image_embeddings, live.image_embeddings, atol=1e-2, rtol=1e-2)


def test_logs_a_first_pace_early_and_an_epoch_line_with_the_relations_entropy(tmp_path, caplog):
    """A run says how long it will take after its first 5 steps (a CPU epoch can take many minutes), and each
    epoch ends with a line of its mean terms, S(r_t) and I(r_t; r_s) when InfoSAM is on, and the time left."""
    import logging

    data = write_synthetic_dataset(tmp_path / "data", 12, domain="target")
    config = _config(tmp_path, data=data)
    config.data.train_split, config.data.test_split = "all", "all"
    config.train.epochs, config.eval.last_epochs = 1, 0
    with caplog.at_level(logging.INFO, logger="infosam.train"):
        train(config)
    lines = [r.getMessage() for r in caplog.records if r.name == "infosam.train"]
    early = [line for line in lines if line.startswith("first 5 steps:")]
    assert len(early) == 1 and "training left ~" in early[0]  # 6 steps: one early line, at step 5
    (epoch,) = [line for line in lines if line.startswith("epoch 1/1;")]
    assert "L_r" in epoch and "S(r_t)" in epoch and "I(r_t; r_s)" in epoch and "training left ~0m00s" in epoch
