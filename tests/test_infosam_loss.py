"""The InfoSAM objectives: pinned values against NumPy, gradient routing, weights, batch-size rules."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from infosam.distill.infosam import InfoSAMLoss
from infosam.distill.loss import RELATION_STATS, InfoSAMWeights, distill_loss, infosam_terms
from infosam.distill.relation import RelationModule
from numpy_reference import relation_rows

C = 8


# ---- an independent float64 NumPy implementation of method.md sections 2-4 ----
def _np_gram(x):
    x = x.reshape(x.shape[0], -1)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    k = x @ x.T
    return k / np.trace(k)


def _np_log2_fro2(a):
    return math.log2(float((a * a).sum()))


def _np_terms(p, t_emb, t_tok, s_emb, s_tok):
    r_t, r_s = relation_rows(p, t_emb, t_tok), relation_rows(p, s_emb, s_tok)
    g_i, g_m, g_rt, g_rs = _np_gram(t_emb), _np_gram(t_tok), _np_gram(r_t), _np_gram(r_s)
    g_imr = g_i * g_m * g_rt
    g_imr = g_imr / np.trace(g_imr)
    g_ts = g_rt * g_rs
    g_ts = g_ts / np.trace(g_ts)
    l_r = -_np_log2_fro2(g_rt) + _np_log2_fro2(g_imr)
    l_d = _np_log2_fro2(g_rt) + _np_log2_fro2(g_rs) - _np_log2_fro2(g_ts)
    return l_r, l_d


# ---- fixtures ----
def _relation(seed: int = 0) -> RelationModule:
    torch.manual_seed(seed)
    module = RelationModule(C)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return module


def _features(b: int, seed: int, requires_grad: bool = True) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, C, 3, 3, generator=g) + 0.5 * torch.randn(1, C, 3, 3, generator=g)
    tok = torch.randn(b, 1, C, generator=g) + torch.randn(1, 1, C, generator=g)
    return SimpleNamespace(
        image_embeddings=emb.requires_grad_(requires_grad), mask_tokens=tok.requires_grad_(requires_grad)
    )


def _np_inputs(relation, teacher, student):
    p = {k: v.detach().double().numpy() for k, v in relation.state_dict().items()}
    arrays = [t.detach().double().numpy() for t in (teacher.image_embeddings, teacher.mask_tokens)]
    arrays += [t.detach().double().numpy() for t in (student.image_embeddings, student.mask_tokens)]
    return p, *arrays


# ---- tests ----
@pytest.mark.parametrize("b,seed", [(2, 0), (4, 1), (5, 2)])
def test_terms_equal_independent_numpy(b, seed):
    relation = _relation(seed)
    teacher, student = _features(b, 10 + seed), _features(b, 20 + seed)
    terms = infosam_terms(relation, teacher, student)
    l_r, l_d = _np_terms(*_np_inputs(relation, teacher, student))
    assert terms["relation"].item() == pytest.approx(l_r, abs=2e-5)
    assert terms["distill"].item() == pytest.approx(l_d, abs=2e-5)
    # and in float64 end to end, tightly
    relation64 = relation.double()
    t64 = SimpleNamespace(
        image_embeddings=teacher.image_embeddings.double(), mask_tokens=teacher.mask_tokens.double()
    )
    s64 = SimpleNamespace(
        image_embeddings=student.image_embeddings.double(), mask_tokens=student.mask_tokens.double()
    )
    terms64 = infosam_terms(relation64, t64, s64)
    assert terms64["relation"].item() == pytest.approx(l_r, abs=1e-10)
    assert terms64["distill"].item() == pytest.approx(l_d, abs=1e-10)


def test_distill_by_hand_two_samples():
    # r_t rows with cosine c = 0.6, r_s rows with cosine d = 0.8 (see test_entropy.test_two_samples_by_hand):
    # L_d = -I = -(1 - log2((1 + c^2)(1 + d^2) / (1 + c^2 d^2))) = log2(2.2304 / 1.2304) - 1 = -0.14182...
    r_t = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    r_s = torch.tensor([[0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)
    assert distill_loss(r_t, r_s).item() == pytest.approx(math.log2(2.2304 / 1.2304) - 1, abs=1e-12)
    # identical relations: L_d = -I(A; A) = -(2 S(A) - S(A, A)); here S(A) = 1 - log2 1.36, S(A, A) = 1 - log2 1.1296
    expected = -(2 * (1 - math.log2(1.36)) - (1 - math.log2(1 + 0.6**4)))
    assert distill_loss(r_t, r_t).item() == pytest.approx(expected, abs=1e-12)


def test_total_is_the_weighted_sum_and_module_wrapper_agrees():
    relation = _relation()
    teacher, student = _features(4, 1), _features(4, 2)
    weights = InfoSAMWeights(lam=0.7, lam1=1.3, lam2=0.4)
    terms = infosam_terms(relation, teacher, student, weights)
    expected = 0.7 * (1.3 * terms["relation"] + 0.4 * terms["distill"])
    assert torch.allclose(terms["total"], expected)
    assert set(terms) == {"relation", "distill", "total", *RELATION_STATS}
    assert all(t.dtype == torch.float32 and t.dim() == 0 for t in terms.values())
    wrapped = InfoSAMLoss(relation, weights)(teacher, student)
    assert torch.allclose(wrapped["total"], terms["total"])
    default = infosam_terms(relation, teacher, student)
    assert torch.allclose(default["total"], default["relation"] + 0.5 * default["distill"])


def _grads(loss, relation, teacher, student):
    inputs = [teacher.image_embeddings, teacher.mask_tokens, student.image_embeddings, student.mask_tokens]
    params = list(relation.parameters())
    grads = torch.autograd.grad(loss, inputs + params, allow_unused=True, retain_graph=True)
    return grads[:2], grads[2:4], grads[4:]


def test_gradient_routing():
    relation = _relation()
    teacher, student = _features(4, 3), _features(4, 4)
    terms = infosam_terms(relation, teacher, student)
    # L_r: only the relation module (teacher inputs detached, student absent)
    t_grads, s_grads, p_grads = _grads(terms["relation"], relation, teacher, student)
    assert all(g is None for g in t_grads + s_grads)
    assert all(g is not None and torch.isfinite(g).all() for g in p_grads)
    assert sum(g.abs().sum() for g in p_grads) > 0
    # L_d: relation module and student, never the teacher
    t_grads, s_grads, p_grads = _grads(terms["distill"], relation, teacher, student)
    assert all(g is None for g in t_grads)
    assert all(g is not None and g.abs().sum() > 0 for g in s_grads)
    assert sum(g.abs().sum() for g in p_grads) > 0
    terms["total"].backward()
    assert teacher.image_embeddings.grad is None and teacher.mask_tokens.grad is None
    assert student.image_embeddings.grad is not None


def test_batch_of_one_is_rejected_with_a_reason():
    relation = _relation()
    with pytest.raises(ValueError, match=r"at least 2 samples, got 1.*batch axis.*paper uses 4"):
        infosam_terms(relation, _features(1, 0), _features(1, 1))


def test_gather_counts_the_global_batch():
    relation = _relation()
    remote = {}

    def fake_gather(rows: torch.Tensor) -> torch.Tensor:
        # stands in for an all-gather: three more processes' rows, fixed per feature width
        d = rows.shape[1]
        if d not in remote:
            remote[d] = torch.nn.functional.normalize(
                torch.randn(3, d, generator=torch.Generator().manual_seed(d)), dim=1
            )
        return torch.cat([rows, remote[d]])

    teacher, student = _features(1, 5), _features(1, 6)
    terms = infosam_terms(relation, teacher, student, gather=fake_gather)
    assert torch.isfinite(terms["total"])
    terms["total"].backward()
    assert student.image_embeddings.grad is not None and teacher.image_embeddings.grad is None
    with pytest.raises(ValueError, match="at least 2 samples"):
        infosam_terms(relation, teacher, student, gather=lambda rows: rows)


@pytest.mark.parametrize("field,value", [("lam", -1.0), ("lam1", -0.1), ("lam2", float("nan")), ("lam", "1")])
def test_weights_are_validated(field, value):
    with pytest.raises(ValueError, match=f"InfoSAMWeights.{field} must be a number >= 0"):
        InfoSAMWeights(**{field: value})


def test_tiny_sam_teacher_gets_no_gradient(tiny_sam):
    from infosam.sam import forward

    teacher, student = tiny_sam(seed=0), tiny_sam(seed=0)
    student.train()
    size = student.image_encoder.img_size
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[4.0, 4.0, 40.0, 40.0], [10.0, 8.0, 60.0, 50.0]])
    # No torch.no_grad and every teacher parameter accepts a gradient: only infosam_terms' own detaching of the
    # teacher's features keeps the teacher's gradients at None.
    t_out = forward.sam_forward(teacher, images, boxes=boxes)
    s_out = forward.sam_forward(student, images, boxes=boxes)
    relation = RelationModule(s_out.mask_tokens.shape[-1])
    infosam_terms(relation, t_out, s_out)["total"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    encoder_grads = [p.grad for p in student.image_encoder.parameters()]  # L_d reaches the student's encoder
    assert any(g is not None and g.abs().sum() > 0 for g in encoder_grads)
    decoder_grads = [p.grad for p in student.mask_decoder.transformer.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in decoder_grads)
    assert all(p.grad is not None for p in relation.parameters())


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from infosam.distill.entropy import all_gather_rows

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        relation = _relation()
        teacher, student = _features(4, 7), _features(4, 8)
        local = slice(2 * rank, 2 * rank + 2)
        t_local = SimpleNamespace(
            image_embeddings=teacher.image_embeddings[local], mask_tokens=teacher.mask_tokens[local]
        )
        s_local = SimpleNamespace(
            image_embeddings=student.image_embeddings[local], mask_tokens=student.mask_tokens[local]
        )
        terms = infosam_terms(relation, t_local, s_local, gather=all_gather_rows)
        terms["total"].backward()
        grads = [p.grad for p in relation.parameters()]
        for g in grads:  # what DDP does: average parameter gradients over processes
            dist.all_reduce(g)
            g /= world
        torch.save({"total": terms["total"].detach(), "grads": grads}, f"{out_dir}/rank{rank}.pt")
        # Both processes leave together: tearing gloo down while the peer is still in a collective aborted
        # a worker now and then ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_all_gather_rows_gives_the_global_batch_loss_and_gradient(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    relation = _relation()
    terms = infosam_terms(relation, _features(4, 7), _features(4, 8))
    terms["total"].backward()
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.allclose(result["total"], terms["total"].detach(), atol=1e-6)
        for got, p in zip(result["grads"], relation.parameters(), strict=True):
            assert torch.allclose(got, p.grad, atol=1e-5)


def test_terms_under_bf16_autocast_equal_float32():
    """The relation module and the entropy terms run in float32 with autocast off, so a bf16-autocast training step
    gets the float32 L_r and L_d of its (given) features. Measured on this CPU: bitwise equal; before the relation
    module switched autocast off, L_r moved by up to 1.1e-2 relative on these inputs (4e-2 seen in training). The
    bound 1e-6 relative leaves room for a kernel that reorders a float32 sum, and none for bf16 rounding (2^-8)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    relation = RelationModule(256)  # SAM's width and a 16 x 16 grid, where bf16 rounding of the rows shows
    teacher = SimpleNamespace(
        image_embeddings=torch.randn(4, 256, 16, 16, generator=g),
        mask_tokens=torch.randn(4, 1, 256, generator=g),
    )
    student = SimpleNamespace(
        image_embeddings=teacher.image_embeddings + 0.5 * torch.randn(4, 256, 16, 16, generator=g),
        mask_tokens=teacher.mask_tokens + 0.5 * torch.randn(4, 1, 256, generator=g),
    )
    exact = infosam_terms(relation, teacher, student)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rows = relation(student.image_embeddings, student.mask_tokens)
        mixed = infosam_terms(relation, teacher, student)
    assert rows.dtype == torch.float32
    for key in ("relation", "distill", "total"):
        assert mixed[key].dtype == torch.float32
        assert mixed[key].item() == pytest.approx(exact[key].item(), rel=1e-6, abs=0), key
    # Features that are already bf16 (an encoder run under autocast) are upcast, not computed in bf16.
    half = SimpleNamespace(
        image_embeddings=student.image_embeddings.bfloat16(), mask_tokens=student.mask_tokens.bfloat16()
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        from_half = relation(half.image_embeddings, half.mask_tokens)
    upcast = relation(half.image_embeddings.float(), half.mask_tokens.float())
    assert from_half.dtype == torch.float32 and torch.allclose(from_half, upcast, rtol=1e-6, atol=1e-7)


# ---- the relation maps' statistics (logged, never part of a loss) ----
def _np_renyi(a):
    return -_np_log2_fro2(a)


@pytest.mark.parametrize("b,seed", [(2, 3), (4, 4)])
def test_relation_stats_equal_independent_numpy(b, seed):
    """S(r_t), S(r_s), I(r_t; r_s), the teacher maps' mean pairwise cosine and value spread, in float64 NumPy."""
    relation, teacher, student = _relation(seed), _features(b, seed), _features(b, seed + 100)
    terms = infosam_terms(relation, teacher, student)
    p, t_emb, t_tok, s_emb, s_tok = _np_inputs(relation, teacher, student)
    r_t, r_s = relation_rows(p, t_emb, t_tok), relation_rows(p, s_emb, s_tok)
    g_t, g_s = _np_gram(r_t), _np_gram(r_s)
    g_ts = g_t * g_s / np.trace(g_t * g_s)
    unit = r_t / np.linalg.norm(r_t, axis=1, keepdims=True)
    cos = unit @ unit.T
    expected = {
        "s_rt": _np_renyi(g_t),
        "s_rs": _np_renyi(g_s),
        "i_rt_rs": _np_renyi(g_t) + _np_renyi(g_s) - _np_renyi(g_ts),
        "rt_cosine": float(cos[~np.eye(b, dtype=bool)].mean()),
        "rt_mean": float(r_t.mean(axis=1).mean()),
        "rt_std": float(r_t.std(axis=1).mean()),
        "rt_min": float(r_t.min()),
        "rt_max": float(r_t.max()),
    }
    for name in RELATION_STATS:
        assert float(terms[name]) == pytest.approx(expected[name], rel=1e-4, abs=1e-5), name
        assert not terms[name].requires_grad, name
    assert float(terms["i_rt_rs"]) == pytest.approx(-terms["distill"].item(), abs=1e-6)  # I = -L_d
    # unit rows: each map's mean^2 + variance = 1 / HW, so a zero-mean map has std 1/sqrt(HW)
    hw = r_t.shape[1]
    assert np.allclose(r_t.mean(axis=1) ** 2 + r_t.var(axis=1), 1.0 / hw)


def test_relation_stats_at_their_bounds():
    """Identical teacher maps: S(r_t) = 0, cosine 1; orthogonal maps: S(r_t) = log2 B, cosine 0 (method.md 3)."""
    from infosam.distill.loss import relation_stats

    same = torch.tensor([[3.0, 4.0, 0.0, 0.0]]).repeat(4, 1)
    stats = relation_stats(same, same)
    assert float(stats["s_rt"]) == pytest.approx(0.0, abs=1e-6)
    assert float(stats["rt_cosine"]) == pytest.approx(1.0, abs=1e-6)
    assert float(stats["rt_std"]) == pytest.approx(np.std([3.0, 4.0, 0.0, 0.0]), abs=1e-6)
    eye = torch.eye(4)
    stats = relation_stats(eye, eye)
    assert float(stats["s_rt"]) == pytest.approx(2.0, abs=1e-6)
    assert float(stats["rt_cosine"]) == pytest.approx(0.0, abs=1e-7)
    assert float(stats["i_rt_rs"]) == pytest.approx(2.0, abs=1e-6)  # copying orthogonal maps: I = S(r_t)
    assert (float(stats["rt_min"]), float(stats["rt_max"])) == (0.0, 1.0)


@pytest.mark.parametrize("b,seed", [(2, 5), (4, 6), (8, 7)])
def test_teacher_relation_entropy_is_bounded_by_the_compression_term(b, seed):
    """S(r_t) <= L_r + log2 B, because L_r = S(r_t) - S(z_i, z_m, r_t) and a joint entropy is at most log2 B
    (docs/method.md, "What L_r does to the teacher's relation"). So a compression term driven to L_r leaves the
    teacher's relation at most L_r + log2 B bits, and I(r_t; r_s) <= S(r_t) at most that too."""
    relation, teacher, student = _relation(seed), _features(b, seed), _features(b, seed + 50)
    terms = infosam_terms(relation, teacher, student)
    s_rt, l_r, mi = (float(terms[k].detach()) for k in ("s_rt", "relation", "i_rt_rs"))
    assert s_rt <= l_r + math.log2(b) + 1e-6
    assert mi <= s_rt + 1e-6
    # and the bound is reached when the teacher's inputs are orthogonal (joint entropy = log2 B)
    eye = torch.eye(b)
    orth = SimpleNamespace(image_embeddings=eye.reshape(b, b, 1, 1), mask_tokens=eye.reshape(b, 1, b))
    rows = torch.randn(b, 16, generator=torch.Generator().manual_seed(seed))
    from infosam.distill.entropy import gram_matrix, renyi2
    from infosam.distill.loss import relation_loss

    l_r = float(relation_loss(orth.image_embeddings, orth.mask_tokens, rows))
    assert float(renyi2(gram_matrix(rows))) == pytest.approx(l_r + math.log2(b), abs=1e-5)
