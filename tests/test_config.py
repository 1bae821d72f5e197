"""Config: defaults, YAML + inherit, dotted overrides, validation messages that name the option, round trip."""

from __future__ import annotations

import re

import pytest

from infosam.config import Config, ConfigError, apply_overrides, config_to_dict, load_config, save_config


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_follow_the_paper():
    c = Config()
    assert (c.train.lr, c.train.min_lr, c.train.batch_size, c.train.epochs, c.train.seed) == (
        2e-4,
        2e-5,
        4,
        10,
        42,
    )
    assert (c.infosam.lam, c.infosam.lam1, c.infosam.lam2) == (1.0, 1.0, 0.5)
    assert c.peft.methods == "adapter+decoder" and c.train.seg_loss == "structure"
    assert c.eval_epochs() == [6, 7, 8, 9, 10]


def test_yaml_inherit_and_overrides(tmp_path):
    _write(tmp_path / "base.yaml", "train:\n  lr: 2e-4\n  epochs: 10\nmodel:\n  name: tiny\n")
    child = _write(
        tmp_path / "child.yaml", "inherit: base.yaml\ndata:\n  path: /data\ntrain:\n  epochs: 20\n"
    )
    c = load_config(
        child, ["train.lr=1e-4", "infosam.enabled=false", "peft.options={adapter: {init: torch}}"]
    )
    assert c.model.name == "tiny" and c.train.epochs == 20 and c.train.lr == 1e-4  # '1e-4' parsed as a number
    assert c.infosam.enabled is False and c.peft.options == {"adapter": {"init": "torch"}}


def test_resolved_config_round_trips(tmp_path):
    c = load_config(None, ["data.path=/x", "eval.epochs=[1, 3]", "train.grad_clip=1.0"])
    save_config(c, tmp_path / "config.yaml")
    assert config_to_dict(load_config(tmp_path / "config.yaml")) == config_to_dict(c)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lrr=1"], "unknown option train.lrr"),
        (["trian.lr=1"], "unknown option trian"),
        (["train.batch_size=1"], "train.batch_size must be >= 2 when infosam.enabled is true"),
        (["train.precision=fp8"], "train.precision must be one of no, fp16, bf16"),
        (["train.lr=fast"], "train.lr must be a number"),
        (["train.epochs=2.5"], "train.epochs must be an integer"),
        (["train.min_lr=1"], "train.min_lr must be between 0 and train.lr"),
        (["model.name=vit_x"], "model.name must be one of"),
        (["peft.methods=adapter+dora"], "peft.methods"),
        (["eval.epochs=[11]"], "eval.epochs must lie in 1..train.epochs"),
        (["train.seg_loss=dice"], "train.seg_loss must be one of structure"),
        (["data.path=''"], "data.path is required"),
        (["infosam.frozen_relation=/no/such.safetensors"], "infosam.frozen_relation: file not found"),
        (["train.lr=inf"], "train.lr must be a finite number, got 'inf'"),
        (["train.lr=.inf"], "train.lr must be a finite number, got inf"),
        (["train.min_lr=nan"], "train.min_lr must be a finite number, got 'nan'"),
        (["train.grad_clip=-.inf"], "train.grad_clip must be a finite number"),
        (["infosam.lam=.nan"], "infosam.lam must be a finite number"),
        (["infosam.lam2=-1"], "infosam.lam2 must be a number >= 0, got -1.0"),
        (["model.attention=flash"], "model.attention must be one of fold, mask, meta"),
        (["eval.prompt=mask"], "eval.prompt must be one of box, points"),
        (["train.prompt=points"], "train.prompt must be one of mixed, box; got 'points'"),
        (["peft.methods=lora", "peft.options={lora: {rank: 4}}"], "['rank'] for PEFT method 'lora'"),
    ],
)
def test_invalid_options_are_named(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, ["data.path=/x", *overrides])


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.path=/x", "train.lrr=1"])
    assert "train.lr," in str(err.value) and "train.batch_size" in str(err.value)


