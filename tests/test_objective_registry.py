"""InfoSAM as an entry of the distillation registry, and what the trainer asks the registries instead of naming
methods: the trainee keeps its state-dict keys (committed below), a run draws the relation module where it always
did (after the student's PEFT init, from train.seed), the entry's terms are InfoSAM's maths bit for bit, its
options are the infosam section's, and the step, the trainer and the config's cross-section rules name no PEFT
method."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from infosam.config import ConfigError, load_config
from infosam.data.formats import open_dataset
from infosam.data.loading import collate
from infosam.data.synthetic import write_synthetic_dataset
from infosam.distill.entropy import all_gather_rows
from infosam.distill.infosam import InfoSAMLoss
from infosam.distill.loss import RELATION_STATS, InfoSAMWeights, infosam_terms
from infosam.distill.registry import METHODS, OBJECTIVES, build_objective
from infosam.distill.relation import RelationModule
from infosam.model import build_configured, make_student, make_teacher
from infosam.peft.conv_lora import ConvLoraLinear
from infosam.peft.registry import aux_loss_modules, prefix_cache_conflict
from infosam.runtime import reset_accelerate_state
from infosam.sam.forward import sam_forward
from infosam.step import batch_prompts, step_losses, teacher_forward
from infosam.train.build import build_parts

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

SRC = Path(__file__).resolve().parents[1] / "src" / "infosam"

RELATION_KEYS = [
    f"infosam.relation.{name}.{p}"
    for name in ("norm_image", "norm_token", "query", "key")
    for p in ("weight", "bias")
]
OBJECTIVE_KEYS = {  # the trainee's keys after the student's, as written by the code before the registry held InfoSAM
    "infosam": RELATION_KEYS,
    "none": [],
    "vid": [
        "objective.head.alpha",
        *(f"objective.head.mean.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")),
    ],
}
CASES = {"infosam": [], "none": ["infosam.enabled=false"], "vid": ["distill.method=vid"]}


def _parts(extra: list[str]):
    config = load_config(None, ["model.name=tiny", "data.path=unused", "train.cpu=true", *extra])
    try:
        return config, build_parts(config, Accelerator(cpu=True), 10, None)
    finally:
        reset_accelerate_state()


@pytest.mark.parametrize("case", list(CASES))
def test_trainee_keys_and_parameter_order_are_the_committed_ones(case):
    """The trainee's state-dict keys: the student's, then the objective's under its own name (InfoSAM's
    ``infosam.relation.*``, a baseline's ``objective.*``); the optimizer's parameters in the same order, so a
    resume checkpoint's optimizer state (indexed by position) fits."""
    _, parts = _parts(CASES[case])
    trainee, student = parts.step.trainee, parts.student
    keys = list(trainee.state_dict())
    assert keys == [f"student.{k}" for k in student.state_dict()] + OBJECTIVE_KEYS[case]
    trained = [n for n, p in trainee.named_parameters() if p.requires_grad]
    assert (
        trained
        == [f"student.{n}" for n, p in student.named_parameters() if p.requires_grad] + OBJECTIVE_KEYS[case]
    )
    (group,) = parts.step.optimizer.param_groups
    assert [id(p) for p in group["params"]] == [id(p) for p in trainee.parameters() if p.requires_grad]
    assert (parts.relation is not None) == (case == "infosam")


