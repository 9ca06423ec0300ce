"""How far an attention row is from a gradient attribution row: the columns of `attribution`.

Every function takes rows over the real keys only (an example's cropped n × n block, or any
(..., key) stack of rows) and compares them row by row. Attention rows of signed kinds
(effective, effective_norm) are read as the distribution |row| / Σ|row| by all three
measures, as head_measures' entropy reads them; attribution rows are already non-negative.

    jensen_shannon   JSD in bits (base 2), in [0, 1]; 0 for identical rows
    kendall_tau_b    Kendall's τ-b with ties (scipy.stats.kendalltau's default variant)
    top1_agreement   1 where both rows have their largest entry on the same key, else 0
"""

from __future__ import annotations

import math

import torch

from precompute.schema import ATTRIBUTION_MEASURES as MEASURES  # the f32 columns of `attribution`

# Kendall τ-b compares every pair of keys of a row: chunks of rows are sized so that one
# (rows, pairs) sign tensor holds about this many entries (16 MB as float32), which keeps the
# stage's memory flat whatever the sequence length.
KENDALL_CHUNK_ELEMENTS = 1 << 22
# The measures are computed in float64: the blocks are small next to the gradient work, and a
# JSD of near-identical rows is a difference of nearly equal entropies.
AGREEMENT_DTYPE = torch.float64


def as_distributions(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(|rows| / Σ|rows|, has_mass): rows (..., key) as distributions and (...,) bool whether a
    row has any mass at all (an all-zero row stays 0 and is left out of every mean)."""
    weights = rows.to(AGREEMENT_DTYPE).abs()
    total = weights.sum(-1, keepdim=True)
    return weights / total.clamp_min(torch.finfo(AGREEMENT_DTYPE).tiny), total[..., 0] > 0


def _entropy_bits(p: torch.Tensor) -> torch.Tensor:
    return -torch.xlogy(p, p).sum(-1) / math.log(2)


def jensen_shannon(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(...,) Jensen–Shannon divergence (bits) of distributions p, q (..., key): H(m) − (H(p) + H(q)) / 2
    with m = (p + q) / 2, clamped to [0, 1] against rounding."""
    return (_entropy_bits((p + q) / 2) - (_entropy_bits(p) + _entropy_bits(q)) / 2).clamp(0, 1)


def kendall_tau_b(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(...,) Kendall's τ-b of rows x (..., key) against rows y, ties counted as scipy does:
    (concordant − discordant) / √((pairs − ties in x) · (pairs − ties in y)); NaN where a row is
    constant (or has fewer than two keys), as scipy returns it. y's shape is a trailing part of
    x's (e.g. x (kind, head, query, key), y (head, query, key)): y's signs are then computed once
    for every leading index of x."""
    if x.shape[x.dim() - y.dim():] != y.shape:
        raise ValueError(f"y's shape {tuple(y.shape)} must end x's shape {tuple(x.shape)}")
    n = x.shape[-1]
    first, second = torch.triu_indices(n, n, 1, device=x.device)  # every pair of keys once
    flat_y = y.reshape(-1, n)  # (row, key)
    flat_x = x.reshape(-1, *flat_y.shape)  # (leading, row, key)
    rows_per_chunk = max(1, KENDALL_CHUNK_ELEMENTS // max(1, len(first) * len(flat_x)))
    taus = [_tau_of_chunk(flat_x[:, start:start + rows_per_chunk], flat_y[start:start + rows_per_chunk], first, second)
            for start in range(0, len(flat_y), rows_per_chunk)]
    return torch.cat(taus, -1).reshape(x.shape[:-1]) if taus else torch.full(x.shape[:-1], torch.nan, dtype=AGREEMENT_DTYPE)


def _tau_of_chunk(x: torch.Tensor, y: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """(leading, row) τ-b of rows x (leading, row, key) against y (row, key), from the signs of
    their differences over the key pairs, in the rows' own dtype: a float difference is 0
    exactly at a tie, so the signs are exact."""
    sign_y = torch.sign(y[:, first] - y[:, second])  # (row, pair)
    sign_x = torch.sign(x[..., first] - x[..., second])  # (leading, row, pair)
    score = torch.linalg.vecdot(sign_x, sign_y).to(AGREEMENT_DTYPE)  # concordant − discordant, exact integers
    untied = sign_x.count_nonzero(-1).to(AGREEMENT_DTYPE) * sign_y.count_nonzero(-1).to(AGREEMENT_DTYPE)
    return torch.where(untied > 0, score / untied.sqrt(), torch.nan)


def top1_agreement(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(...,) 1.0 where the rows x, y (..., key) take their maximum at the same key (first one on
    ties, as numpy.argmax), else 0.0; x is read as |x|."""
    return (x.abs().argmax(-1) == y.argmax(-1)).to(AGREEMENT_DTYPE)


def _mean_over_queries(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(...,) mean of values (..., query) over the queries where keep is True; NaN if none."""
    values = torch.where(keep & ~values.isnan(), values, torch.nan)
    return values.nanmean(-1)


def agreement_measures(attn: torch.Tensor, attribution: torch.Tensor) -> dict[str, torch.Tensor]:
    """measure -> (...) float64: jsd, kendall_tau, top1_agreement of each head, averaged over its
    queries. attn: (..., query, key) attention blocks over the real tokens (e.g. (kind, head,
    n, n)); attribution: the matching attribution blocks, a trailing part of attn's shape
    (e.g. (head, n, n)), shared by every leading index.
    Queries where either row has no mass are left out; a mean over no query is NaN."""
    p, attn_mass = as_distributions(attn)
    q, attribution_mass = as_distributions(attribution)
    keep = attn_mass & attribution_mass  # broadcast to attn's shape
    return {
        "jsd": _mean_over_queries(jensen_shannon(p, q), keep),
        # ranks need no normalising: the rows as they are (float32) give the same τ, faster
        "kendall_tau": _mean_over_queries(kendall_tau_b(attn.abs(), attribution.abs()), keep),
        "top1_agreement": _mean_over_queries(top1_agreement(attn, attribution), keep),
    }
