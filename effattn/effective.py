"""Effective attention: the part of each attention row that survives multiplication by V.

Shapes (one vocabulary across effattn):
    attn        (..., query, key)   attention probabilities; leading dims usually (batch, head)
    values      (..., key, d_head)  the head's value vectors
    attention_mask (batch, key)     1 = real token, 0 = padding
For one example with n real tokens, let Q (n × rank) be an orthonormal basis of the column space
of its unpadded V. Then attn_eff = A Q Qᵀ and attn_null = A − attn_eff (METHODS.md §1): rows of
attn_null lie in the left null space of V, so attn_eff @ V == attn @ V. Every example is
computed on its own real block; padded rows and columns of the results are 0.
"""

from dataclasses import dataclass

import torch

from .errors import InputShapeError, NotAProbabilityError
from .value_basis import certified_tall_bases, value_basis

__all__ = ["AttentionDecomposition", "decompose_attention", "effective_attention"]

# Attention rows must sum to 1 within this; looser than float32 rounding, far tighter than any
# tensor that is not a softmax output.
ROW_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class AttentionDecomposition:
    """attn = attn_eff + attn_null on each example's real block; padded rows and columns are 0."""

    attn: torch.Tensor       # (..., query, key), the input restricted to each real block
    attn_eff: torch.Tensor   # (..., query, key), dtype of the input
    rank: torch.Tensor       # (...) int64: numerical rank of each head's unpadded V
    n_real: torch.Tensor     # (...) int64: real tokens of each example

    @property
    def attn_null(self) -> torch.Tensor:
        """(..., query, key): the part of attn in the left null space of V (derived on demand)."""
        return self.attn - self.attn_eff

    @property
    def nullity(self) -> torch.Tensor:
        """Dimension of the left null space of V: how many directions of A are invisible."""
        return self.n_real - self.rank


def check_inputs(attn, values, attention_mask) -> None:
    if attn.ndim < 2 or attn.shape[-1] != attn.shape[-2]:
        raise InputShapeError(
            f"attn must be (..., query, key) with query == key, got shape {tuple(attn.shape)}: "
            "pass self-attention probabilities, e.g. one layer of output_attentions")
    if values.ndim != attn.ndim or values.shape[:-1] != attn.shape[:-1]:
        raise InputShapeError(
            f"values must be (..., key, d_head) matching attn {tuple(attn.shape)}, got "
            f"{tuple(values.shape)}: split the value projection into heads first")
    if not attn.is_floating_point() or attn.dtype != values.dtype or attn.device != values.device:
        raise InputShapeError(
            f"attn and values must be floating tensors of one dtype and device, got "
            f"{attn.dtype}/{attn.device} and {values.dtype}/{values.device}: cast one to the other")
    if attention_mask is not None and (
            attn.ndim < 3 or tuple(attention_mask.shape) != (attn.shape[0], attn.shape[-1])):
        raise InputShapeError(
            f"attention_mask must be (batch, key) = ({attn.shape[0]}, {attn.shape[-1]}), got "
            f"{tuple(attention_mask.shape)}: pass the tokenizer's attention_mask for this batch")


def _check_rows_sum_to_one(row_sums: torch.Tensor) -> None:
    """row_sums: any shape, each a query row's sum over the real keys."""
    row_error = (row_sums - 1).abs().max()
    if row_error > ROW_SUM_TOLERANCE:
        raise NotAProbabilityError(
            f"attention rows must sum to 1 over real keys, but one is off by {row_error.item():.3g}: "
            "pass softmax probabilities (eval mode, no dropout), not scores or averaged maps")


def _real_block_indices(attention_mask: torch.Tensor):
    """Per example, (rows, block) indexing its real tokens in (head, n, ·) and (head, n, n)
    tensors: plain slices when they form a prefix (the usual right padding), index tensors
    otherwise. Also returns the real lengths as a list."""
    lengths = attention_mask.sum(-1)
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    prefix = ((positions < lengths[:, None]) == attention_mask.bool()).all(-1)
    indices, lengths = [], lengths.tolist()
    for example, (n_real, is_prefix) in enumerate(zip(lengths, prefix.tolist())):
        if is_prefix:
            crop = slice(0, n_real)
            indices.append(((slice(None), crop), (slice(None), crop, crop)))
        else:
            kept = attention_mask[example].nonzero().squeeze(-1)
            indices.append(((slice(None), kept), (slice(None), kept[:, None], kept[None, :])))
    return indices, lengths


