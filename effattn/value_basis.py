"""Orthonormal bases of value matrices' column spaces, fast and with the exact rank rule.

The rank rule (numerics.py) compares σ_min of each n × d_head matrix V with ‖V‖_F and σ_max. A
batched SVD of every head costs about half a forward pass on CPU, so most heads take a cheap
certified path: a float64 Cholesky factor L of the smaller Gram matrix (VᵀV when n > d_head, VVᵀ
otherwise) gives σ_min ≥ 1/‖L⁻¹‖_F and σ_max ≤ ‖L‖_F = ‖V‖_F. When those bounds already prove
full rank under the rule (numerics.certificate_factor), and Q = V L⁻ᵀ is orthonormal to the
input's precision (its error, ~eps64·cond², is below the input's eps: float32 inputs with
cond ≲ 2e4), Q is the basis. The remaining heads (near rank deficiency, or any float64 input)
get the float64 SVD, so every head follows the same rule. These are the torch ops for CUDA, for
bfloat16 and float16, for inputs that need gradients and for left-padded examples; fused_cpu.py
does the same on the CPU in one compiled pass, with a second Cholesky pass instead of the SVD
for float64.
"""

import torch

from .errors import NonFiniteValuesError
from .numerics import FACTORISATION_DTYPE, certificate_factor, rank_tolerance

__all__ = ["certified_tall_bases", "value_basis"]


def _svd_basis(values64: torch.Tensor, input_dtype: torch.dtype):
    """Exact path: (basis (m, n, k) with columns past the rank zeroed, rank (m,))."""
    # Only here, not on every call: a non-finite V never passes the certificate, so it ends up
    # here, where LAPACK would fail with a message about convergence.
    if not bool(torch.isfinite(values64).all()):
        raise NonFiniteValuesError(
            "values contain nan or inf, so their column space is undefined: check the model's "
            "inputs and weights (in float16, run the model in float32)")
    left, singular, _ = torch.linalg.svd(values64, full_matrices=False)
    keep = singular > rank_tolerance(singular, values64.shape[-2], values64.shape[-1], input_dtype)
    return left * keep.unsqueeze(-2), keep.sum(-1)


def _certified_full_rank(gram: torch.Tensor, size, input_dtype: torch.dtype, tall: bool):
    """gram (m, k, k) float64, the smaller Gram matrix of each V; size: max(n, d_head) of each
    (an int or an (m,) tensor); tall: the basis will be V L⁻ᵀ, so it must be orthonormal to the
    input's precision. Returns (L⁻¹ (m, k, k), certified (m,) bool: full rank proven under the
    rank rule, and the basis accurate when tall)."""
    factor, info = torch.linalg.cholesky_ex(gram)
    identity = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    inverse = torch.linalg.solve_triangular(factor, identity, upper=False)
    # ‖V‖_F = ‖L‖_F ≥ σ_max and σ_min ≥ 1/‖L⁻¹‖_F, so σ_min is above the rank rule's tolerance
    # when the bound below times certificate_factor is under 1 (numerics.py); inf or nan from
    # a failed factor never passes.
    condition_bound = torch.linalg.matrix_norm(factor) * torch.linalg.matrix_norm(inverse)
    size = torch.as_tensor(size, device=gram.device)
    certified = (info == 0) & (condition_bound * certificate_factor(size, input_dtype) < 1)
    if tall:
        input_eps = torch.finfo(input_dtype).eps
        certified &= condition_bound.square() * torch.finfo(gram.dtype).eps <= input_eps
    return inverse, certified


def value_basis(values: torch.Tensor):
    """values (m, n, d_head) unpadded → (basis (m, n, k) in values' dtype, rank (m,) int64).

    k = min(n, d_head); columns past a head's rank are 0. When n ≤ d_head and V has full row
    rank, the basis spans everything and callers may skip the projection (rank == n).
    """
    m, n, d_head = values.shape
    if n == 0 or d_head == 0:  # V spans nothing: an empty basis, rank 0
        return values.new_zeros(m, n, 0), torch.zeros(m, dtype=torch.int64, device=values.device)
    values64 = values.to(FACTORISATION_DTYPE)
    tall = n > d_head
    gram = values64.mT @ values64 if tall else values64 @ values64.mT
    inverse, certified = _certified_full_rank(gram, max(n, d_head), values.dtype, tall)
    if tall:
        basis = values64 @ inverse.mT                         # Q = V L⁻ᵀ, (m, n, d_head)
    else:
        basis = torch.eye(n, dtype=values64.dtype, device=values.device).expand(m, n, n).clone()
    rank = torch.full((m,), min(n, d_head), dtype=torch.int64, device=values.device)
    uncertain = (~certified).nonzero().squeeze(-1)
    if uncertain.numel():
        basis[uncertain], rank[uncertain] = _svd_basis(values64[uncertain], values.dtype)
    return basis.to(values.dtype), rank


def certified_tall_bases(values: torch.Tensor, real_rows: dict) -> dict:
    """Fast path for many examples at once. values (batch, m, n, d_head); real_rows maps each
    example to index its real tokens in (m, n, ·) tensors, more than d_head of them.

    Returns {example: basis (m, n_e, d_head) in values' dtype}, or None for an example with a
    head that the bounds cannot prove full rank (the caller takes the exact path).
    """
    if values.shape[-1] == 0:  # d_head = 0: nothing to certify, value_basis settles it
        return dict.fromkeys(real_rows)
    # Cast only the real rows: the padded ones would double the float64 work.
    blocks = [values[example][rows].to(FACTORISATION_DTYPE) for example, rows in real_rows.items()]
    m = values.shape[1]
    gram = torch.stack([block.mT @ block for block in blocks]).flatten(0, 1)
    n_rows = torch.tensor([block.shape[-2] for block in blocks], dtype=gram.dtype,
                          device=gram.device).repeat_interleave(m)
    inverse, certified = _certified_full_rank(gram, n_rows, values.dtype, True)
    examples = (len(blocks), m)  # not -1: unflatten cannot infer it when m is 0
    inverse_t = inverse.mT.unflatten(0, examples)
    every_certified = certified.unflatten(0, examples).all(-1).tolist()
    return {example: (block @ inverse_t[index]).to(values.dtype) if every_certified[index] else None
            for index, (example, block) in enumerate(zip(real_rows, blocks))}
