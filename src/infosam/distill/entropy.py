"""Matrix-based Renyi entropy of order 2 over a batch (method.md section 3). Pure functions, no state.

For ``n`` samples the Gram matrix ``K`` (linear kernel on L2-normalised, flattened features) is divided by its
trace, ``A = K / tr(K)``, and ``S_2(A) = -log2 sum_i lambda_i(A)^2 = -log2 ||A||_F^2``. The estimate runs over the
batch axis, so it needs ``n >= 2`` samples to say anything (with one sample every term is a constant).

Numerical safety, shared by every function here:

- Everything is computed in (at least) float32 with autocast disabled, whatever the input dtype or an enclosing
  ``torch.autocast`` says: half-precision Gram matrices of 10^6-dimensional features lose the entropy.
- L2-normalisation divides by ``max(|x|, eps)``, so an all-zero row stays an all-zero row: its Gram row and column
  are zero and it adds 0 (not 1) to the trace. The zero sample then simply drops out: the entropy is that of the
  other samples (the matrix gains a zero eigenvalue). Its gradient is finite (scaled by ``1/eps``).
- Traces and squared norms are clamped at ``eps`` before dividing or taking ``log2``: an all-zero batch gives
  ``A = 0`` and ``S_2 = -log2(eps)`` (finite, never NaN or inf), with a zero gradient.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-12
"""Floor for norms, traces and squared Frobenius norms."""

Gather = Callable[[Tensor], Tensor]
"""``(n_local, d) -> (n_global, d)``: all-gathers rows across processes, keeping the local rows' gradients."""


def no_autocast(x: Tensor) -> contextlib.AbstractContextManager:
    """A context that switches autocast off on ``x``'s device (a no-op where autocast does not exist)."""
    try:
        return torch.autocast(device_type=x.device.type, enabled=False)
    except RuntimeError:  # device type without autocast support
        return contextlib.nullcontext()


def _upcast(x: Tensor) -> Tensor:
    """``x`` as float32, or float64 when it already is float64."""
    return x if x.dtype == torch.float64 else x.float()


def normalize_rows(x: Tensor, *, eps: float = EPS) -> Tensor:
    """Flatten each sample and scale it to unit L2 norm.

    Args:
        x: ``(n, ...)`` features of ``n`` samples.
    Returns:
        ``(n, d)`` float32 (float64 if ``x`` is), ``d`` = product of the trailing dims; all-zero rows stay zero.
    """
    if x.dim() < 2:
        raise ValueError(f"expected features of shape (n, ...) with at least 2 dims, got {tuple(x.shape)}")
    with no_autocast(x):
        return F.normalize(_upcast(x.flatten(1)), p=2.0, dim=1, eps=eps)


def normalize_trace(k: Tensor, *, eps: float = EPS) -> Tensor:
    """``k / tr(k)`` with the trace clamped at ``eps``.

    Args:
        k: ``(n, n)`` positive semi-definite matrix.
    Returns:
        ``(n, n)`` with unit trace (all zeros if ``k`` is all zeros).
    """
    _check_square(k)
    with no_autocast(k):
        k = _upcast(k)
        return k / torch.diagonal(k).sum().clamp_min(eps)


def gram_matrix(x: Tensor, *, gather: Gather | None = None, eps: float = EPS) -> Tensor:
    """Trace-normalised Gram matrix of a batch with a linear kernel on L2-normalised flattened features.

    ``K_ab = <x_a/|x_a|, x_b/|x_b|>`` and the result is ``K / tr(K)``; ``tr(K)`` is the number of non-zero rows.

    Args:
        x: ``(n, ...)`` features, one sample per row (any trailing shape; flattened).
        gather: optional ``(n_local, d) -> (n_global, d)`` applied to the normalised rows before the product,
            e.g. :func:`all_gather_rows`, so that the matrix spans the global batch of all processes.
        eps: floor for the row norms and the trace.
    Returns:
        ``(n, n)`` float32 (float64 if ``x`` is), ``n`` being the gathered batch size when ``gather`` is given.
    """
    with no_autocast(x):
        rows = normalize_rows(x, eps=eps)
        if gather is not None:
            rows = _upcast(gather(rows))
        return normalize_trace(rows @ rows.T, eps=eps)


def log2_frobenius_sq(a: Tensor, *, eps: float = EPS) -> Tensor:
    """``log2 ||a||_F^2`` with the squared norm clamped at ``eps`` (scalar). Equals ``-renyi2(a)``."""
    _check_square(a)
    with no_autocast(a):
        return torch.log2(_upcast(a).square().sum().clamp_min(eps))


def renyi2(a: Tensor, *, eps: float = EPS) -> Tensor:
    """Order-2 matrix Renyi entropy ``S_2(A) = -log2 ||A||_F^2`` in bits.

    Args:
        a: ``(n, n)`` trace-normalised Gram matrix (e.g. from :func:`gram_matrix`).
    Returns:
        scalar; in ``[0, log2 n]`` for a PSD matrix of unit trace (0: all samples identical; ``log2 n``: all
        orthogonal, ``A = I/n``).
    """
    return -log2_frobenius_sq(a, eps=eps)


def hadamard_normalized(*mats: Tensor, eps: float = EPS) -> Tensor:
    """``(A o B o ...) / tr(A o B o ...)``: the joint Gram matrix of several (n, n) matrices, ``o`` elementwise."""
    if not mats:
        raise ValueError("hadamard_normalized needs at least one (n, n) matrix")
    shape = mats[0].shape
    for m in mats:
        _check_square(m)
        if m.shape != shape:
            raise ValueError(
                f"joint entropy needs Gram matrices of one shape, got {[tuple(x.shape) for x in mats]}"
            )
    with no_autocast(mats[0]):
        product = _upcast(mats[0])
        for m in mats[1:]:
            product = product * _upcast(m)
        return normalize_trace(product, eps=eps)


def joint_entropy(*mats: Tensor, eps: float = EPS) -> Tensor:
    """Joint entropy ``S(A, B, ...) = S_2((A o B o ...) / tr(A o B o ...))`` of (n, n) Gram matrices (scalar).

    Note ``S(A, A)`` is not ``S(A)``: ``A o A`` is the Gram matrix of the squared kernel ``<x_a, x_b>^2``, so
    ``S(A, A) >= S(A)`` with equality only when every cosine similarity is 0 or +-1.
    """
    return renyi2(hadamard_normalized(*mats, eps=eps), eps=eps)


def mutual_information(a: Tensor, b: Tensor, *, eps: float = EPS) -> Tensor:
    """``I(A; B) = S(A) + S(B) - S(A, B)`` in bits (scalar), symmetric; 0 when either is constant (all ones/n)."""
    return renyi2(a, eps=eps) + renyi2(b, eps=eps) - joint_entropy(a, b, eps=eps)


def all_gather_rows(x: Tensor) -> Tensor:
    """All-gather ``(n_local, d)`` rows from every process into ``(world * n_local, d)``, differentiably.

    Uses ``torch.distributed.nn.functional.all_gather``, whose backward sums the gradients every process computed
    for a row and hands each process those of its own rows. When every process computes the same global loss and
    DDP averages parameter gradients, the result is exactly the gradient of the global-batch loss. Every process
    must hold the same ``n_local``. Without an initialised process group (or with one process) returns ``x``.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def _check_square(a: Tensor) -> None:
    if a.dim() != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"expected a square (n, n) matrix, got shape {tuple(a.shape)}")
