"""Effective attention: the part of each attention row that survives multiplication by V.

Shapes (one vocabulary across effattn):
    attn        (..., query, key)   attention probabilities; leading dims usually (batch, head)
    values      (..., key, d_head)  the head's value vectors
    attention_mask (batch, key)     1 = real token, 0 = padding (bool, or integers/floats 0 and 1)
For one example with n real tokens, let Q (n × rank) be an orthonormal basis of the column space
of its unpadded V. Then attn_eff = A Q Qᵀ and attn_null = A − attn_eff (METHODS.md §1): rows of
attn_null lie in the left null space of V, so attn_eff @ V == attn @ V. Every example is
computed on its own real block; padded rows and columns of the results are 0.
"""

import math
from dataclasses import dataclass

import torch

from .errors import InputShapeError, NotAProbabilityError
from .numerics import row_sum_tolerance
from .value_basis import certified_tall_bases, value_basis

try:  # numba compiles the CPU fast path; without it the same arithmetic runs as torch ops
    from .fused_cpu import fused_bases
except ImportError:
    fused_bases = None

__all__ = ["AttentionDecomposition", "decompose_attention", "effective_attention"]

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
    if attention_mask is not None:
        check_mask_values(attention_mask)


def check_mask_values(attention_mask: torch.Tensor) -> None:
    """A mask must mark each key real (1/True) or padding (0/False): any other value would
    give a negative or inflated count of real tokens."""
    if attention_mask.dtype == torch.bool:
        return
    binary = (attention_mask == 0) | (attention_mask == 1)
    if not bool(binary.all()):
        bad = attention_mask[~binary].flatten()[0].item()
        raise InputShapeError(
            f"attention_mask must hold only 0 and 1 (or False and True), got {bad!r}: pass the "
            "tokenizer's attention_mask (1 = real token, 0 = padding), e.g. mask.bool()")


def _check_row_error(row_error: float, dtype: torch.dtype) -> None:
    """row_error: the largest |sum over real keys − 1| of any real query row, summed in float64;
    dtype: the attention's, whose rounding the tolerance allows for (numerics.py)."""
    if not row_error <= row_sum_tolerance(dtype):  # nan fails too
        raise NotAProbabilityError(
            f"attention rows must sum to 1 over real keys, but one is off by {row_error:.3g}: "
            "pass softmax probabilities (eval mode, no dropout), not scores or averaged maps")


def _check_rows_sum_to_one(row_sums: torch.Tensor, dtype: torch.dtype | None = None) -> None:
    """row_sums: any shape, each a query row's sum over the real keys (best in float64); dtype:
    the attention's own, if it differs from row_sums'."""
    if row_sums.numel():
        _check_row_error((row_sums.double() - 1).abs().max().item(), dtype or row_sums.dtype)


def _row_sums(attn_block: torch.Tensor) -> torch.Tensor:
    """Each row's sum in float64: a sum in bfloat16 or float16 would add n roundings of its own."""
    return attn_block.sum(-1, dtype=torch.float64)


def _check_out(out, attn) -> None:
    if out is None:
        return
    if (out.shape != attn.shape or out.dtype != attn.dtype or out.device != attn.device
            or not out.is_contiguous()):
        raise InputShapeError(
            f"out must be a contiguous {attn.dtype} tensor shaped like attn {tuple(attn.shape)} on "
            f"{attn.device}, got {out.dtype} {tuple(out.shape)} on {out.device}: allocate it with "
            "torch.empty_like(attn)")
    if out.untyped_storage().data_ptr() == attn.untyped_storage().data_ptr():
        raise InputShapeError("out shares memory with attn, which is still read while out is "
                              "written: pass a separate buffer, e.g. torch.empty_like(attn)")


def _real_block_indices(attention_mask: torch.Tensor):
    """Per example, (rows, block) indexing its real tokens in (head, n, ·) and (head, n, n)
    tensors: plain slices when they form a prefix (the usual right padding), index tensors
    otherwise. Also returns the real lengths and which examples are prefixes, as lists."""
    attention_mask = attention_mask.bool()  # 0/1 integers or floats count like False/True
    lengths = attention_mask.sum(-1)
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    prefix = ((positions < lengths[:, None]) == attention_mask).all(-1).tolist()
    indices, lengths = [], lengths.tolist()
    for example, (n_real, is_prefix) in enumerate(zip(lengths, prefix)):
        if is_prefix:
            crop = slice(0, n_real)
            indices.append(((slice(None), crop), (slice(None), crop, crop)))
        else:
            kept = attention_mask[example].nonzero().squeeze(-1)
            indices.append(((slice(None), kept), (slice(None), kept[:, None], kept[None, :])))
    return indices, lengths, prefix