def test_a_run_draws_the_objective_after_the_peft_init_from_the_train_seed():
    """build_parts: the student's PEFT init as make_student alone draws it, then torch.manual_seed(train.seed)
    and the objective (a fresh relation module, or a baseline's learned parts)."""
    config, parts = _parts(["train.seed=7"])
    student = build_configured(config)
    make_student(student, config.peft.methods, config.peft.options)
    for (name, a), (_, b) in zip(
        parts.student.state_dict().items(), student.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    torch.manual_seed(7)
    fresh = RelationModule(student.spec.prompt_embed_dim)
    got = parts.objective.relation.state_dict()
    assert all(torch.equal(got[k], v) for k, v in fresh.state_dict().items())

    config, parts = _parts(["train.seed=7", "distill.method=vid"])
    torch.manual_seed(7)
    vid = build_objective("vid", None, student)
    got = parts.objective.state_dict()
    assert all(torch.equal(got[k], v) for k, v in vid.state_dict().items())


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_synthetic_dataset(root / "train", 2, domain="target")
    dataset = open_dataset(root, split="train", image_size=64)
    return collate([dataset[0], dataset[1]])


def test_the_registry_entry_gives_infosams_terms_bit_for_bit(batch):
    """InfoSAM through the registry (options from the infosam section) returns exactly infosam_terms on the same
    relation module, and the step reports them as it always did: relation, distill, infosam (the weighted total)
    and the relation statistics, with loss = seg + total."""
    config = load_config(None, ["model.name=tiny", "data.path=unused", "infosam.lam=2", "infosam.lam2=0.25"])
    teacher = make_teacher(build_configured(config))
    student = build_configured(config)
    make_student(student, "adapter+decoder", {"adapter": {"init": "torch"}})
    torch.manual_seed(3)
    objective = build_objective("infosam", config.objective_options(), student)
    assert (
        isinstance(objective, InfoSAMLoss) and objective is not None and OBJECTIVES["infosam"] is InfoSAMLoss
    )
    assert objective.weights == InfoSAMWeights(lam=2.0, lam1=1.0, lam2=0.25) and objective.gather is None
    relation = copy.deepcopy(objective.relation)
    prompts = batch_prompts(batch, seed=0, rank=0, epoch=0, index=0)
    t_out = teacher_forward(teacher, batch["image"], prompts, objective=objective)
    s_out = sam_forward(student, batch["image"], **prompts)
    got = objective(t_out, s_out, batch["mask"])
    want = infosam_terms(relation, t_out, s_out, InfoSAMWeights(lam=2.0, lam2=0.25))
    assert list(got) == list(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    terms = step_losses(s_out, t_out, batch["mask"], objective=objective)
    assert list(terms) == ["loss", "seg", "relation", "distill", "infosam", *RELATION_STATS]
    assert torch.equal(terms["infosam"], want["total"]) and torch.equal(terms["distill"], want["distill"])
    assert torch.equal(terms["loss"], terms["seg"] + want["total"])


def test_infosam_options_and_capabilities(tmp_path):
    assert METHODS[0] == "infosam" and METHODS[-1] == "none" and "none" not in OBJECTIVES
    cls = OBJECTIVES["infosam"]
    assert (cls.min_batch, cls.options_section, cls.module_name, cls.keeps_resume_state) == (
        2,
        "infosam",
        "infosam",
        False,
    )
    assert cls.stats == RELATION_STATS and not cls.needs_logits and not cls.needs_features
    base = ["model.name=tiny", "data.path=unused"]
    assert load_config(None, base).min_batch() == 2
    assert load_config(None, [*base, "infosam.enabled=false"]).objective_options() is None
    assert load_config(None, [*base, "infosam.global_batch=true"]).objective_options().global_batch
    student = build_configured(load_config(None, base))
    assert build_objective("infosam", {"global_batch": True}, student).gather is all_gather_rows
    torch.manual_seed(0)
    trained = RelationModule(32)
    trained.save(tmp_path / "relation.safetensors")
    config = load_config(None, [*base, f"infosam.frozen_relation={tmp_path / 'relation.safetensors'}"])
    frozen = build_objective("infosam", config.objective_options(), student)
    assert frozen.saved_module() is None and not any(p.requires_grad for p in frozen.parameters())
    assert all(
        torch.equal(a, b)
        for a, b in zip(frozen.relation.state_dict().values(), trained.state_dict().values(), strict=True)
    )
    fresh = build_objective("infosam", None, student)
    assert fresh.saved_module() is fresh.relation
    fresh.load_saved(tmp_path / "relation.safetensors")
    assert all(
        torch.equal(a, b)
        for a, b in zip(fresh.relation.state_dict().values(), trained.state_dict().values(), strict=True)
    )
    with pytest.raises(
        ConfigError, match=r"takes no distill.options \(its options are infosam.lam, infosam.lam1"
    ):
        load_config(None, [*base, "distill.options={infosam: {lam: 2}}"])
    with pytest.raises(ConfigError, match="train.batch_size must be >= 2 when infosam.enabled is true"):
        load_config(None, [*base, "train.batch_size=1"])


def test_peft_capabilities_come_from_the_peft_registry():
    config = load_config(None, ["model.name=tiny", "data.path=unused", "peft.methods=conv_lora+decoder"])
    student = build_configured(config)
    make_student(student, config.peft.methods, config.peft.options)
    layers = aux_loss_modules(student)
    assert layers and layers == [m for m in student.modules() if isinstance(m, ConvLoraLinear)]
    assert prefix_cache_conflict("adapter+decoder") is None
    assert prefix_cache_conflict("hq_token") == "hq_token fuses an early encoder block's output"


@pytest.mark.parametrize(
    "path", ["step.py", *(f"train/{p.name}" for p in sorted((SRC / "train").glob("*.py"))), "config/root.py"]
)
def test_the_step_trainer_and_config_rules_name_no_peft_method(path):
    """The step, the trainer and the config's cross-section rules ask the PEFT registry (a method's aux loss, its
    student-prefix conflict) and the distillation registry; they name no PEFT method."""
    text = (SRC / path).read_text(encoding="utf-8")
    for word in ("conv_lora", "ConvLora", "hq_token", "HQToken", "peft.conv_lora", "peft.hq_token"):
        assert word not in text, f"{path} names {word}"
