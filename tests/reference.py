"""Independent float64 reference for effective attention: NumPy SVD, one head at a time."""

import numpy as np


def reference_effective_attention(attn, values, n_real=None, input_eps=None):
    """attn (n, n), values (n, d) for one head; only the first n_real tokens are real."""
    attn = np.asarray(attn, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    n = attn.shape[0] if n_real is None else n_real
    block, v = attn[:n, :n], values[:n]
    left, singular, _ = np.linalg.svd(v, full_matrices=False)
    eps = np.finfo(np.float64).eps if input_eps is None else input_eps
    rank = int((singular > singular.max() * max(v.shape) * eps).sum())
    basis = left[:, :rank]
    effective = np.zeros_like(attn)
    effective[:n, :n] = block @ basis @ basis.T
    return effective, rank