def _projected(attn_block: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """A Q Qᵀ for attn_block (m, n, n) and basis (m, n, k). bfloat16 and float16 products run
    in float32 on the CPU, which has no fast kernels for them (~10× slower at n = 2048), and
    are rounded to the input's dtype once."""
    if attn_block.device.type == "cpu" and attn_block.dtype in (torch.bfloat16, torch.float16):
        basis32 = basis.float()
        return ((attn_block.float() @ basis32) @ basis32.mT).to(attn_block.dtype)
    return (attn_block @ basis) @ basis.mT


def _decompose_block(attn_block, values_block, check_rows):
    """One example's real block: attn_block (m, n, n), values_block (m, n, d_head)."""
    if check_rows:
        _check_rows_sum_to_one(_row_sums(attn_block), attn_block.dtype)
    basis, rank = value_basis(values_block)
    # A head whose V has full row rank has a trivial null space: A_eff is A, exactly.
    identifiable = rank == attn_block.shape[-1]
    if bool(identifiable.all()):
        return attn_block, rank
    attn_eff = _projected(attn_block, basis)
    if bool(identifiable.any()):
        attn_eff = torch.where(identifiable[:, None, None], attn_block, attn_eff)
    return attn_eff, rank


def decompose_attention(attn: torch.Tensor, values: torch.Tensor,
                        attention_mask: torch.Tensor | None = None, *,
                        check_rows: bool = True,
                        out: torch.Tensor | None = None,
                        in_place: bool = False) -> AttentionDecomposition:
    """Split attn into its effective part and its null part, per example and head, exactly.
    `out`, if given, receives attn_eff (every element is written). `in_place`: zero attn's own
    padded rows and columns (then the result's .attn is attn itself) instead of returning a copy
    that has them zeroed, for a caller that is done with attn as it was."""
    return AttentionDecomposition(*_decompose(attn, values, attention_mask, check_rows,
                                              "in_place" if in_place else "copy", out))


def _fused_cpu_applies(attn, values) -> bool:
    """The compiled CPU pass takes float32 and float64 and is not differentiable: other dtypes
    and inputs needing gradients take torch ops."""
    needs_grad = torch.is_grad_enabled() and (attn.requires_grad or values.requires_grad)
    # Empty inputs (no examples, heads, tokens or value dimensions) have nothing to compile for.
    return (fused_bases is not None and attn.device.type == "cpu" and not needs_grad
            and attn.dtype in (torch.float32, torch.float64) and values.numel() > 0)


def _decompose(attn, values, attention_mask, check_rows, keep_attn, out):
    """(attn restricted to the real blocks or None, attn_eff, rank, n_real); keep_attn: False,
    "copy" or "in_place" (how the restricted attn is made)."""
    check_inputs(attn, values, attention_mask)
    _check_out(out, attn)
    leading, n, d_head = attn.shape[:-2], attn.shape[-1], values.shape[-1]
    if attention_mask is None:  # one unpadded example whose "heads" are all leading matrices
        attention_mask = torch.ones(1, n, dtype=torch.bool, device=attn.device)
        batch, heads = 1, math.prod(leading)
    else:
        batch, heads = attn.shape[0], math.prod(leading[1:])
    # heads spelt out, not -1: reshape cannot infer it when batch, n or d_head is 0
    per_example = attn.reshape(batch, heads, n, n)       # (batch, heads, query, key)
    values_per_example = values.reshape(batch, heads, n, d_head)
    indices, lengths, prefix = _real_block_indices(attention_mask)
    attn_eff = torch.empty_like(per_example) if out is None else out.view(per_example.shape)
    # Examples longer than d_head get a certified basis from one batched pass: compiled on the
    # CPU, where it also zeroes the padding and checks the rows of prefix examples, and settles
    # short examples of full rank (A_eff = A); torch ops elsewhere. Any example with a head
    # that pass cannot certify, and short ones off the compiled pass, take the exact path alone.
    if _fused_cpu_applies(attn, values):
        basis, certified, row_error = fused_bases(per_example, values_per_example, lengths,
                                                  prefix, attn_eff)
        prepared = prefix
        if check_rows:
            _check_row_error(float(row_error.max(initial=0.0)), attn.dtype)
        every_certified = certified.all(-1).tolist()
        finished = [every_certified[example] and length <= d_head
                    for example, length in enumerate(lengths)]
        bases = [basis[example, :, :length] if every_certified[example] and length > d_head
                 else None for example, length in enumerate(lengths)]
    else:
        prepared = finished = [False] * batch
        tall = {example: indices[example][0] for example, length in enumerate(lengths)
                if length > d_head}
        found = certified_tall_bases(values_per_example, tall) if tall else {}
        bases = [found.get(example) for example in range(batch)]
    rank = torch.full(per_example.shape[:2], d_head, dtype=torch.int64, device=attn.device)
    if prepared is prefix and _whole_batch_projects(bases, lengths, n):
        # (compiled pass only) every example fills the batch and has a certified basis: one
        # batched product for all, straight into the output, a fifth faster than one per example
        torch.matmul(torch.matmul(per_example, basis), basis.mT, out=attn_eff)
        indices = []  # nothing left to do per example
    row_sums = []
    for example, (rows, block) in enumerate(indices):
        if not prepared[example]:
            attn_eff[example].zero_()
        if lengths[example] == 0:  # an all-padding row of the batch: nothing is real
            rank[example] = 0
            continue
        if finished[example]:      # short, every head of full row rank: the block is A's
            rank[example] = lengths[example]
            continue
        attn_block = per_example[example][block]
        basis = bases[example]
        if basis is None:
            attn_eff[example][block], rank[example] = _decompose_block(
                attn_block, values_per_example[example][rows], check_rows and not prepared[example])
            continue
        if check_rows and not prepared[example]:  # checked once for the whole batch below
            row_sums.append(_row_sums(attn_block).flatten())
        attn_eff[example][block] = _projected(attn_block, basis)
    if row_sums:
        _check_rows_sum_to_one(torch.cat(row_sums), attn.dtype)
    n_real = torch.tensor(lengths, dtype=torch.int64, device=attn.device)  # int64 even if empty
    n_real = n_real[:, None].expand(rank.shape)
    attn_real = (_restricted_to_real_blocks(attn, per_example, attention_mask, lengths, prefix,
                                            in_place=keep_attn == "in_place") if keep_attn else None)
    return (attn_real, attn_eff.reshape(attn.shape), rank.reshape(leading),
            n_real.reshape(leading))


def _whole_batch_projects(bases, lengths, n) -> bool:
    """Whether every example is unpadded (n real tokens) and has a certified basis."""
    return all(length == n for length in lengths) and all(basis is not None for basis in bases)


def _restricted_to_real_blocks(attn, per_example, attention_mask, lengths, prefix, *, in_place=False):
    """attn with each example's padded rows and columns set to 0 (attn itself when none are):
    a copy, or attn itself zeroed in_place.

    Right-padded examples get two slices zeroed: a quarter of the time of a broadcast
    torch.where over the whole batch, which was most of capture's cost on padded batches."""
    n = per_example.shape[-1]
    if all(is_prefix and length == n for length, is_prefix in zip(lengths, prefix)):
        return attn
    restricted = per_example if in_place else per_example.clone()
    for example, (length, is_prefix) in enumerate(zip(lengths, prefix)):
        if is_prefix:
            restricted[example, :, length:] = 0
            restricted[example, :, :length, length:] = 0
        else:
            real = attention_mask[example].bool()
            restricted[example].mul_((real[:, None] & real[None, :]).to(restricted.dtype))
    return restricted.reshape(attn.shape)


def effective_attention(attn: torch.Tensor, values: torch.Tensor,
                        attention_mask: torch.Tensor | None = None, *,
                        out: torch.Tensor | None = None) -> torch.Tensor:
    """A_eff shaped like attn: the component of attn that reaches the head output. `out`, if
    given, receives it (every element is written), e.g. a buffer the caller has finished with."""
    return _decompose(attn, values, attention_mask, True, False, out)[1]
