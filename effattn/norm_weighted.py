"""Norm-weighted attention (Kobayashi et al. 2020): how much each key's vector actually contributes.

A head's output at query i is Σ_j α_ij f(x_j), with f(x_j) = (x_j W_V + b_V) W_O the key's value
vector mapped through the head's slice of the output projection (value bias included; output
bias, residual and LayerNorm excluded, as in the authors' code). Kobayashi et al. read the head
by ‖α_ij f(x_j)‖ = α_ij ‖f(x_j)‖ instead of α_ij: a large weight on a key whose transformed
vector is short contributes little. The effective counterpart A_eff,ij ‖f(x_j)‖ (signed) is the
comparison Sun & Marasović name as future work.

Shapes (effattn's vocabulary):
    values          (batch, head, key, d_head)  value vectors x_j W_V + b_V
    output_weight   (head, d_head, d_model)     the head's rows of W_O (f(x_j) = v_j @ output_weight[h])
    value_norms     (batch, head, key)          ‖f(x_j)‖, 0 at padded keys
    attn            (batch, head, query, key)
"""

import torch
from torch import nn

from .effective import check_mask_values
from .errors import UnsupportedModelError

__all__ = ["head_output_weights", "norm_weighted_attention", "output_projections",
           "transformed_value_norms"]

# Child names of an attention module's value projection and own output projection, across the
# encoders transformers ships (BERT/RoBERTa/ELECTRA/MiniLM: query/key/value, the output in the
# parent's `output.dense`; DistilBERT: v_lin/out_lin; MPNet: v/o; BART-style: v_proj/out_proj).
_VALUE_NAMES = ("value", "v_lin", "v", "v_proj")
_OUTPUT_NAMES = ("out_lin", "o", "out_proj", "o_proj")


def output_projections(model: nn.Module) -> tuple[nn.Linear, ...]:
    """Each self-attention layer's output projection W_O, in the order the layers run.

    An attention module is one with a value projection child; its W_O is its own output child
    or, in the BERT family, its parent's `output.dense`. Registration order is execution order
    for the encoders transformers ships.
    """
    parents = {id(child): module for module in model.modules() for child in module.children()}
    found = []
    for module in model.modules():
        value = next((getattr(module, name) for name in _VALUE_NAMES
                      if isinstance(getattr(module, name, None), nn.Linear)), None)
        if value is None:
            continue
        output = next((getattr(module, name) for name in _OUTPUT_NAMES
                       if isinstance(getattr(module, name, None), nn.Linear)), None)
        if output is None:
            sibling = getattr(parents.get(id(module)), "output", None)
            output = getattr(sibling, "dense", None)
        if not isinstance(output, nn.Linear) or output.in_features != value.out_features:
            raise UnsupportedModelError(
                f"{type(module).__name__} has a value projection but no output projection effattn "
                "recognises (own out_lin/o/out_proj/o_proj, or parent output.dense): norm-weighted "
                "attention needs W_O; use a BERT-family, DistilBERT or MPNet encoder")
        found.append(output)
    return tuple(found)


def head_output_weights(projection: nn.Linear, n_heads: int) -> torch.Tensor:
    """(head, d_head, d_model): W_O split by head, a view of the weights (no copy)."""
    weight = projection.weight  # (d_model, head · d_head), nn.Linear stores (out, in)
    d_model, width = weight.shape
    if width % n_heads:
        raise UnsupportedModelError(
            f"output projection input width {width} is not a multiple of {n_heads} heads: the "
            "model does not concatenate equal-width heads before W_O")
    return weight.view(d_model, n_heads, width // n_heads).permute(1, 2, 0)


def transformed_value_norms(values: torch.Tensor, output_weight: torch.Tensor,
                            attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, head, key): ‖v_j W_O^h‖ for every key, 0 at padded keys.

    Computed as sqrt(v_j G_h v_jᵀ) with the head's (d_head × d_head) Gram matrix
    G_h = W_O^h W_O^hᵀ, which costs d_head² per key instead of d_head·d_model.
    attention_mask: (batch, key), bool or 0/1 (another value would scale the norms).
    """
    if attention_mask is not None:
        check_mask_values(attention_mask)
    weight = output_weight.to(values.dtype)
    gram = weight @ weight.transpose(-1, -2)  # (head, d_head, d_head)
    n_batch, n_head, n_key, d_head = values.shape
    # one (batch·key × d_head) product per head: far fewer, larger matmuls than per (batch, head);
    # sizes spelt out (no -1), so empty batches, sequences or heads keep their shapes
    flat = values.transpose(0, 1).reshape(n_head, n_batch * n_key, d_head)
    squared = (torch.bmm(flat, gram) * flat).sum(-1).view(n_head, n_batch, n_key).transpose(0, 1)
    norms = squared.clamp_min(0).sqrt()  # rounding can push a tiny square below 0
    if attention_mask is not None:
        norms = norms * attention_mask[:, None, :].to(norms.dtype)
    return norms


def norm_weighted_attention(attn: torch.Tensor, value_norms: torch.Tensor) -> torch.Tensor:
    """(..., query, key): attn_ij · ‖f(x_j)‖, Kobayashi et al.'s ‖α_ij f(x_j)‖ (unnormalised).

    attn may be standard or effective attention; value_norms is (..., key).
    """
    return attn * value_norms.unsqueeze(-2)
