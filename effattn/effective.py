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
from .value_basis import certified_tall_basis, value_basis

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


def _check_rows_sum_to_one(attn_block: torch.Tensor, query_mask=1, *, summed=False) -> None:
    row_sums = attn_block if summed else attn_block.sum(-1)
    row_error = (row_sums - query_mask).abs().max()
    if row_error > ROW_SUM_TOLERANCE:
        raise NotAProbabilityError(
            f"attention rows must sum to 1 over real keys, but one is off by {row_error.item():.3g}: "
            "pass softmax probabilities (eval mode, no dropout), not scores or averaged maps")


def _real_block_index(mask_row: torch.Tensor):
    """(rows, block) indexing one example's real tokens in (head, n, ·) and (head, n, n)
    tensors: plain slices when they form a prefix (the usual case), index tensors otherwise."""
    positions = mask_row.nonzero().squeeze(-1)
    n_real = positions.numel()
    if n_real == 0 or int(positions[-1]) == n_real - 1:
        return (slice(None), slice(0, n_real)), (slice(None), slice(0, n_real), slice(0, n_real))
    return (slice(None), positions), (slice(None), positions[:, None], positions[None, :])


def _decompose_one_example(attn, values, mask_row, check_rows):
    """Exact path for one example: attn (h, n, n), values (h, n, d_head), mask_row (n,).
    Returns (attn_real, attn_eff, rank (h,)), padded positions 0."""
    rows, block = _real_block_index(mask_row)
    attn_real, attn_eff = torch.zeros_like(attn), torch.zeros_like(attn)
    attn_real[block] = attn[block]
    attn_eff[block], rank = _decompose_block(attn_real[block], values[rows], check_rows)
    return attn_real, attn_eff, rank


def _decompose_block(attn_block, values_block, check_rows):
    """One example's real block: attn_block (m, n, n), values_block (m, n, d_head)."""
    if check_rows:
        _check_rows_sum_to_one(attn_block)
    basis, rank = value_basis(values_block)
    # A head whose V has full row rank has a trivial null space: A_eff is A, exactly.
    identifiable = rank == attn_block.shape[-1]
    if bool(identifiable.all()):
        return attn_block, rank
    attn_eff = (attn_block @ basis) @ basis.transpose(-1, -2)
    if bool(identifiable.any()):
        attn_eff = torch.where(identifiable[:, None, None], attn_block, attn_eff)
    return attn_eff, rank


def _project_onto_bases(attn, basis, real):
    """(A Q) Qᵀ on each example's real block; attn (e, h, n, n), basis (e, h, n, d_head)."""
    lengths = real.sum(-1).to(torch.int64)
    positions = torch.arange(real.shape[-1], device=real.device)
    if not torch.equal(real.bool(), positions[None, :] < lengths[:, None]):
        # Padded rows of the basis are 0, so padded keys drop out of attn @ basis by
        # themselves; masking the (query, d_head) product zeroes padded queries.
        return ((attn @ basis) * real[:, None, :, None]) @ basis.transpose(-1, -2)
    # Right padding (the usual case): crop each example to its length, so the two products
    # cost n_real² rather than n_padded² per head.
    attn_eff = torch.zeros_like(attn)
    for example, n_real in enumerate(lengths.tolist()):
        block_basis = basis[example, :, :n_real]
        attn_eff[example, :, :n_real, :n_real] = (
            attn[example, :, :n_real, :n_real] @ block_basis) @ block_basis.transpose(-1, -2)
    return attn_eff


def _decompose_tall_examples(attn, values, real, check_rows, keep_attn):
    """Batched path for examples longer than d_head: attn (e, h, n, n), values (e, h, n, d_head),
    real (e, n) float mask. Returns (attn_real or None, attn_eff, certified (e,) bool)."""
    query_mask = real[:, None, :, None]
    if check_rows:  # row sums over real keys, without writing a masked n × n copy
        row_sums = (attn @ real[:, None, :, None]).squeeze(-1) * real[:, None, :]
        _check_rows_sum_to_one(row_sums, real[:, None, :], summed=True)
    n_rows = real.sum(-1)[:, None].expand(values.shape[:2])
    basis, certified = certified_tall_basis(values * query_mask, n_rows)
    attn_eff = _project_onto_bases(attn, basis, real)
    attn_real = attn * (query_mask * real[:, None, None, :]) if keep_attn else None
    return attn_real, attn_eff, certified.all(-1)


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
    rank = torch.zeros(per_example.shape[:2], dtype=torch.int64, device=attn.device)
    n_real = attention_mask.sum(-1).to(torch.int64)[:, None].expand(rank.shape).clone()
    # Examples longer than d_head go through one batched call; short ones, and any example
    # with a head the fast path cannot certify, take the per-example exact path below.
    tall = (n_real[:, 0] > d_head).nonzero().squeeze(-1)
    done = torch.zeros(attn.shape[0], dtype=torch.bool, device=attn.device)
    if tall.numel():
        every = tall.numel() == attn.shape[0]
        pick = slice(None) if every else tall
        real_tall, eff_tall, certified = _decompose_tall_examples(
            per_example[pick], values_per_example[pick], attention_mask[pick].to(attn.dtype),
            check_rows, keep_attn)
        rank[tall[certified]] = d_head
        done[tall[certified]] = True
        if every and bool(certified.all()):  # the common case: no per-example work at all
            return (real_tall.reshape(attn.shape) if keep_attn else None,
                    eff_tall.reshape(attn.shape), rank.reshape(leading), n_real.reshape(leading))
    attn_real, attn_eff = torch.zeros_like(per_example), torch.zeros_like(per_example)
    if tall.numel():
        attn_eff[tall[certified]] = eff_tall[certified]
        if keep_attn:
            attn_real[tall[certified]] = real_tall[certified]
    for example in (~done).nonzero().squeeze(-1).tolist():
        attn_real[example], attn_eff[example], rank[example] = _decompose_one_example(
            per_example[example], values_per_example[example], attention_mask[example], check_rows)
    return (attn_real.reshape(attn.shape) if keep_attn else None, attn_eff.reshape(attn.shape),
            rank.reshape(leading), n_real.reshape(leading))


def effective_attention(attn: torch.Tensor, values: torch.Tensor,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """A_eff shaped like attn: the component of attn that reaches the head output."""
    return _decompose(attn, values, attention_mask, True, False)[1]
