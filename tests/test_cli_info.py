"""``infosam info``: parameter table per SAM part, built on the meta device (no checkpoint, no weights)."""

from __future__ import annotations

import json

import torch

from infosam.cli import main
from infosam.distill.relation import RelationModule
from infosam.peft import apply_peft, count_parameters
from infosam.sam.build import build_sam


def test_tiny_table_matches_the_python_api(capsys):
    assert main(["info", "--model", "tiny", "--peft", "adapter+decoder"]) == 0
    out = capsys.readouterr().out
    model = build_sam("tiny")
    apply_peft(model, "adapter+decoder")
    table = count_parameters(model)
    relation = sum(p.numel() for p in RelationModule(32).parameters())
    assert "SAM tiny, PEFT adapter+decoder" in out
    assert "init=zero" in out
    for label, key in [
        ("image encoder", "image_encoder"),
        ("mask decoder", "mask_decoder"),
        ("total", "total"),
    ]:
        line = next(line for line in out.splitlines() if line.startswith(label))
        assert f"{table[key]['all']:,}" in line and f"{table[key]['trainable']:,}" in line
    assert f"{relation:,}" in next(line for line in out.splitlines() if line.startswith("relation module"))


def test_vit_b_paper_student_counts(capsys):
    assert (
        main(["info", "--model", "vit_b", "--peft", "adapter+decoder", "--set-peft", "adapter.init=torch"])
        == 0
    )
    out = capsys.readouterr().out
    assert "99,652,912" in out and "10,006,500" in out and "init=torch" in out
    with torch.device("meta"):
        relation = sum(p.numel() for p in RelationModule(256).parameters())
    assert f"{relation:,}" in out


def test_json_output(capsys):
    assert main(["info", "--model", "tiny", "--peft", "lora", "--set-peft", "lora.r=2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["peft"]["options"]["lora"]["r"] == 2
    assert data["parameters"]["total"]["trainable"] == 4 * 2 * (32 + 96)  # 4 blocks, A (2x32) + B (96x2)


def test_user_errors_exit_2_with_the_valid_choices(capsys):
    assert main(["info", "--model", "tiny", "--peft", "adapter+prefix"]) == 2
    assert "known methods: decoder, bitfit, adapter, adaptformer, lora" in capsys.readouterr().err
    assert main(["info", "--model", "tiny", "--set-peft", "adapter.size=3"]) == 2
    assert "valid options: first_block, ratio, init, train_norms" in capsys.readouterr().err


def test_litemedsam_counts_match_its_release(capsys):
    # LiteMedSAM's quoted sizes count every tensor of its weights file (BatchNorm statistics included).
    assert main(["info", "--model", "litemedsam", "--peft", "decoder"]) == 0
    out = capsys.readouterr().out
    lines = {line[:18].strip(): line.split() for line in out.splitlines()}
    assert lines["image encoder"][-1] == "5,736,623" and lines["image encoder"][-3] == "5,726,740"
    assert lines["prompt encoder"][-1] == "6,476"
    assert lines["mask decoder"][-3:] == ["4,058,340", "4,058,340", "4,058,340"]
    assert lines["total (SAM)"][-1] == "9,801,439"
