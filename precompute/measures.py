"""Per-head measures of attention maps: the columns of `head_measures` (docs/SCHEMA.md).

Every function works on a padded batch of maps `attn` (batch, head, query, key) and reads only
each example's real block: `real` (batch, key) is the attention mask as bool (right padding, so
the real block is the top-left n×n corner). Results are (batch, head). Reductions run in float64
so that a measure does not depend on how much padding its batch happened to carry.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

REDUCTION_DTYPE = torch.float64

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


def _pair_mask(real: torch.Tensor) -> torch.Tensor:
    """(batch, 1, query, key) 1.0 where both query and key are real tokens, else 0.0."""
    real = real.to(REDUCTION_DTYPE)
    return (real[:, :, None] * real[:, None, :])[:, None]


def _real_block(attn: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """attn in float64 with every padded query row and key column set to 0."""
    return attn.to(REDUCTION_DTYPE) * _pair_mask(real)


def column_weight(attn: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(batch, head, key): the weight each key receives, averaged over the real queries."""
    n_real = real.sum(dim=-1).to(REDUCTION_DTYPE)[:, None, None]
    return _real_block(attn, real).sum(dim=-2) / n_real


def cls_weight(attn: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(batch, head): weight on the [CLS] column (key 0) averaged over real queries."""
    return column_weight(attn, real)[..., 0]


def sep_weight(attn: torch.Tensor, real: torch.Tensor, is_sep: torch.Tensor) -> torch.Tensor:
    """(batch, head): the larger query-averaged weight of the [SEP] column(s) (NaN if none)."""
    columns = column_weight(attn, real).masked_fill(~is_sep[:, None, :], -torch.inf)
    best = columns.amax(dim=-1)
    return best.masked_fill(~is_sep.any(dim=-1)[:, None], torch.nan)


def cls_row_max(attn: torch.Tensor, is_type: torch.Tensor) -> torch.Tensor:
    """(batch, head): max weight of the [CLS] query row over keys of a type; NaN if absent."""
    cls_row = attn[:, :, 0, :].to(REDUCTION_DTYPE).masked_fill(~is_type[:, None, :], -torch.inf)
    best = cls_row.amax(dim=-1)
    return best.masked_fill(~is_type.any(dim=-1)[:, None], torch.nan)


def mean_row_entropy(attn: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(batch, head): mean over real queries of the entropy (nats) of |row| / sum |row|.

    For standard attention |row| / sum |row| is the row itself; for effective attention (rows
    with negative entries that need not sum to 1) it is the nearest distribution reading.
    """
    weights = _real_block(attn, real).abs()
    probs = weights / weights.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(REDUCTION_DTYPE).tiny)
    row_entropy = -torch.xlogy(probs, probs).sum(dim=-1)  # (batch, head, query); 0 on padding
    n_real = real.sum(dim=-1).to(REDUCTION_DTYPE)[:, None]
    return row_entropy.sum(dim=-1) / n_real


def frobenius_norm(attn: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(batch, head): Frobenius norm of each real block (of attn_null: ‖A − A_eff‖)."""
    return _real_block(attn, real).square().sum(dim=(-2, -1)).sqrt()


def map_cosine(attn: torch.Tensor, other: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(batch, head): cosine similarity of the flattened real blocks of two maps."""
    left, right = _real_block(attn, real), _real_block(other, real)
    dot = (left * right).sum(dim=(-2, -1))
    norms = left.square().sum(dim=(-2, -1)).sqrt() * right.square().sum(dim=(-2, -1)).sqrt()
    return dot / norms.clamp_min(torch.finfo(REDUCTION_DTYPE).tiny)


def map_measures(attn: torch.Tensor, pretrained: torch.Tensor, real: torch.Tensor,
                 types: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The kind-specific measures of one kind's maps: column name -> (batch, head) float32.

    pretrained: the pretrained model's map of the same kind on the same batch.
    types: `token_type_masks` of the batch.
    """
    columns = {
        "cls_weight": cls_weight(attn, real),
        "sep_weight": sep_weight(attn, real, types["sep"]),
        **{f"cls_row_{name}": cls_row_max(attn, mask) for name, mask in types.items()},
        "entropy": mean_row_entropy(attn, real),
        "pretrained_cosine": map_cosine(attn, pretrained, real),
    }
    return {name: values.to(torch.float32).numpy() for name, values in columns.items()}


def head_properties(attn_null: torch.Tensor, rank: torch.Tensor,
                    real: torch.Tensor) -> dict[str, np.ndarray]:
    """Measures of the head itself, repeated on every kind's rows: (batch, head) arrays."""
    seq_len = real.sum(dim=-1, keepdim=True).expand_as(rank)
    return {
        "seq_len": seq_len.to(torch.int32).numpy(),
        "rank": rank.to(torch.int16).numpy(),
        "nullity": (seq_len - rank).to(torch.int16).numpy(),
        "null_norm": frobenius_norm(attn_null, real).to(torch.float32).numpy(),
    }
