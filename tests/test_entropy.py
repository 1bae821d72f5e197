"""Matrix Renyi entropy of order 2: closed form vs eigenvalues, bounds, special cases, numerical safety."""

from __future__ import annotations

import math

import pytest
import torch

from infosam.distill.entropy import (
    gram_matrix,
    hadamard_normalized,
    joint_entropy,
    mutual_information,
    normalize_trace,
    renyi2,
)


def _features(n: int, *shape: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=dtype)


@pytest.mark.parametrize("n,seed", [(2, 0), (4, 1), (7, 2), (16, 3)])
def test_closed_form_equals_eigenvalue_form(n, seed):
    a = gram_matrix(_features(n, 3, 5, seed=seed))
    eig = torch.linalg.eigvalsh(a)
    assert torch.allclose(eig.sum(), torch.tensor(1.0, dtype=a.dtype))
    assert torch.allclose(renyi2(a), -torch.log2((eig**2).sum()), atol=1e-10)


def test_gram_shape_dtype_and_trace():
    x = _features(5, 2, 3, 4, dtype=torch.float32)
    a = gram_matrix(x)
    assert a.shape == (5, 5) and a.dtype == torch.float32
    assert torch.allclose(torch.trace(a), torch.tensor(1.0))
    assert torch.allclose(a, a.T)
    xf = torch.nn.functional.normalize(x.flatten(1).double(), dim=1)
    assert torch.allclose(a.double(), xf @ xf.T / 5, atol=1e-6)


def test_orthogonal_samples_give_log2_n_and_identical_give_zero():
    n = 6
    orth = torch.eye(n, dtype=torch.float64) * torch.arange(1, n + 1)  # orthogonal rows of varied norms
    assert torch.allclose(gram_matrix(orth), torch.eye(n, dtype=torch.float64) / n)
    assert renyi2(gram_matrix(orth)).item() == pytest.approx(math.log2(n), abs=1e-12)
    same = _features(1, 10).repeat(n, 1) * torch.arange(1, n + 1, dtype=torch.float64)[:, None]
    assert renyi2(gram_matrix(same)).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_bounds_on_random_data(seed):
    n = 3 + seed
    x = _features(n, 8, seed=seed) + seed  # shifted: positive correlations of varied strength
    s = renyi2(gram_matrix(x)).item()
    assert -1e-12 <= s <= math.log2(n) + 1e-12


def test_two_samples_by_hand():
    # Two unit vectors with cosine c: K = [[1, c], [c, 1]], A = K / 2, ||A||_F^2 = (2 + 2c^2) / 4 = (1 + c^2) / 2,
    # so S2 = 1 - log2(1 + c^2). For c = 0.6: 1 - log2(1.36) = 1 - 0.443606651... = 0.556393348...
    x = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    assert renyi2(gram_matrix(x)).item() == pytest.approx(0.5563933485243853, abs=1e-12)
    # A second pair with cosine d = 0.8: the joint matrix has off-diagonal cd = 0.48, S = 1 - log2(1 + 0.2304);
    # I = 1 - log2((1 + c^2)(1 + d^2) / (1 + c^2 d^2)) = 1 - log2(2.2304 / 1.2304) = 1 - log2(1.81274...) = 0.14182...
    y = torch.tensor([[0.0, 2.0], [1.2, 1.6]], dtype=torch.float64)  # cosine 0.8
    assert joint_entropy(gram_matrix(x), gram_matrix(y)).item() == pytest.approx(
        1 - math.log2(1.2304), abs=1e-12
    )
    expected_mi = 1 - math.log2(1.36 * 1.64 / 1.2304)
    assert expected_mi == pytest.approx(0.14182, abs=1e-5)
    assert mutual_information(gram_matrix(x), gram_matrix(y)).item() == pytest.approx(expected_mi, abs=1e-12)


def test_mutual_information_symmetric_and_zero_against_constant():
    a = gram_matrix(_features(5, 7, seed=1))
    b = gram_matrix(_features(5, 7, seed=2) + 0.5)
    assert torch.allclose(mutual_information(a, b), mutual_information(b, a), atol=1e-12)
    const = gram_matrix(torch.ones(5, 3, dtype=torch.float64))  # all samples identical: ones / n
    assert torch.allclose(const, torch.full((5, 5), 0.2, dtype=torch.float64))
    assert mutual_information(a, const).abs().item() < 1e-12
    assert mutual_information(const, b).abs().item() < 1e-12


