"""Per-head measures of attention maps: the columns of `head_measures` (docs/SCHEMA.md).

`map_measures` and `head_properties`, which extract calls on every layer, take a padded batch of
maps (batch, head, query, key) whose entries outside each example's real block are already 0, as
`effattn.capture_attention` returns them, so they skip the masking; `real` (batch, key) is the
attention mask as bool (right padding, so the real block is the top-left n×n corner). Results are
(batch, head).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# Reductions run in float32: a sum over at most seq_len² ≤ 16k terms loses ~1e-6 relative, far
# below what the stored f32 columns resolve, and float64 would double the time of this stage's
# largest passes over memory.
REDUCTION_DTYPE = torch.float32

# cls_row_<name> column -> the POS tags (precompute.pos) that count as that token type.
TOKEN_TYPES: dict[str, tuple[str, ...]] = {
    "noun": ("NOUN",), "pron": ("PRON",), "verb": ("VERB",),
    "sep": ("[SEP]",), "cls": ("[CLS]",), "punct": ("PUNCT",),
}


def token_type_masks(pos_tags: Sequence[Sequence[str]], n_key: int) -> dict[str, torch.Tensor]:
    """Per token type, a (batch, key) bool mask of the keys tagged with it (padding False)."""
    masks = {name: torch.zeros(len(pos_tags), n_key, dtype=torch.bool) for name in TOKEN_TYPES}
    for row, tags in enumerate(pos_tags):
        for key, tag in enumerate(tags):
            for name, wanted in TOKEN_TYPES.items():
                if tag in wanted:
                    masks[name][row, key] = True
    return masks


def _n_real(real: torch.Tensor) -> torch.Tensor:
    """(batch, 1) real tokens per example, in the reduction dtype."""
    return real.sum(dim=-1, keepdim=True).to(REDUCTION_DTYPE)


def _column_weight_of(block: torch.Tensor, n_real: torch.Tensor) -> torch.Tensor:
    """(batch, head, key): the weight each key receives, averaged over the real queries."""
    return block.sum(dim=-2) / n_real[..., None]


def _masked_max(weights: torch.Tensor, is_type: torch.Tensor) -> torch.Tensor:
    """(batch, head): max of weights (batch, head, key) over the keys of a type; NaN if none."""
    best = weights.masked_fill(~is_type[:, None, :], -torch.inf).amax(dim=-1)
    return best.masked_fill(~is_type.any(dim=-1)[:, None], torch.nan)


def _masked_sum(weights: torch.Tensor, is_type: torch.Tensor) -> torch.Tensor:
    """(batch, head): sum of weights (batch, head, key) over the keys of a type; NaN if none."""
    total = (weights * is_type[:, None, :]).sum(dim=-1)
    return total.masked_fill(~is_type.any(dim=-1)[:, None], torch.nan)


def _support_share(block: torch.Tensor, n_real: torch.Tensor) -> torch.Tensor:
    """(batch, head): mean over real queries of the share of real keys with a non-zero weight.

    Exact zeros only: softmax rows have full support (1.0), efficient attention's rows at most
    rank(V) + 1 keys. Padded rows and columns are 0 and count for nothing.
    """
    return (block != 0).sum(dim=(-2, -1)).to(REDUCTION_DTYPE) / n_real**2


def _entropy_of(block: torch.Tensor, n_real: torch.Tensor) -> torch.Tensor:
    """(batch, head): mean over real queries of the entropy (nats) of |row| / sum |row|.

    For standard attention |row| / sum |row| is the row itself; for effective attention (rows
    with negative entries that need not sum to 1) it is the nearest distribution reading.
    """
    # With w = |row| and S = sum w, the entropy of w / S is log S − (sum w log w) / S: one pass
    # over the map fewer than normalising first. Padded rows (S = 0) contribute 0.
    weights = block.abs()
    total = weights.sum(dim=-1)  # (batch, head, query)
    safe_total = total.clamp_min(torch.finfo(REDUCTION_DTYPE).tiny)
    row_entropy = torch.log(safe_total) - torch.xlogy(weights, weights).sum(dim=-1) / safe_total
    return torch.where(total > 0, row_entropy, 0.0).sum(dim=-1) / n_real


def _norm_of(block: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(block, dim=(-2, -1))


def _cosine_of(block: torch.Tensor, other: torch.Tensor, norm: torch.Tensor, other_norm: torch.Tensor):
    dot = torch.einsum("bhqk,bhqk->bh", block, other)
    return dot / (norm * other_norm).clamp_min(torch.finfo(REDUCTION_DTYPE).tiny)


def map_measures(attn: torch.Tensor, pretrained: torch.Tensor, real: torch.Tensor,
                 types: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The kind-specific measures of one kind's maps: column name -> (batch, head) float32.

    attn, pretrained: this kind's map of the model and of the pretrained model on the same batch,
    already 0 outside each real block, as `effattn.capture_attention` returns them
    (LayerCapture), so they are only converted here, not masked again.
    types: `token_type_masks` of the batch.
    """
    block, other, n_real = attn.to(REDUCTION_DTYPE), pretrained.to(REDUCTION_DTYPE), _n_real(real)
    column_weight = _column_weight_of(block, n_real)
    columns = {
        "cls_weight": column_weight[..., 0],
        "sep_weight": _masked_max(column_weight, types["sep"]),
        "punct_weight": _masked_sum(column_weight, types["punct"]),
        "support_share": _support_share(block, n_real),
        **{f"cls_row_{name}": _masked_max(block[:, :, 0, :], mask) for name, mask in types.items()},
        "entropy": _entropy_of(block, n_real),
        "pretrained_cosine": _cosine_of(block, other, _norm_of(block), _norm_of(other)),
    }
    return {name: values.to(torch.float32).numpy() for name, values in columns.items()}


def head_properties(capture, attn_null: torch.Tensor) -> dict[str, np.ndarray]:
    """Measures of the head itself, repeated on every kind's rows: (batch, head) arrays.

    capture: the layer's `effattn.LayerCapture`, whose n_real, rank and nullity are taken as
    they are. attn_null: its attn − attn_eff on the CPU, already 0 outside the real blocks.
    """
    rank = capture.rank.cpu()
    return {
        "seq_len": capture.n_real.cpu()[:, None].expand_as(rank).to(torch.int32).numpy(),
        "rank": rank.to(torch.int16).numpy(),
        "nullity": capture.nullity.cpu().to(torch.int16).numpy(),
        "null_norm": _norm_of(attn_null.to(REDUCTION_DTYPE)).to(torch.float32).numpy(),
    }
