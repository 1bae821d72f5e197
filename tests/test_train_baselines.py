"""The baseline objectives (``distill.method``) through training: a tiny end-to-end ``infosam train`` run per
objective, the step's gradient routing (teacher frozen, student PEFT and the objective's learned parts train),
exact resume of learned parts, and the default InfoSAM / plain paths unchanged by the registry's existence."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from infosam.cli import main
from infosam.config import ConfigError, load_config
from infosam.data.formats import open_dataset
from infosam.data.loading import collate
from infosam.data.synthetic import write_synthetic_dataset
from infosam.distill.infosam import InfoSAMLoss
from infosam.distill.registry import OBJECTIVES, build_objective
from infosam.distill.relation import RelationModule
from infosam.model import build_base, make_student, make_teacher
from infosam.sam.forward import sam_forward
from infosam.step import StepParts, Trainee, batch_prompts, step_losses, teacher_forward, train_step
from infosam.train import train

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_synthetic_dataset(root / "train", 4, domain="target")
    write_synthetic_dataset(root / "test", 2, domain="target", start=100)
    return root


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


BASELINES = [m for m in OBJECTIVES if m != "infosam"]


@pytest.mark.parametrize("method", [*BASELINES, "none"])
def test_infosam_train_end_to_end_per_objective(method, data, tmp_path):
    run = tmp_path / "run"
    args = ["model.name=tiny", f"data.path={data}", "train.batch_size=2", "train.epochs=1", "train.cpu=true"]
    args += ["eval.last_epochs=1", "eval.batch_size=2", f"distill.method={method}"]
    assert (
        main(["train", *[a for x in args for a in ("--set", x)], "--no-progress", "--output", str(run)]) == 0
    )
    (row,) = _rows(run)
    assert math.isfinite(float(row["loss"]))
    if method == "none":
        assert row["distill"] == ""
    else:
        assert float(row["loss"]) == pytest.approx(float(row["seg"]) + float(row["distill"]), rel=1e-5)
    assert (run / "eval" / "epoch-001.json").is_file()
    assert {p.name for p in (run / "weights" / "final").iterdir()} == {"peft.safetensors", "manifest.json"}
    assert load_config(run / "config.yaml").distill.method == method


@pytest.mark.parametrize("method", ["vid", "semckd", "reviewkd", "tinysam"])
@pytest.mark.parametrize("family", ["tiny", "tiny_tinyvit"])
def test_step_routing_teacher_frozen_student_and_objective_train(method, family):
    teacher = make_teacher(build_base(family, seed=0))
    teacher.requires_grad_(True)  # would accept gradients: only the step may keep it out of autograd
    before_teacher = copy.deepcopy(teacher.state_dict())
    student = build_base(family, seed=0)
    make_student(student, "adapter+decoder", {"adapter": {"init": "torch", "first_block": 0}})
    frozen = {k: v.clone() for k, v in student.named_parameters() if not v.requires_grad}
    trained = {k: v.clone() for k, v in student.named_parameters() if v.requires_grad}
    torch.manual_seed(0)
    objective = build_objective(method, None, student)
    learned = {k: v.clone() for k, v in objective.named_parameters()}
    trainee = Trainee(student, objective)
    optimizer = torch.optim.Adam([p for p in trainee.parameters() if p.requires_grad], lr=1e-2)
    assert {id(p) for p in objective.parameters()} <= {
        id(p) for g in optimizer.param_groups for p in g["params"]
    }
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    parts = StepParts(
        Accelerator(cpu=True), trainee, teacher, optimizer, scheduler, seed=0, objective=objective
    )
    size = student.image_encoder.img_size
    gen = torch.Generator().manual_seed(0)
    mask = torch.zeros(2, 1, size, size)
    mask[:, :, size // 4 : size // 2, size // 4 : size // 2] = 1
    batch = {"image": torch.randn(2, 3, size, size, generator=gen), "mask": mask}
    batch["input_size"] = torch.tensor([[size, size]] * 2)
    terms = train_step(parts, batch, epoch=0, index=0, window=1, sync=True)
    assert torch.isfinite(terms["distill"])
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before_teacher[k], v) for k, v in teacher.state_dict().items())
    params = dict(student.named_parameters())
    assert all(torch.equal(frozen[k], params[k]) for k in frozen)
    assert any(not torch.equal(trained[k], params[k]) for k in trained)
    now = dict(objective.named_parameters())
    assert all(not torch.equal(learned[k], now[k]) for k in learned), (
        "a learned part of the objective did not train"
    )


def test_teacher_forward_gives_what_the_objective_reads():
    teacher = make_teacher(build_base("tiny", seed=0))
    images = torch.randn(2, 3, 64, 64)
    prompts = {"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]] * 2)}
    plain = teacher_forward(teacher, images, prompts)
    assert plain.low_res_logits is None and plain.features is None
    logit = teacher_forward(teacher, images, prompts, objective=build_objective("logit", None, teacher))
    assert logit.low_res_logits.shape == (2, 1, 32, 32) and not logit.low_res_logits.requires_grad
    torch.testing.assert_close(logit.mask_tokens, plain.mask_tokens)
    review = teacher_forward(teacher, images, prompts, objective=build_objective("reviewkd", None, teacher))
    assert [tuple(f.shape) for f in review.features] == [(2, 32, 8, 8)] * 4


def test_learned_parts_resume_exactly(data, tmp_path):
    """VID's regressor and variance go into every checkpoint: a run stopped after step 1 and resumed logs the same
    losses (which depend on them) as one that was not."""
    args = ["model.name=tiny", f"data.path={data}", "train.batch_size=2", "train.epochs=2", "train.cpu=true"]
    args += [
        "eval.last_epochs=0",
        "train.save_every_steps=1",
        "train.log_every_steps=1",
        "distill.method=vid",
    ]
    full = train(load_config(None, [*args, f"output={tmp_path / 'full'}"]))

    def stop(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt

    config = load_config(None, [*args, f"output={tmp_path / 'cut'}"])
    with pytest.raises(KeyboardInterrupt):
        train(config, on_step=stop)
    assert "distill" in torch.load(tmp_path / "cut/checkpoints/step-000002/state.pt", weights_only=True)
    cut = train(config, resume=True)
    assert [r["loss"] for r in _rows(cut)] == [r["loss"] for r in _rows(full)]


def test_config_rules_of_distill_method():
    base = ["data.path=/tmp", "model.name=tiny"]
    assert load_config(None, base).distill_method == "infosam"
    assert load_config(None, [*base, "infosam.enabled=false"]).distill_method == "none"
    with pytest.raises(ConfigError, match="needs the teacher"):
        load_config(None, [*base, "infosam.enabled=false", "distill.method=pkt"])
    with pytest.raises(ConfigError, match="distill.method must be one of infosam, logit"):
        load_config(None, [*base, "distill.method=kd"])
    with pytest.raises(ConfigError, match="takes no distill.options .*infosam.lam"):
        load_config(None, [*base, "distill.options={infosam: {lam: 2}}"])
    with pytest.raises(ConfigError, match="not distill.method"):
        load_config(None, [*base, "distill.method=pkt", "distill.options={vid: {weight: 2}}"])
    with pytest.raises(ConfigError, match="batch_size must be >= 2 with distill.method=pkt"):
        load_config(None, [*base, "distill.method=pkt", "train.batch_size=1"])
    assert load_config(None, [*base, "distill.method=mobilesam", "train.batch_size=1"]).train.batch_size == 1
    with pytest.raises(ConfigError, match="cache.enabled=false"):
        load_config(None, [*base, "distill.method=semckd", "cache.enabled=true"])


# --------------------------------------------------------------------------------------------- default unchanged


def test_default_trainee_equals_calling_infosam_loss_directly(data):
    """The InfoSAM path through Trainee (as train.py builds it) gives the losses and gradients of calling the
    student forward and InfoSAMLoss directly, bit for bit; no objective module is registered."""
    teacher = make_teacher(build_base("tiny", seed=0))
    student = build_base("tiny", seed=0)
    make_student(student, "adapter+decoder", {"adapter": {"init": "torch"}})
    torch.manual_seed(42)
    relation = RelationModule(32)
    twin_student, twin_relation = copy.deepcopy(student), copy.deepcopy(relation)
    trainee = Trainee(student, InfoSAMLoss(relation))
    assert "objective" not in dict(trainee.named_children())
    assert [n for n, _ in trainee.named_parameters()] == [
        f"student.{n}" for n, _ in student.named_parameters()
    ] + [f"infosam.relation.{n}" for n, _ in relation.named_parameters()]
    dataset = open_dataset(data, split="train", image_size=64)
    batch = collate([dataset[0], dataset[1]])
    prompts = batch_prompts(batch, seed=0, rank=0, epoch=0, index=0)
    t_out = teacher_forward(teacher, batch["image"], prompts)
    terms = trainee(batch["image"], batch["mask"], prompts, t_out)
    terms["loss"].backward()

    direct = InfoSAMLoss(twin_relation)
    s_out = sam_forward(twin_student, batch["image"], **prompts)
    info = direct(t_out, s_out)
    reference = step_losses(s_out, t_out, batch["mask"], objective=direct)
    reference["loss"].backward()
    for key in ("loss", "seg", "relation", "distill", "infosam"):
        assert torch.equal(terms[key], reference[key]), key
    assert torch.equal(info["total"], terms["infosam"])
    for (name, a), (_, b) in zip(
        [*student.named_parameters(), *relation.named_parameters()],
        [*twin_student.named_parameters(), *twin_relation.named_parameters()],
        strict=True,
    ):
        assert (a.grad is None) == (b.grad is None) and (a.grad is None or torch.equal(a.grad, b.grad)), name


@pytest.mark.parametrize(
    "methods, distill",
    [("hq_token", "none"), ("conv_lora+decoder", "none"), ("conv_lora+decoder", "infosam")],
)
def test_infosam_train_end_to_end_sam_specific_peft(methods, distill, data, tmp_path):
    run = tmp_path / "run"
    args = ["model.name=tiny", f"data.path={data}", "train.batch_size=2", "train.epochs=1", "train.cpu=true"]
    args += [
        "eval.last_epochs=1",
        "eval.batch_size=2",
        f"peft.methods={methods}",
        f"distill.method={distill}",
    ]
    assert (
        main(["train", *[a for x in args for a in ("--set", x)], "--no-progress", "--output", str(run)]) == 0
    )
    (row,) = _rows(run)
    assert math.isfinite(float(row["loss"]))
    if methods.startswith("conv_lora"):  # the load-balancing loss is part of the loss
        assert float(row["loss"]) > float(row["seg"]) + (float(row["infosam"]) if row["infosam"] else 0.0)
    assert (run / "eval" / "epoch-001.json").is_file()
