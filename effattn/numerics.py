"""Numerical decisions, named once.

Dtype policy: the value matrix is factorised in float64 (it is only n×d_head, so this is cheap),
because its condition number reaches ~1e6 when n is close to d_head, and any route that squares
it in float32 (a Gram matrix VᵀV) gives wrong ranks. bfloat16 and float16 inputs are cast up
the same way. The large n×n products A Q Qᵀ stay in the input's dtype, except bfloat16 and
float16 on the CPU, which has no fast kernels for them: those run in float32 and are rounded
once. Results always come back in the input's dtype.

Rank rule: a singular value of V (n × d_head, as given, in its input dtype) counts as zero when
it is at or below

    tolerance = max(u_in · ‖V‖_F,  eps64 · max(n, d_head) · σ_max)

with u_in = eps(input dtype) / 2 the unit roundoff of the input dtype and eps64 float64's eps.
Why: the stored V is the exact one rounded entry by entry, V = V_exact + E with
|E_ij| ≤ u_in |V_ij| (round to nearest, ignoring underflow), so ‖E‖_2 ≤ ‖E‖_F ≤ u_in ‖V‖_F. By
Weyl's inequality a singular value at or below that bound cannot be told apart from an exact
zero, and dropping its direction changes A·V by no more than the rounding V already carries, so
A_eff·V = A·V holds to the input's precision. The second term is the rounding of the float64
factorisation itself; it only matters for float64 inputs. (NumPy's matrix_rank rule,
σ_max · max(n, d_head) · eps, bounds the error of an SVD computed *in* the input precision; ours
runs in float64, and scaling the input's eps by n made bfloat16 heads rank 0 once n·eps ≥ 1.)

Certificate: for the Cholesky factor L of V's smaller Gram matrix G, ‖L‖_F = ‖V‖_F ≥ σ_max and
σ_min ≥ 1/‖L⁻¹‖_F, so every singular value is above the tolerance (full rank under the rule)
when ‖L‖_F · ‖L⁻¹‖_F · max(u_in, eps64 · size) < 1, size = max(n, d_head). That holds for the
exact L; the computed one factors G plus the rounding of forming G and of the Cholesky
algorithm, LLᵀ = G + E with ‖E‖_2 ≤ 2 · eps64 · size · ‖V‖_F² (Higham, "Accuracy and Stability
of Numerical Algorithms", §3.5 and Thm 10.3). So σ_min² ≥ 1/‖L⁻¹‖_F² − ‖E‖_2, and the proof
needs (‖L‖_F · ‖L⁻¹‖_F)² · (max(u_in, eps64 · size)² + 2 · eps64 · size) < 1:
certificate_factor is the square root of that sum. Without the second term a float64 V with an
exactly repeated row passed about half the time (G's rounding makes its zero eigenvalue ~eps64
instead of 0, so L reports σ_min ~ 1e-8 · σ_max); with it, heads with ‖L‖_F · ‖L⁻¹‖_F above
~1e7 (far beyond what models produce) are left to the SVD.

Row sums: softmax rows are checked against 1 after summing in float64 (a sum in bfloat16 would
add n roundings of its own). Each stored probability carries a relative rounding of up to u_in,
and the softmax that made it rounds its normaliser too, so a genuine row misses 1 by up to a few
u_in: the tolerance is max(1e-3, 2 · eps(dtype)), loose for float32/float64 and past the rounding
of float16 (eps ~1e-3) and bfloat16 (eps ~8e-3), yet far tighter than any map that is not a
softmax output.

Basis accuracy: a basis built from a Cholesky factor, Q = V L⁻ᵀ, is orthonormal only to about
eps64·κ² (κ the condition number of V). It is used as it is where that is below the input's
eps; otherwise a second Cholesky pass on Q (fused_cpu.py) or the SVD (value_basis.py) makes it
orthonormal to eps64, so float64 inputs meet float64 accuracy too.
"""

import torch

FACTORISATION_DTYPE = torch.float64
EPS64 = torch.finfo(FACTORISATION_DTYPE).eps
# Rows of attention probabilities must sum to 1 within this, or 2·eps of their dtype if larger.
ROW_SUM_TOLERANCE = 1e-3


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = eps / 2: the largest relative error of rounding a real number to `dtype`."""
    return torch.finfo(dtype).eps / 2


def rank_tolerance(singular_values: torch.Tensor, n_rows: torch.Tensor | int, d_head: int,
                   input_dtype: torch.dtype) -> torch.Tensor:
    """Threshold at or below which a singular value counts as zero (the rank rule above).

    singular_values: (..., k) of float64 matrices, in descending order; n_rows: rows of each
    matrix, an int or a (...) tensor. Returns (..., 1), broadcastable against singular_values.
    """
    sigma_max = singular_values[..., :1]
    frobenius = torch.linalg.vector_norm(singular_values, dim=-1, keepdim=True)
    size = torch.clamp(torch.as_tensor(n_rows, device=singular_values.device), min=d_head)
    size = size.to(singular_values.dtype).unsqueeze(-1)
    return torch.maximum(unit_roundoff(input_dtype) * frobenius, EPS64 * size * sigma_max)


def certificate_factor(size, input_dtype: torch.dtype):
    """sqrt(max(u_in, eps64 · size)² + 2 · eps64 · size) for size = max(n, d_head), an int, a
    tensor or a NumPy array: full rank under the rank rule is certified when
    ‖L‖_F · ‖L⁻¹‖_F times this is below 1 (see the module docstring)."""
    if isinstance(size, torch.Tensor):
        size = size.to(FACTORISATION_DTYPE)
    u_in = unit_roundoff(input_dtype)
    rule = EPS64 * size  # max(u_in, eps64 · size), for tensors, arrays and numbers alike
    rule = rule.clip(min=u_in) if hasattr(rule, "clip") else max(rule, u_in)
    return (rule * rule + 2 * EPS64 * size) ** 0.5


def row_sum_tolerance(dtype: torch.dtype) -> float:
    """How far a softmax row of `dtype`, summed in float64, may miss 1 (see above)."""
    return max(ROW_SUM_TOLERANCE, 2 * torch.finfo(dtype).eps)
