"""Every attention kind effattn offers, each one small function of a captured layer.

    standard        A, the attention probabilities
    effective       A_eff = A Q Qᵀ (Brunner et al. 2020), signed
    norm            α_ij ‖f(x_j)‖ / Σ_k α_ik ‖f(x_k)‖ (Kobayashi et al. 2020), rows sum to 1
    effective_norm  A_eff,ij ‖f(x_j)‖ / Σ_k α_ik ‖f(x_k)‖ (project-defined), signed
    efficient       sparse p ≥ 0, Σp = 1, pV = aV (project-defined, after Naim & Asher 2024)

Each function maps a `LayerCapture` to a (batch, head, query, key) tensor whose padded rows and
columns are 0. The norm kinds are divided by the row sums of the norm-weighted standard map, so
that both read as shares of a row's norm mass on the scale of standard attention, and
norm = effective_norm + (the null component weighted the same way).
"""

from typing import Callable

import torch

from .capture import LayerCapture
from .efficient import efficient_attention
from .errors import UnsupportedModelError
from .norm_weighted import norm_weighted_attention

__all__ = ["KIND_FUNCTIONS", "attention_kind"]


def _value_norms(capture: LayerCapture) -> torch.Tensor:
    if capture.value_norms is None:
        raise UnsupportedModelError(
            "this capture has no value norms because effattn did not find the model's output "
            "projection W_O: norm-weighted kinds need a BERT-family, DistilBERT or MPNet encoder")
    return capture.value_norms


def _norm_shares(attn: torch.Tensor, capture: LayerCapture) -> torch.Tensor:
    """attn weighted by ‖f(x_j)‖ and divided by the norm-weighted standard row sums."""
    norms = _value_norms(capture)
    weighted = norm_weighted_attention(attn, norms)
    own = attn is capture.attn  # the norm kind: its own row sums, no second n×n map
    row_mass = (weighted if own else norm_weighted_attention(capture.attn, norms)).sum(-1, keepdim=True)
    # in place: one fresh n×n map per kind (a second one cost ~20 % of a forward); a padded
    # query row has mass 0 and stays 0
    return weighted.div_(row_mass.clamp_min_(torch.finfo(row_mass.dtype).tiny))


def norm_kind(capture: LayerCapture) -> torch.Tensor:
    return _norm_shares(capture.attn, capture)


def effective_norm_kind(capture: LayerCapture) -> torch.Tensor:
    return _norm_shares(capture.attn_eff, capture)


def efficient_kind(capture: LayerCapture) -> torch.Tensor:
    return efficient_attention(capture.attn, capture.values, capture.attention_mask)


KIND_FUNCTIONS: dict[str, Callable[[LayerCapture], torch.Tensor]] = {
    "standard": lambda capture: capture.attn,
    "effective": lambda capture: capture.attn_eff,
    "norm": norm_kind,
    "effective_norm": effective_norm_kind,
    "efficient": efficient_kind,
}


def attention_kind(capture: LayerCapture, kind: str) -> torch.Tensor:
    """(batch, head, query, key) map of one kind for a captured layer."""
    if kind not in KIND_FUNCTIONS:
        raise ValueError(f"unknown attention kind {kind!r}: choose from {', '.join(KIND_FUNCTIONS)}")
    return KIND_FUNCTIONS[kind](capture)