def _decompose_block(attn_block, values_block, check_rows):
    """One example's real block: attn_block (m, n, n), values_block (m, n, d_head)."""
    if check_rows:
        _check_rows_sum_to_one(attn_block.sum(-1))
    basis, rank = value_basis(values_block)
    # A head whose V has full row rank has a trivial null space: A_eff is A, exactly.
    identifiable = rank == attn_block.shape[-1]
    if bool(identifiable.all()):
        return attn_block, rank
    attn_eff = (attn_block @ basis) @ basis.mT
    if bool(identifiable.any()):
        attn_eff = torch.where(identifiable[:, None, None], attn_block, attn_eff)
    return attn_eff, rank


def decompose_attention(attn: torch.Tensor, values: torch.Tensor,
                        attention_mask: torch.Tensor | None = None, *,
                        check_rows: bool = True) -> AttentionDecomposition:
    """Split attn into its effective part and its null part, per example and head, exactly."""
    return AttentionDecomposition(*_decompose(attn, values, attention_mask, check_rows, True))


def _decompose(attn, values, attention_mask, check_rows, keep_attn):
    """(attn restricted to the real blocks or None, attn_eff, rank, n_real)."""
    check_inputs(attn, values, attention_mask)
    leading, n, d_head = attn.shape[:-2], attn.shape[-1], values.shape[-1]
    if attention_mask is None:  # every leading matrix is one unpadded block
        attn_eff, rank = _decompose_block(
            attn.reshape(-1, n, n), values.reshape(-1, n, d_head), check_rows)
        n_real = torch.full(leading, n, dtype=torch.int64, device=attn.device)
        return attn, attn_eff.reshape(attn.shape), rank.reshape(leading), n_real
    per_example = attn.reshape(attn.shape[0], -1, n, n)      # (batch, heads…, query, key)
    values_per_example = values.reshape(attn.shape[0], -1, n, d_head)
    indices, lengths = _real_block_indices(attention_mask)
    # Examples longer than d_head share one batched float64 factorisation; short ones, and
    # any example with a head the fast path cannot certify, take the exact path per example.
    tall = [example for example, length in enumerate(lengths) if length > d_head]
    bases = certified_tall_bases(
        values_per_example, {example: indices[example][0] for example in tall}) if tall else {}
    attn_eff = torch.zeros_like(per_example)
    attn_real = torch.zeros_like(per_example) if keep_attn else None
    rank = torch.full(per_example.shape[:2], d_head, dtype=torch.int64, device=attn.device)
    row_sums = []
    for example, (rows, block) in enumerate(indices):
        if lengths[example] == 0:  # an all-padding row of the batch: nothing is real
            rank[example] = 0
            continue
        attn_block = per_example[example][block]
        if keep_attn:
            attn_real[example][block] = attn_block
        basis = bases.get(example)
        if basis is None:
            attn_eff[example][block], rank[example] = _decompose_block(
                attn_block, values_per_example[example][rows], check_rows)
            continue
        if check_rows:  # checked once for the whole batch below
            row_sums.append(attn_block.sum(-1).flatten())
        attn_eff[example][block] = (attn_block @ basis) @ basis.mT
    if row_sums:
        _check_rows_sum_to_one(torch.cat(row_sums))
    n_real = torch.tensor(lengths, device=attn.device)[:, None].expand(rank.shape)
    return (attn_real.reshape(attn.shape) if keep_attn else None, attn_eff.reshape(attn.shape),
            rank.reshape(leading), n_real.reshape(leading))


def effective_attention(attn: torch.Tensor, values: torch.Tensor,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """A_eff shaped like attn: the component of attn that reaches the head output."""
    return _decompose(attn, values, attention_mask, True, False)[1]
