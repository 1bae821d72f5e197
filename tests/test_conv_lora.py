"""Conv-LoRA (``conv_lora``): the mixture's load-balancing loss by hand, its routing, and the loss reaching the
training step (the gate trains); the contract matrix itself is tests/test_peft.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from infosam.model import build_base, make_student
from infosam.peft.base import collect_aux_loss
from infosam.peft.conv_lora import ConvLoraLinear, ScaleExpert, cv_squared
from infosam.step import Trainee


def test_cv_squared_by_hand():
    assert cv_squared(torch.tensor([1.0, 3.0])).item() == pytest.approx(2.0 / 4.0)  # var 2 (unbiased), mean 2
    assert cv_squared(torch.tensor([2.0, 2.0, 2.0])).item() == 0.0
    assert cv_squared(torch.tensor([5.0])).item() == 0.0


def test_balancing_loss_and_routing_by_hand():
    torch.manual_seed(0)
    layer = ConvLoraLinear(nn.Linear(6, 6), rank=2, alpha=2.0, experts=3, top_k=1, balance_weight=0.5)
    x = torch.randn(4, 3, 3, 6)
    out = layer(x)
    assert out.shape == (4, 3, 3, 6)
    torch.testing.assert_close(out, layer.base_layer(x))  # B starts at zero: the pretrained layer
    z = layer.lora_A(x).permute(0, 3, 1, 2)
    probs = torch.softmax(layer.gate(z.mean(dim=(2, 3))), dim=-1)
    load = torch.zeros(3).index_add_(0, probs.argmax(-1), torch.ones(4))
    expected = 0.5 * (cv_squared(probs.sum(0)) + cv_squared(load))
    assert collect_aux_loss([layer]).item() == pytest.approx(expected.item(), rel=1e-6)
    assert layer.aux_loss is None  # collected once
    nn.init.ones_(layer.lora_B.weight)
    chosen = probs.argmax(-1)
    delta = layer(x) - layer.base_layer(x)
    for b in range(4):  # top-1: each sample goes through its own expert with gate 1
        ref = layer.experts[int(chosen[b])](z[b : b + 1]).permute(0, 2, 3, 1) @ layer.lora_B.weight.T
        torch.testing.assert_close(delta[b : b + 1], ref, atol=1e-5, rtol=1e-5)


def test_scale_expert_keeps_the_map_size():
    assert ScaleExpert(2, 3)(torch.randn(1, 2, 5, 5)).shape == (1, 2, 5, 5)


@pytest.mark.parametrize("family", ["tiny", "tiny_tinyvit"])
def test_balancing_loss_reaches_the_step_and_the_gate_trains(family):
    student = build_base(family, seed=0)
    make_student(student, "conv_lora+decoder")
    trainee = Trainee(student, None)
    assert len(trainee.aux_modules) == sum(isinstance(m, ConvLoraLinear) for m in student.modules()) > 0
    size = student.image_encoder.img_size
    images, masks = torch.randn(2, 3, size, size), torch.zeros(2, 1, size, size)
    masks[:, :, 8:24, 8:24] = 1
    terms = trainee(images, masks, {"boxes": torch.tensor([[8.0, 8.0, 24.0, 24.0]] * 2)}, None)
    assert terms["loss"].item() == pytest.approx((terms["seg"] + terms["balance"]).item(), rel=1e-6)
    terms["loss"].backward()
    gates = [m.gate.weight.grad for m in trainee.aux_modules]
    assert all(g is not None for g in gates) and any(g.abs().sum() > 0 for g in gates)


def test_plain_trainee_has_no_aux_modules():
    student = build_base("tiny", seed=0)
    make_student(student, "adapter+decoder")
    assert Trainee(student, None).aux_modules == []


@pytest.mark.usefixtures("one_thread")
def test_balancing_loss_is_a_metrics_csv_column(tmp_path):
    """The load-balancing term is part of the step's loss, so metrics.csv has it (column ``balance``, as in
    TensorBoard): was dropped (the log's fixed columns), leaving a loss that was not the sum of the logged terms.
    A run without Conv-LoRA keeps its columns."""
    import csv
    import math

    from infosam.cli import main
    from infosam.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data" / "train", 4, domain="target")
    write_synthetic_dataset(tmp_path / "data" / "test", 2, domain="target", start=100)
    headers = {}
    for methods in ("conv_lora+decoder", "decoder"):
        run = tmp_path / methods
        args = ["model.name=tiny", f"data.path={tmp_path / 'data'}", "train.batch_size=2", "train.epochs=1"]
        args += ["train.cpu=true", "train.log_every_steps=1", "eval.last_epochs=0", f"peft.methods={methods}"]
        argv = ["train", *[a for x in args for a in ("--set", x)], "--no-progress", "--output", str(run)]
        assert main(argv) == 0
        with open(run / "metrics.csv", newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        headers[methods] = reader.fieldnames
        assert [r["step"] for r in rows] == ["1", "2"]
        for row in rows if methods != "decoder" else []:
            balance = float(row["balance"])
            assert math.isfinite(balance) and balance >= 0
            terms = float(row["seg"]) + float(row["infosam"]) + balance
            assert float(row["loss"]) == pytest.approx(terms, rel=1e-5)
    stats = ["s_rt", "s_rs", "i_rt_rs", "rt_cosine", "rt_mean", "rt_std", "rt_min", "rt_max"]  # InfoSAM on
    assert headers["conv_lora+decoder"] == [
        "step", "epoch", "loss", "seg", "relation", "distill", "infosam", "balance", "lr", "images_per_s", *stats
    ]  # fmt: skip
    assert headers["decoder"] == [h for h in headers["conv_lora+decoder"] if h != "balance"]
