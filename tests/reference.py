"""Independent float64 reference for effective attention: NumPy SVD, one head at a time."""

import numpy as np


def reference_effective_attention(attn, values, n_real=None, input_eps=None):
    """attn (n, n), values (n, d) for one head; only the first n_real tokens are real.

    The rank follows effattn/numerics.py's documented rule, written out here independently: a
    singular value counts as zero at or below max(u_in·‖V‖_F, eps64·max(n, d)·σ_max), u_in half
    the input dtype's eps (input_eps; default float64's)."""
    attn = np.asarray(attn, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    n = attn.shape[0] if n_real is None else n_real
    block, v = attn[:n, :n], values[:n]
    left, singular, _ = np.linalg.svd(v, full_matrices=False)
    eps64 = np.finfo(np.float64).eps
    unit_roundoff = (eps64 if input_eps is None else input_eps) / 2
    sigma_max = singular.max(initial=0.0)
    tolerance = max(unit_roundoff * np.linalg.norm(singular), eps64 * max(v.shape) * sigma_max)
    rank = int((singular > tolerance).sum())
    basis = left[:, :rank]
    effective = np.zeros_like(attn)
    effective[:n, :n] = block @ basis @ basis.T
    return effective, rank