def test_baseline_allows_batch_of_one():
    assert (
        load_config(None, ["data.path=/x", "infosam.enabled=false", "train.batch_size=1"]).train.batch_size
        == 1
    )


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="must look like"):
        apply_overrides({}, ["train.lr"])
    with pytest.raises(ConfigError, match="empty option name"):
        apply_overrides({}, ["train..lr=1"])


def test_unquoted_no_precision_is_accepted():
    assert load_config(None, ["data.path=/x", "train.precision=no"]).train.precision == "no"


def test_every_option_is_documented_in_train_help(capsys):
    import dataclasses

    from infosam.cli import main
    from infosam.config import Config, option_docs

    expected = []
    for section in dataclasses.fields(Config):
        value = getattr(Config(), section.name)
        if dataclasses.is_dataclass(value):
            expected += [f"{section.name}.{f.name}" for f in dataclasses.fields(value)]
        else:
            expected.append(section.name)
    rows = option_docs()
    assert [key for key, _, _ in rows] == expected
    assert all(doc for _, _, doc in rows), [key for key, _, doc in rows if not doc]
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for key in expected:
        assert f"  {key} [" in out, key


def test_sections_check_themselves_with_their_owners_choices():
    from infosam.config import EvalConfig, InfoSAMConfig, ModelConfig, PeftConfig, TrainConfig
    from infosam.data.prompts import PROMPT_MODES
    from infosam.distill.loss import InfoSAMWeights
    from infosam.losses import SEGMENTATION_LOSSES
    from infosam.sam.specs import SPECS

    for name in SPECS:
        assert ModelConfig(name=name).name == name
    for loss in SEGMENTATION_LOSSES:
        assert TrainConfig(seg_loss=loss).seg_loss == loss
    for mode in PROMPT_MODES:
        assert EvalConfig(prompt=mode).prompt == mode
    with pytest.raises(ConfigError, match=re.escape("train.lr must be > 0, got 0.0")):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError, match="train.epochs must be an integer"):
        TrainConfig(epochs="3")
    assert TrainConfig(lr="2e-4").lr == 2e-4  # YAML 1.1 reads 2e-4 as a string
    with pytest.raises(ConfigError, match=r"peft\.methods / peft\.options: unknown PEFT method 'dora'"):
        PeftConfig(methods="dora")
    assert PeftConfig(methods="lora", options={"lora": {"r": 8}}).options == {"lora": {"r": 8}}
    weights = InfoSAMConfig(lam=2.0, lam1=0.5, lam2=0.25).weights
    assert weights == InfoSAMWeights(lam=2.0, lam1=0.5, lam2=0.25)


def test_validate_catches_fields_set_after_construction():
    config = load_config(None, ["data.path=/x"])
    config.train.lr = float("inf")
    with pytest.raises(ConfigError, match="train.lr must be a finite number"):
        config.validate()


@pytest.mark.parametrize("option", ["lam=0.7", "lam1=2", "lam2=1.0"])
def test_infosam_weights_beside_a_baseline_are_refused(option):
    """An explicit infosam.lam* beside a baseline would be ignored without a word: refused, naming the option
    and the baseline's own weight."""
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.path=/x", "distill.method=pkt", f"infosam.{option}"])
    message = str(err.value)
    assert f"infosam.{option.split('=')[0]}=" in message
    assert "only weigh distill.method=infosam" in message
    assert "distill.options.pkt.weight" in message


def test_default_infosam_weights_stay_valid_everywhere():
    load_config(None, ["data.path=/x", "distill.method=pkt"])  # the defaults, as every baseline config has
    load_config(
        None, ["data.path=/x", "distill.method=none", "infosam.lam2=1.0"]
    )  # plain PEFT: not a baseline
    load_config(None, ["data.path=/x", "infosam.enabled=false"])
    load_config(None, ["data.path=/x", "infosam.lam2=1.0"])  # infosam's own weights
