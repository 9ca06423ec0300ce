"""Orthonormal bases of value matrices' column spaces, fast and with the exact rank rule.

The rank rule (numerics.py) needs σ_min and σ_max of each n × d_head matrix V. A batched SVD of
every head costs about half a forward pass on CPU, so most heads take a cheap certified path: a
float64 Cholesky factor L of the smaller Gram matrix (VᵀV when n > d_head, VVᵀ otherwise) gives
σ_min ≥ 1/‖L⁻¹‖_F and σ_max ≤ ‖L‖_F. When those bounds already prove full rank under the rule,
Q = V L⁻ᵀ is the basis (orthonormal to ~eps64·cond², far below the input's precision). The
remaining heads, near rank deficiency, get the float64 SVD, so every head follows the same rule.
"""

import torch

from .numerics import FACTORISATION_DTYPE, rank_tolerance

__all__ = ["certified_tall_basis", "value_basis"]


def _svd_basis(values64: torch.Tensor, input_dtype: torch.dtype):
    """Exact path: (basis (m, n, k) with columns past the rank zeroed, rank (m,))."""
    left, singular, _ = torch.linalg.svd(values64, full_matrices=False)
    n_rows = torch.full(singular.shape[:-1], values64.shape[-2], device=values64.device)
    keep = singular > rank_tolerance(singular, n_rows, values64.shape[-1], input_dtype)
    return left * keep.unsqueeze(-2), keep.sum(-1)


def _certified_full_rank(values64: torch.Tensor, input_dtype: torch.dtype,
                         n_rows: torch.Tensor | None = None):
    """Cholesky of the small Gram matrix; returns (L⁻¹, certified (...) bool).

    n_rows (...): real rows of each matrix when padded rows were zeroed (they add nothing to
    VᵀV); such matrices must have n_rows > d_head.
    """
    n, d_head = values64.shape[-2:]
    tall = n > d_head or n_rows is not None
    gram = values64.transpose(-1, -2) @ values64 if tall else values64 @ values64.transpose(-1, -2)
    factor, info = torch.linalg.cholesky_ex(gram)
    identity = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    inverse = torch.linalg.solve_triangular(factor, identity, upper=False)
    sigma_min_lower = 1 / torch.linalg.matrix_norm(inverse)
    sigma_max_upper = torch.linalg.matrix_norm(factor)
    size = max(n, d_head) if n_rows is None else n_rows.clamp(min=d_head).to(values64.dtype)
    tolerance = sigma_max_upper * size * torch.finfo(input_dtype).eps
    certified = (info == 0) & torch.isfinite(sigma_min_lower) & (sigma_min_lower > tolerance)
    return inverse, certified


def value_basis(values: torch.Tensor):
    """values (m, n, d_head) unpadded → (basis (m, n, k) in values' dtype, rank (m,) int64).

    k = min(n, d_head); columns past a head's rank are 0. When n ≤ d_head and V has full row
    rank, the basis spans everything and callers may skip the projection (rank == n).
    """
    m, n, d_head = values.shape
    values64 = values.to(FACTORISATION_DTYPE)
    inverse, certified = _certified_full_rank(values64, values.dtype)
    if n > d_head:
        basis = values64 @ inverse.transpose(-1, -2)          # Q = V L⁻ᵀ, (m, n, d_head)
    else:
        basis = torch.eye(n, dtype=values64.dtype, device=values.device).expand(m, n, n).clone()
    rank = torch.full((m,), min(n, d_head), dtype=torch.int64, device=values.device)
    uncertain = (~certified).nonzero().squeeze(-1)
    if uncertain.numel():
        basis[uncertain], rank[uncertain] = _svd_basis(values64[uncertain], values.dtype)
    return basis.to(values.dtype), rank


def certified_tall_basis(values: torch.Tensor, n_rows: torch.Tensor):
    """Batched fast path: values (..., n, d_head) with padded rows zeroed and n_rows (...) >
    d_head real rows → (basis (..., n, d_head) in values' dtype, certified (...) bool).

    Where certified, V has full column rank under the rank rule and basis = V L⁻ᵀ; elsewhere
    the caller must take the exact path.
    """
    values64 = values.to(FACTORISATION_DTYPE)
    inverse, certified = _certified_full_rank(values64, values.dtype, n_rows)
    return (values64 @ inverse.transpose(-1, -2)).to(values.dtype), certified
