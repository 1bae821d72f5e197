"""``infosam.load``: every kind of source through the one door, options checked against the source, the run's
config read once, the attention chosen in one place, random test weights drawn from the config's own seed."""

from __future__ import annotations

import pytest
import torch

from infosam.config import Config, ModelConfig
from infosam.export import export_run
from infosam.load import SourceError, open_model, resolve
from infosam.model import build_base, build_configured
from infosam.runs import RunDir
from infosam.sam.tinyvit_attention import SdpaTinyViTAttention
from test_export import make_run


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_each_kind_of_source_is_recognised_and_opened(tmp_path, monkeypatch):
    run = make_run(tmp_path, "lora+decoder")
    exported = export_run(run, "infosam", tmp_path / "s.safetensors")
    merged = export_run(run, "sam", tmp_path / "m.pth")
    reads = []
    real_read = RunDir.read_config
    monkeypatch.setattr(RunDir, "read_config", lambda self: reads.append(self.path) or real_read(self))

    opened = open_model(run, teacher=True)
    assert opened.kind == "run" and opened.is_student and len(reads) == 1  # one read serves model and teacher
    assert opened.description["run"] == str(run) and opened.description["weights"].endswith(
        "peft.safetensors"
    )
    assert _same(opened.teacher, build_configured(opened.config))  # the base it was trained from
    assert not _same(opened.model, opened.teacher)

    from_file = open_model(exported, teacher=True)
    assert from_file.kind == "export" and _same(from_file.model, opened.model)
    assert _same(from_file.teacher, opened.teacher)
    plain = open_model(merged)
    assert plain.kind == "checkpoint" and plain.description == {"model": "tiny", "checkpoint": str(merged)}
    assert open_model("tiny", checkpoint=merged).kind == "name"
    assert _same(open_model("tiny", checkpoint=merged).model, plain.model)
    assert open_model(ModelConfig(name="tiny")).kind == "config"
    model = build_base("tiny")
    assert open_model(model).model is model


def test_every_kind_of_source_has_one_opener():
    from infosam.load import KINDS
    from infosam.load.base import OPENERS

    assert sorted(OPENERS) == sorted(KINDS)


def test_options_that_do_not_fit_the_source_are_refused_naming_both(tmp_path):
    run = make_run(tmp_path, "decoder")
    exported = export_run(run, "infosam", tmp_path / "s.safetensors")
    with pytest.raises(
        SourceError, match=r"s\.safetensors is a self-contained export: checkpoint does not apply"
    ):
        resolve(exported, checkpoint=tmp_path / "x.pth")
    with pytest.raises(SourceError, match=r"run-decoder is a run folder: image_size does not apply"):
        resolve(run, image_size=32)
    with pytest.raises(SourceError, match="weights does not apply"):
        resolve("tiny", weights=tmp_path / "peft.safetensors")
    with pytest.raises(SourceError, match="a checkpoint is required for model vit_b"):
        resolve("vit_b")
    with pytest.raises(FileNotFoundError, match="nope is neither a run folder"):
        resolve(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="empty is a folder but not a run folder"):
        resolve(tmp_path / "empty")


def test_random_test_weights_come_from_the_configs_own_seed():
    def config(seed: int) -> Config:
        c = Config(model=ModelConfig(name="tiny"))
        c.train.seed = seed
        return c

    one, two = open_model(config(1)).model, open_model(config(2)).model
    assert _same(one, build_configured(config(1)))  # the teacher a run of this config had
    assert not _same(one, two)
    assert _same(open_model(ModelConfig(name="tiny")).model, build_base("tiny", seed=0))


def test_attention_is_chosen_by_the_source_unless_asked(tmp_path):
    def sdpa(model) -> bool:
        return any(isinstance(m, SdpaTinyViTAttention) for m in model.modules())

    assert sdpa(open_model("tiny_tinyvit").model)
    assert not sdpa(open_model("tiny_tinyvit", attention="meta").model)
    meta = Config(model=ModelConfig(name="tiny_tinyvit", attention="meta"))
    assert not sdpa(open_model(meta).model)
    run = make_run(tmp_path, "decoder", name="tiny_tinyvit")
    assert sdpa(open_model(run).model) and not sdpa(open_model(run, attention="meta").model)


def test_weights_may_name_a_weights_folder(tmp_path):
    """``--weights RUN/weights/final`` (the folder, as runs list it) loads its peft.safetensors, checked against
    the folder's manifest, like the file itself."""
    import shutil

    from infosam.checkpoints import CheckpointError, write_manifest

    run = make_run(tmp_path, "lora")
    folder = run / "weights" / "final"
    write_manifest(folder)
    by_file = open_model(run, weights=folder / "peft.safetensors")
    by_folder = open_model(run, weights=folder)
    assert _same(by_folder.model, by_file.model)
    assert by_folder.description["weights"].endswith("peft.safetensors")

    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    with open(damaged / "peft.safetensors", "r+b") as f:  # same size, other bytes
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        open_model(run, weights=damaged)

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty is a folder without peft\.safetensors"):
        open_model(run, weights=tmp_path / "empty")
