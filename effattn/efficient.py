"""Efficient attention: sparse rows with the same head output (PROJECT-DEFINED).

PROJECT-DEFINED, after Naim & Asher 2024, "On Explaining with Attention Matrices", whose
construction was not available to us (METHODS.md §3.2); only its claim is followed: a part of
attention that is a probability distribution, reproduces the head output and is minimal.

Shapes (one vocabulary across effattn):
    attn        (..., query, key)   attention probabilities; leading dims usually (batch, head)
    values      (..., key, d_head)  the head's value vectors
    attention_mask (batch, key)     1 = real token, 0 = padding
For one head of one example with n real tokens and a query row a, the rows p with p ≥ 0,
Σp = 1 and pᵀV = aᵀV form a polytope that contains a. Efficient attention of a is the vertex of
it that maximises Σ_j a_j p_j (keeps most of a's own mass), found by the simplex method
(efficient_kernel.py); ties go to the vertex that method reaches, deterministically. A vertex has
at most rank([V 1]) ≤ rank(V) + 1 non-zeros (Carathéodory), so each row is a sparse probability
distribution: plot it on standard attention's 0–1 scale. Where the constraints leave no freedom
(rank([V 1]) = n, e.g. n ≤ d_head with V of full rank) the polytope is the point a: the result
is A itself. Every example is computed on its own real block; padded rows and columns are 0.

Numerics: float64 on the CPU throughout. The constraints are Rᵀp = Rᵀa with R (n × r) an
orthonormal basis of V's numerical column space (float64 SVD, the rank rule of numerics.py at
the input dtype's eps) plus the ones vector orthogonalised against it. Each row a is first
divided by its float64 sum, so that Σp = 1 holds to float64 rounding, not to the input's.
After the shape checks everything runs on NumPy arrays and the compiled solver, not on torch
ops: on this project's 2-core CPU under load, each torch op large enough for two threads was
measured waiting ~16 ms for the second one, longer than the whole solve of a layer.
"""

import math

import numpy as np
import torch

from . import efficient_kernel
from .effective import _check_rows_sum_to_one, _real_block_indices, check_inputs
from .errors import NonFiniteValuesError, NotAProbabilityError
from .numerics import rank_tolerance

__all__ = ["efficient_attention"]

# The ones vector counts as inside V's column space when its part outside is below this
# (relative to ‖1‖ = √n): float64 rounding of an exact membership is ~1e-15, and leaving such a
# part out moves a row sum by at most √2·√n·this, far below the 1e-6 promised.
ONES_IN_SPAN = 1e-9
# Status of each query row (efficient_attention_with_status): how its vertex was found.
SOLVED, SOLVED_BY_FALLBACK, UNSOLVED, NOT_SOLVED_FOR = 0, 1, 2, -1


def _check_probabilities(attn64: np.ndarray, input_dtype: torch.dtype) -> None:
    """attn64 (m, n, n) float64, one example's real block: rows must be distributions, judged
    at the precision of the attention's own dtype (input_dtype)."""
    _check_rows_sum_to_one(torch.from_numpy(attn64.sum(-1)), input_dtype)
    if attn64.min() < 0:
        raise NotAProbabilityError(
            f"attention rows must be non-negative, but one holds {attn64.min():.3g}: pass "
            "softmax probabilities, not scores or differences of maps")


def _check_finite(values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise NonFiniteValuesError(
            "values contain nan or inf, so the head output they constrain is undefined: check "
            "the model's inputs and weights (in float16, run the model in float32)")


def constraint_basis(values64: np.ndarray, input_dtype: torch.dtype):
    """values64 (m, n, d_head) float64, unpadded → (R (m, n, min(n, d_head) + 1), ranks (m,)):
    the first ranks[h] columns of R[h] are an orthonormal basis of span(V ∪ {1}) (the rest 0),
    so ranks = rank([V 1]) under the rank rule, and Rᵀp = Rᵀa ⟺ Σp = Σa and pᵀV = aᵀV."""
    m, n, d_head = values64.shape
    left, singular, _ = np.linalg.svd(values64, full_matrices=False)
    tolerance = rank_tolerance(torch.from_numpy(singular), torch.full((m,), n), d_head,
                               input_dtype).numpy()
    keep = singular > tolerance
    left = left * keep[:, None, :]
    outside = np.ones((m, n, 1)) - left @ (left.transpose(0, 2, 1) @ np.ones((m, n, 1)))
    outside -= left @ (left.transpose(0, 2, 1) @ outside)  # twice: orthogonal to rounding
    norm = np.linalg.norm(outside[..., 0], axis=-1)
    adds = norm > ONES_IN_SPAN * np.sqrt(n)
    basis = np.concatenate([left, np.zeros((m, n, 1))], axis=-1)
    column = keep.sum(-1)                                   # the ones direction follows V's
    for head in np.flatnonzero(adds):
        basis[head, :, column[head]] = outside[head, :, 0] / norm[head]
    return basis, (column + adds).astype(np.int64)


def _solve(constraint_basis, ranks, attn):
    """constraint_basis (m, n, c) float64, R of head h in [h, :, :ranks[h]]; ranks (m,) int64,
    each < n; attn (m, n, n) float64, rows summing to 1 → (vertices (m, n, n) float64, status
    (m, n) int8), by the compiled solver (efficient_kernel.py) where numba is installed."""
    out = np.empty_like(attn)
    status = np.empty(attn.shape[:2], dtype=np.int8)
    arrays = (np.ascontiguousarray(constraint_basis.transpose(0, 2, 1)),  # rows Rᵀ contiguous
              np.ascontiguousarray(ranks), np.ascontiguousarray(attn), out, status)
    if not efficient_kernel.COMPILED:
        efficient_kernel.solve_heads(*arrays)
        return out, status
    import numba

    # numba keeps its own thread pool; follow torch's setting (set_num_threads,
    # OMP_NUM_THREADS). Starting that pool (first call) resets OpenMP's default thread count,
    # which torch reads: put it back (as fused_cpu.py does).
    torch_threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS)))
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    with numba.parallel_chunksize(efficient_kernel.HEADS_PER_CHUNK):
        efficient_kernel.solve_heads(*arrays)
    return out, status


