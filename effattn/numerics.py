"""Numerical decisions, named once.

Dtype policy: the value matrix is factorised in float64 (it is only n×d_head, so this is cheap),
because its condition number reaches ~1e6 when n is close to d_head, and any route that squares
it in float32 (a Gram matrix VᵀV) gives wrong ranks. The large n×n products stay in the input's
dtype.

Rank tolerance: NumPy's `matrix_rank` rule, σ_max · max(n, d_head) · eps, with the eps of the
*input* dtype: singular values below it are indistinguishable from the rounding noise of the
values the model actually produced, so a float32 model is judged at float32 precision even
though the factorisation itself runs in float64.

Basis accuracy: a basis built from a Cholesky factor, Q = V L⁻ᵀ, is orthonormal only to about
eps64·κ² (κ the condition number of V). It is used as it is where that is below the input's
eps; otherwise a second Cholesky pass on Q (fused_cpu.py) or the SVD (value_basis.py) makes it
orthonormal to eps64, so float64 inputs meet float64 accuracy too.
"""

import torch

FACTORISATION_DTYPE = torch.float64


def rank_tolerance(singular_values: torch.Tensor, n_rows: torch.Tensor, d_head: int,
                   input_dtype: torch.dtype) -> torch.Tensor:
    """Threshold below which a singular value counts as zero.

    singular_values: (..., k) in descending order; n_rows: (...) rows of each matrix.
    Returns (..., 1), broadcastable against singular_values.
    """
    sigma_max = singular_values[..., :1]
    size = torch.clamp(n_rows, min=d_head).to(singular_values.dtype).unsqueeze(-1)
    return sigma_max * size * torch.finfo(input_dtype).eps
