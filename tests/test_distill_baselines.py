"""The baseline distillation objectives of the registry (``distill.method``): each against values computed by
hand or by NumPy, and the gradient routing of each (the teacher's tensors get none, the student's and the
objective's learned parts do)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from infosam.distill.features import as_map, capture_features, feature_taps
from infosam.distill.ibd import compression
from infosam.distill.logit import logit_kd
from infosam.distill.mobilesam import embedding_mse
from infosam.distill.pkd import pkd_loss
from infosam.distill.pkt import pkt_loss
from infosam.distill.registry import METHODS, OBJECTIVES, build_objective, objective_options
from infosam.distill.reviewkd import hcl
from infosam.distill.semckd import semckd_loss
from infosam.distill.tinysam import hardness, mask_iou
from infosam.distill.vid import vid_nll
from infosam.model import build_base

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _rand(*shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape)).float()


# --------------------------------------------------------------------------------------------- the formulas


def test_logit_kd_by_hand():
    # teacher p = 0.75 (logit ln 3), student p = 0.5: KL = 0.75 ln 1.5 + 0.25 ln 0.5
    t, s = torch.full((1, 1, 2, 2), math.log(3)), torch.zeros(1, 1, 2, 2)
    assert logit_kd(t, s).item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-6)
    assert logit_kd(t, t).item() == pytest.approx(0.0, abs=1e-7)
    # T = 2: p_t = sigmoid(ln(3) / 2) = sqrt3 / (1 + sqrt3), times T^2
    p = math.sqrt(3) / (1 + math.sqrt(3))
    hand = 4 * (p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p)))
    assert logit_kd(t, s, temperature=2.0).item() == pytest.approx(hand, rel=1e-5)


def test_logit_kd_matches_numpy():
    t, s = _rand(2, 1, 8, 8, seed=1) * 3, _rand(2, 1, 8, 8, seed=2) * 3
    pt, ps = 1 / (1 + np.exp(-t.numpy() / 1.5)), 1 / (1 + np.exp(-s.numpy() / 1.5))
    ref = 1.5**2 * np.mean(pt * np.log(pt / ps) + (1 - pt) * np.log((1 - pt) / (1 - ps)))
    assert logit_kd(t, s, 1.5).item() == pytest.approx(ref, rel=1e-4)


def test_mobilesam_mse_by_hand():
    assert embedding_mse(torch.zeros(2, 4, 3, 3), torch.full((2, 4, 3, 3), 2.0)).item() == 4.0


def test_pkd_matches_numpy_and_ignores_affine_channel_changes():
    t, s = _rand(3, 4, 5, 5, seed=3), _rand(3, 4, 5, 5, seed=4)

    def norm(x):
        c = x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1)
        return (c - c.mean(1, keepdims=True)) / (c.std(1, ddof=1, keepdims=True) + 1e-6)

    ref = np.mean((norm(s.numpy()) - norm(t.numpy())) ** 2) / 2
    assert pkd_loss(t, s).item() == pytest.approx(ref, rel=1e-5)
    scale = torch.tensor([2.0, 0.5, 3.0, 1.0]).view(1, 4, 1, 1)
    assert pkd_loss(t, t * scale + 7).item() == pytest.approx(0.0, abs=1e-6)


def test_pkt_matches_numpy_and_is_zero_for_identical_kernels():
    t, s = _rand(4, 3, 4, 4, seed=5), _rand(4, 3, 4, 4, seed=6)

    def dist(x):
        r = x.reshape(x.shape[0], -1)
        r = r / np.linalg.norm(r, axis=1, keepdims=True)
        k = (r @ r.T + 1) / 2
        return k / k.sum(1, keepdims=True)

    pt, ps = dist(t.numpy()), dist(s.numpy())
    ref = np.mean(pt * np.log((pt + 1e-7) / (ps + 1e-7)))
    assert pkt_loss(t, s).item() == pytest.approx(ref, rel=1e-4)
    assert pkt_loss(t, 3 * t).item() == pytest.approx(0.0, abs=1e-6)  # cosine kernels ignore scale


def test_vid_nll_matches_numpy_and_starts_at_the_papers_variance():
    t, mu = _rand(2, 3, 4, 4, seed=7), _rand(2, 3, 4, 4, seed=8)
    var = torch.tensor([0.5, 1.0, 5.0])
    ref = np.mean(
        (t.numpy() - mu.numpy()) ** 2 / (2 * var.numpy()[None, :, None, None])
        + 0.5 * np.log(var.numpy())[None, :, None, None]
    )
    assert vid_nll(t, mu, var).item() == pytest.approx(ref, rel=1e-5)
    model = build_base("tiny")
    vid = build_objective("vid", {"init_variance": 5.0}, model)
    torch.testing.assert_close(vid.head.variance(), torch.full((32,), 5.0))


def test_ibd_is_vid_likelihood_plus_beta_compression():
    model = build_base("tiny")
    torch.manual_seed(0)
    ibd = build_objective("ibd", {"beta": 0.5}, model)
    t, s = _view(model, seed=9), _view(model, seed=10)
    terms = ibd(t, s, torch.zeros(2, 1, 64, 64))
    nll = ibd.head.nll(t.image_embeddings, s.image_embeddings)
    assert compression(torch.full((1, 2), 2.0)).item() == 2.0  # mean(s^2) / 2
    assert terms["total"].item() == pytest.approx(
        (nll + 0.5 * compression(s.image_embeddings)).item(), rel=1e-6
    )


def test_semckd_loss_by_hand():
    t = [torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)]
    projected = [[torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2)], [torch.zeros(1, 1, 2, 2)] * 2]
    # student level 0: errors (1, 0); level 1: errors (0, 1); attention picks (0.25, 0.75) and (0.5, 0.5)
    attention = torch.tensor([[[0.25, 0.75], [0.5, 0.5]]])
    assert semckd_loss(t, projected, attention).item() == pytest.approx((0.25 + 0.5) / 2)


def test_reviewkd_hcl_by_hand():
    checker = (torch.arange(8).view(1, 8) + torch.arange(8).view(8, 1)) % 2 * 2 - 1.0  # +-1, pools to 0
    out = checker.view(1, 1, 8, 8)
    # full size MSE 1, pooled to 4, 2, 1 all 0: 1 / (1 + 0.5 + 0.25 + 0.125)
    assert hcl(out, torch.zeros_like(out)).item() == pytest.approx(1 / 1.875)
    assert hcl(torch.ones(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)).item() == pytest.approx(1.0)


def test_tinysam_hardness_by_hand():
    truth = torch.zeros(2, 1, 4, 4)
    truth[:, :, :2] = 1  # top half
    teacher = torch.where(truth > 0, 5.0, -5.0)  # IoU 1
    student = teacher.clone()
    student[0, :, :, 2:] = -5.0  # image 0: half the mask, IoU 0.5
    assert mask_iou(student, truth).tolist() == [0.5, 1.0]
    assert mask_iou(torch.full((1, 1, 2, 2), -1.0), torch.zeros(1, 1, 2, 2)).tolist() == [1.0]
    h = hardness(teacher, student, truth)
    torch.testing.assert_close(h, torch.sigmoid(torch.tensor([1 / (0.5 + 1e-6) - 1, 1 / (1 + 1e-6) - 1])))


def test_tinysam_total_by_hand():
    model = build_base("tiny")
    obj = build_objective("tinysam", {"alpha": 1.0, "beta": 2.0, "gamma": 3.0}, model)
    t, s = _view(model, seed=11), _view(model, seed=12)
    masks = torch.zeros(2, 1, 64, 64)
    terms = obj(t, s, masks)
    h = hardness(t.low_res_logits, s.low_res_logits, masks)
    out = (h * (s.low_res_logits - t.low_res_logits).abs().flatten(1).mean(1)).mean()
    emb = (s.image_embeddings - t.image_embeddings).abs().mean()
    tok = (s.mask_tokens - t.mask_tokens).abs().mean()
    assert terms["total"].item() == pytest.approx((emb + 2 * tok + 3 * out).item(), rel=1e-6)


# --------------------------------------------------------------------------------------------- routing, registry


def _view(model, seed: int, grad: bool = False):
    """Teacher- or student-like outputs of a tiny SAM with random values (features at its taps' shapes)."""
    gen = torch.Generator().manual_seed(seed)
    c = model.spec.prompt_embed_dim
    side = model.image_encoder.img_size // 16
    x = {
        "image_embeddings": torch.randn(2, c, side, side, generator=gen),
        "mask_tokens": torch.randn(2, 1, c, generator=gen),
        "low_res_logits": torch.randn(2, 1, 4 * side, 4 * side, generator=gen),
    }
    x = {k: v.requires_grad_(grad) for k, v in x.items()}
    with capture_features(model, feature_taps(model)) as features, torch.no_grad():
        model.image_encoder(
            torch.randn(2, 3, model.image_encoder.img_size, model.image_encoder.img_size, generator=gen)
        )
    x["features"] = [f.clone().requires_grad_(grad) for f in features]
    return SimpleNamespace(**x)


@pytest.mark.parametrize("family", ["tiny", "tiny_tinyvit"])
@pytest.mark.parametrize("method", list(OBJECTIVES))
def test_gradient_routing(method, family):
    """The teacher's tensors receive no gradient whatever their requires_grad; the student's tensors that the
    objective reads do, and so does every learned part of the objective."""
    model = build_base(family)
    torch.manual_seed(0)
    objective = build_objective(method, None, model)
    teacher, student = _view(model, seed=1, grad=True), _view(model, seed=2, grad=True)
    masks = (torch.rand(2, 1, model.image_encoder.img_size, model.image_encoder.img_size) > 0.5).float()
    terms = objective(teacher, student, masks)
    assert terms["total"].dim() == 0 and torch.isfinite(terms["total"])
    terms["total"].backward()
    for name, value in vars(teacher).items():
        for tensor in value if isinstance(value, list) else [value]:
            assert tensor.grad is None, f"teacher {name} got a gradient"
    reads = {
        "logit": ["low_res_logits"],
        "tinysam": ["image_embeddings", "mask_tokens", "low_res_logits"],
        "semckd": ["features"],
        "reviewkd": ["features"],
    }.get(method, ["image_embeddings"])
    for name in reads:
        value = getattr(student, name)
        for tensor in value if isinstance(value, list) else [value]:
            assert tensor.grad is not None and tensor.grad.abs().sum() > 0, f"student {name} got no gradient"
    for name, p in objective.named_parameters():
        assert p.grad is not None, f"{method}'s learned {name} got no gradient"


def test_registry_names_and_options():
    assert METHODS == (
        "infosam",
        "logit",
        "pkd",
        "pkt",
        "vid",
        "ibd",
        "semckd",
        "reviewkd",
        "mobilesam",
        "tinysam",
        "none",
    )
    assert objective_options("logit", {"temperature": 2}).temperature == 2.0
    with pytest.raises(ValueError, match="valid options: weight, temperature"):
        objective_options("logit", {"tau": 2})
    with pytest.raises(ValueError, match=">= 0"):
        objective_options("pkt", {"weight": -1})


def test_feature_taps_and_scoped_hooks():
    vit, tinyvit = build_base("tiny"), build_base("tiny_tinyvit")
    assert feature_taps(vit) == (0, 1, 2, 3)
    assert feature_taps(tinyvit) == (0, 3, 4)  # the last block of each stage 1..3
    image = torch.zeros(1, 3, 64, 64)
    with capture_features(vit, (1, 3)) as features:
        vit.image_encoder(image)
    assert [tuple(f.shape) for f in features] == [(1, 32, 8, 8)] * 2
    assert not any(b._forward_hooks for b in vit.image_encoder.blocks)  # the hooks live only inside the block
    assert as_map(torch.arange(8.0).view(1, 4, 2)).shape == (1, 2, 2, 2)