def _efficient_block(attn_block: np.ndarray, values_block: np.ndarray, input_dtype):
    """One example's real block: attn_block (m, n, n), values_block (m, n, d_head), NumPy views
    of the inputs. Returns (efficient attention (m, n, n) float64 or attn_block itself, status
    (m, n) int8)."""
    m, n, _ = attn_block.shape
    attn64 = attn_block.astype(np.float64)
    _check_probabilities(attn64, input_dtype)
    values64 = values_block.astype(np.float64)
    _check_finite(values64)
    basis, ranks = constraint_basis(values64, input_dtype)
    status = np.full((m, n), NOT_SOLVED_FOR, dtype=np.int8)
    free = np.flatnonzero(ranks < n)                    # heads whose polytope is not a point
    if free.size == 0:
        return attn_block, status
    rows = attn64[free] / attn64[free].sum(-1, keepdims=True)  # Σa = 1 in float64
    result = attn64.copy()                              # exact: A itself where nothing is free
    result[free], status[free] = _solve(basis[free], ranks[free], rows)
    return result, status


def _as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A NumPy view of a CPU copy (or of the tensor itself); dtypes NumPy lacks go via float32."""
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


def efficient_attention_with_status(attn: torch.Tensor, values: torch.Tensor,
                                    attention_mask: torch.Tensor | None = None):
    """efficient_attention and the status (..., query) int8 of each row: 0 solved, 1 solved by
    the fallback, 2 unsolved (left as A's row), −1 not solved for (A itself, or padding)."""
    check_inputs(attn, values, attention_mask)
    leading, n, d_head = attn.shape[:-2], attn.shape[-1], values.shape[-1]
    if attention_mask is None:  # one unpadded example whose "heads" are all leading matrices
        attention_mask = torch.ones(1, n, dtype=torch.bool, device=attn.device)
        batch, heads = 1, math.prod(leading)
    else:
        batch, heads = attn.shape[0], math.prod(leading[1:])
    # heads spelt out, not -1: reshape cannot infer it when batch, n or d_head is 0
    per_example = _as_numpy(attn).reshape(batch, heads, n, n)      # (batch, heads, query, key)
    values_per_example = _as_numpy(values).reshape(batch, heads, n, d_head)
    result = np.zeros(per_example.shape, dtype=per_example.dtype)
    status = np.full(per_example.shape[:-1], NOT_SOLVED_FOR, dtype=np.int8)
    indices, lengths, _ = _real_block_indices(attention_mask.cpu())
    for example, (rows, block) in enumerate(indices):
        if lengths[example] == 0:  # an all-padding row of the batch: nothing is real
            continue
        rows, block = (tuple(index.numpy() if isinstance(index, torch.Tensor) else index
                             for index in part) for part in (rows, block))
        result[example][block], status[example][rows] = _efficient_block(
            per_example[example][block], values_per_example[example][rows], attn.dtype)
    result = torch.from_numpy(result).to(attn.device, attn.dtype).reshape(attn.shape)
    return result, torch.from_numpy(status).reshape(attn.shape[:-1])


def efficient_attention(attn: torch.Tensor, values: torch.Tensor,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Efficient attention (PROJECT-DEFINED, after Naim & Asher 2024; see the module docstring).

    attn (..., query, key) probabilities, values (..., key, d_head), attention_mask (batch, key)
    with 1 = real token (None: every leading matrix is its own unpadded head). Returns a tensor
    shaped like attn, same dtype and device: each real row p is the vertex of
    {p ≥ 0, Σp = 1, pᵀV = aᵀV} that maximises Σ_j a_j p_j, with at most rank(V) + 1 non-zeros;
    A itself where that set is the single point a; padded rows and columns 0. Computed in
    float64 on the CPU, without gradients (a vertex is piecewise constant in A and V)."""
    return efficient_attention_with_status(attn, values, attention_mask)[0]