def test_joint_entropy_of_a_matrix_with_itself():
    # A o A / tr(A o A) is the normalised Gram matrix of the squared kernel <x_a, x_b>^2, i.e. of the features
    # x (x) x. Its entropy is >= S(A) since |K_ab|^4 <= K_ab^2; equality holds for orthogonal samples.
    x = _features(6, 4, seed=3) + 0.3
    a = gram_matrix(x)
    outer = torch.einsum("ni,nj->nij", x, x)
    assert torch.allclose(joint_entropy(a, a), renyi2(gram_matrix(outer)), atol=1e-12)
    assert joint_entropy(a, a) > renyi2(a)
    eye = gram_matrix(torch.eye(4, dtype=torch.float64))
    assert joint_entropy(eye, eye).item() == pytest.approx(2.0, abs=1e-12)


def test_joint_of_one_matrix_is_its_entropy_and_shape_errors():
    a = gram_matrix(_features(4, 3))
    assert torch.allclose(joint_entropy(a), renyi2(a))
    with pytest.raises(ValueError, match="one shape"):
        hadamard_normalized(a, gram_matrix(_features(3, 3)))
    with pytest.raises(ValueError, match="square"):
        renyi2(torch.ones(2, 3))
    with pytest.raises(ValueError, match="at least one"):
        hadamard_normalized()


def test_zero_row_drops_out_without_nan():
    x = _features(4, 6, dtype=torch.float32).requires_grad_(True)
    with_zero = torch.cat([x, torch.zeros(1, 6)])
    a = gram_matrix(with_zero)
    assert torch.all(a[-1] == 0) and torch.all(a[:, -1] == 0)
    assert torch.allclose(torch.trace(a), torch.tensor(1.0))
    assert torch.allclose(renyi2(a), renyi2(gram_matrix(x)), atol=1e-6)
    renyi2(a).backward()
    assert torch.isfinite(x.grad).all()
    z = torch.zeros(3, 5, requires_grad=True)
    s = renyi2(gram_matrix(z))
    assert torch.isfinite(s)
    s.backward()
    assert torch.isfinite(z.grad).all()


def test_float32_under_autocast():
    x = _features(4, 64, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = gram_matrix(x.bfloat16())
        s = renyi2(a)
    assert a.dtype == torch.float32 and s.dtype == torch.float32
    assert torch.allclose(a, gram_matrix(x.bfloat16().float()), atol=1e-7)


def test_gather_spans_the_global_batch_and_keeps_local_gradients():
    local = _features(2, 5, seed=4).requires_grad_(True)
    remote = torch.nn.functional.normalize(_features(3, 5, seed=5), dim=1)
    a = gram_matrix(local, gather=lambda rows: torch.cat([rows, remote]))
    assert a.shape == (5, 5)
    assert torch.allclose(a, gram_matrix(torch.cat([local.detach(), remote])), atol=1e-12)
    renyi2(a).backward()
    assert local.grad is not None and local.grad.abs().sum() > 0


def test_normalize_trace():
    k = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    assert torch.allclose(normalize_trace(k), k / 4)
    assert torch.equal(normalize_trace(torch.zeros(2, 2)), torch.zeros(2, 2))


def test_distill_at_batch_4_rewards_decorrelated_student_relations():
    """At the paper's batch of 4: I(A; B) <= min(S(A), S(B)) on random relation batches; a student with mutually
    orthogonal rows reaches I = S(A) whatever the teacher; copying the teacher scores less (docs/method.md)."""
    from infosam.distill.entropy import gram_matrix, mutual_information, renyi2

    g = torch.Generator().manual_seed(0)
    n, d = 4, 64
    for _ in range(200):
        shared = torch.randn(1, d, generator=g, dtype=torch.float64)
        a = gram_matrix(
            torch.randn(n, d, generator=g, dtype=torch.float64) + 2 * shared
        )  # correlated teacher
        b = gram_matrix(torch.randn(n, d, generator=g, dtype=torch.float64) + torch.rand(1).item() * shared)
        i = mutual_information(a, b)
        assert i <= min(renyi2(a), renyi2(b)) + 1e-9
    orthogonal = gram_matrix(torch.eye(n, d, dtype=torch.float64) * 3.0)
    torch.testing.assert_close(orthogonal, torch.eye(n, dtype=torch.float64) / n)
    assert renyi2(orthogonal).item() == pytest.approx(math.log2(n))
    for _ in range(20):
        shared = torch.randn(1, d, generator=g, dtype=torch.float64)
        teacher = gram_matrix(torch.randn(n, d, generator=g, dtype=torch.float64) + 2 * shared)
        s_t = renyi2(teacher).item()
        assert mutual_information(teacher, orthogonal).item() == pytest.approx(s_t, abs=1e-9)
        copy = mutual_information(teacher, teacher).item()
        assert copy < s_t - 1e-3  # copying a correlated teacher's relations is worth less to L_d
