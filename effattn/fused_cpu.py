"""The CPU fast path, compiled with numba: one parallel loop over every (example, head).

Per head this does what value_basis.py does with many small torch calls, but in one pass whose
data stay in cache: the float64 Gram matrix VᵀV of the real rows, its Cholesky factor L, L⁻¹,
the rank certificate (numerics.py), and the basis Q = V L⁻ᵀ. It also sums each real attention
row (the probability check) and zeroes the padded rows and columns of the output, so the caller
only writes the real blocks. On this 2-core CPU the torch version spent most of its time in
per-call overhead (about 200 small calls per layer), not in arithmetic.

Q = V L⁻ᵀ is orthonormal only to about eps64·κ², κ the condition number of V. When that could
exceed the input's eps (float64 inputs, or κ > ~2e4 in float32), a second Cholesky pass on Q
(CholeskyQR2) restores orthonormality to eps64; it is guaranteed to do so while
κ ≤ 1/sqrt(11·(n·d + d(d+1))·eps64) (Yamamoto et al. 2015, "Roundoff error analysis of the
CholeskyQR2 algorithm"), and heads beyond that bound are left to the SVD. κ is bounded above by
‖L‖_F·‖L⁻¹‖_F, so every test here is conservative.

Only right-padded (prefix) examples come here; the caller handles the others.
"""

import numba
import numpy as np
import torch
from numba import njit, prange

from .numerics import EPS64, certificate_factor

__all__ = ["fused_bases"]

# Reassociation and contraction let loops vectorise; no assumption about nan or inf, which the
# certificate relies on to reject failed factors.
FAST_MATH = {"reassoc", "contract", "nsz", "arcp"}


@njit(cache=True)
def _finite(value) -> bool:
    """Without fast math: under it, LLVM folds nan checks away (and max() drops nan)."""
    return abs(value) < np.inf


@njit(fastmath=FAST_MATH, cache=True)
def _cholesky_in_place(factor) -> bool:
    """Lower Cholesky factor of the symmetric matrix whose lower triangle `factor` holds."""
    size = factor.shape[0]
    for j in range(size):
        row_j = factor[j]
        pivot = row_j[j]
        for p in range(j):
            pivot -= row_j[p] * row_j[p]
        if not pivot > 0.0:  # also false for nan
            return False
        pivot = np.sqrt(pivot)
        row_j[j] = pivot
        for i in range(j + 1, size):
            row_i = factor[i]
            total = row_i[j]
            for p in range(j):
                total -= row_i[p] * row_j[p]
            row_i[j] = total / pivot
    return True


@njit(fastmath=FAST_MATH, cache=True)
def _condition_bound(factor, inverse) -> float:
    """inverse ← factor⁻¹ (lower triangular); returns ‖factor‖_F·‖inverse‖_F ≥ κ(factor)."""
    size = factor.shape[0]
    inverse[:, :] = 0.0
    norm_factor = 0.0
    norm_inverse = 0.0
    for i in range(size):  # row i of L⁻¹ = (e_i − Σ_{p<i} L[i, p] · row p of L⁻¹) / L[i, i]
        row = inverse[i]
        factor_row = factor[i]
        for p in range(i):
            weight = factor_row[p]
            previous = inverse[p]
            for c in range(p + 1):
                row[c] -= weight * previous[c]
        row[i] += 1.0
        scale = 1.0 / factor_row[i]
        for c in range(i + 1):
            row[c] *= scale
            norm_inverse += row[c] * row[c]
            norm_factor += factor_row[c] * factor_row[c]
    return np.sqrt(norm_factor * norm_inverse)


@njit(fastmath=FAST_MATH, cache=True)
def _lower_gram(columns, gram) -> None:
    """gram's lower triangle ← columns · columnsᵀ; columns (d, n) holds Vᵀ (or Qᵀ)."""
    size, length = columns.shape
    for i in range(size):
        column_i = columns[i]
        for j in range(i + 1):
            column_j = columns[j]
            total = 0.0
            for k in range(length):
                total += column_i[k] * column_j[k]
            gram[i, j] = total


@njit(fastmath=FAST_MATH, cache=True)
def _apply_inverse(inverse, columns, result) -> None:
    """result ← inverse · columns for lower-triangular inverse: Qᵀ = L⁻¹ Vᵀ, row by row."""
    size, length = columns.shape
    for c in range(size):
        out = result[c]
        out[:] = 0.0
        weights = inverse[c]
        for j in range(c + 1):
            weight = weights[j]
            column = columns[j]
            for k in range(length):
                out[k] += weight * column[k]


@njit(fastmath=FAST_MATH, cache=True)
def _short_head_full_rank(head_values, n, rank_factor) -> bool:
    """For n ≤ d_head: is the n × d_head block V proven of full row rank under the rank rule?
    Same bounds as for long examples, on the smaller Gram matrix VVᵀ; rank_factor is
    numerics.certificate_factor(d_head, input dtype)."""
    d_head = head_values.shape[1]
    rows = np.empty((n, d_head))
    for k in range(n):
        for i in range(d_head):
            rows[k, i] = head_values[k, i]
    factor = np.empty((n, n))
    _lower_gram(rows, factor)
    if not _cholesky_in_place(factor):
        return False
    condition = _condition_bound(factor, np.empty((n, n)))
    return condition * rank_factor < 1.0  # nan fails too


@njit(parallel=True, fastmath=FAST_MATH, cache=True)
def certify_and_prepare(attn, values, lengths, rank_factors, input_eps, basis, certified,
                        row_error, out):
    """attn (batch, head, n, n), values (batch, head, n, d) C-contiguous; lengths (batch,)
    int64, the real tokens of each prefix example or −1 for an example to skip; rank_factors
    (batch,) float64, numerics.certificate_factor(max(n, d), input dtype) of each example;
    input_eps: eps of the input dtype, the accuracy the basis must reach.

    Writes, for each prefix example: out's padded rows and columns ← 0; row_error[b, h] ← max
    |Σ_k attn[i, k] − 1| over real rows i and keys k (nan if a sum is not finite); and, when the
    head is certified full rank (with a trustworthy basis): certified[b, h] ← True and, for
    n > d, basis[b, h, :n] ← Q, for n ≤ d, out's real block ← attn's (A_eff = A).
    """
    batch, heads, n_max, _ = attn.shape
    d_head = values.shape[-1]
    for task in prange(batch * heads):
        example = task // heads
        head = task - example * heads
        n = lengths[example]
        certified[example, head] = False
        row_error[example, head] = 0.0
        if n < 0:
            continue
        probabilities = attn[example, head]
        written = out[example, head]
        worst = 0.0
        finite = True
        for i in range(n):
            row = probabilities[i]
            total = 0.0
            for k in range(n):
                total += row[k]
            worst = max(worst, abs(total - 1.0))
            finite &= _finite(total)
            written[i, n:] = 0.0
        written[n:, :] = 0.0
        row_error[example, head] = worst if finite else np.nan
        if n == 0:
            continue

        head_values = values[example, head]
        if n <= d_head:  # full row rank proven: nothing is invisible, A_eff is A
            if _short_head_full_rank(head_values, n, rank_factors[example]):
                for i in range(n):
                    written[i, :n] = probabilities[i, :n]
                certified[example, head] = True
            continue
        columns = np.empty((d_head, n))        # Vᵀ in float64
        for k in range(n):
            for i in range(d_head):
                columns[i, k] = head_values[k, i]
        factor = np.empty((d_head, d_head))
        inverse = np.empty((d_head, d_head))
        _lower_gram(columns, factor)
        if not _cholesky_in_place(factor):
            continue
        condition = _condition_bound(factor, inverse)
        if not condition * rank_factors[example] < 1.0:       # the rank rule; nan fails too
            continue
        basis_t = np.empty((d_head, n))
        _apply_inverse(inverse, columns, basis_t)             # Qᵀ = L⁻¹ Vᵀ
        if condition * condition * EPS64 > input_eps:         # one more pass: CholeskyQR2
            if not condition <= 1.0 / np.sqrt(11.0 * (n * d_head + d_head * (d_head + 1)) * EPS64):
                continue
            _lower_gram(basis_t, factor)
            if not _cholesky_in_place(factor):
                continue
            _condition_bound(factor, inverse)
            _apply_inverse(inverse, basis_t, columns)
            basis_t, columns = columns, basis_t
        head_basis = basis[example, head]
        for k in range(n):
            for c in range(d_head):
                head_basis[k, c] = basis_t[c, k]
        certified[example, head] = True


def fused_bases(attn: torch.Tensor, values: torch.Tensor, lengths: list[int], prefix: list[bool],
                out: torch.Tensor):
    """attn (batch, m, n, n), values (batch, m, n, d_head) on the CPU; out shaped like attn.

    For each prefix example, zeroes out's padded rows and columns, checks its real rows, and
    for a short one (n_real ≤ d_head) whose heads are certified, writes its block (A itself).
    Returns (basis (batch, m, n, d_head) in values' dtype, valid in [:, :, :n_real] where
    certified and n_real > d_head; certified (batch, m) bool array; row_error (batch, m) array,
    0 where skipped).
    """
    attn, values = attn.detach().contiguous(), values.detach().contiguous()
    skip_or_length = np.array([length if is_prefix else -1
                               for length, is_prefix in zip(lengths, prefix)], dtype=np.int64)
    basis = torch.empty_like(values)
    certified = np.empty(attn.shape[:2], dtype=np.bool_)
    row_error = np.empty(attn.shape[:2], dtype=np.float64)
    # numba keeps its own thread pool; follow torch's setting (set_num_threads, OMP_NUM_THREADS).
    # Starting that pool (first call) resets OpenMP's default thread count, which torch reads.
    torch_threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS)))
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    rank_factors = certificate_factor(np.maximum(skip_or_length, values.shape[-1]), attn.dtype)
    certify_and_prepare(attn.numpy(), values.numpy(), skip_or_length, rank_factors,
                        float(torch.finfo(attn.dtype).eps), basis.numpy(), certified, row_error,
                        out.detach().numpy())
    return basis, certified, row_error
