"""The research code's effective attention (Sun & Marasović 2021), for comparison only.

Reproduces what their `BertEffectiveSelfAttention` computed, including its mistakes
(METHODS.md §1, "Padding"): a full SVD of the value matrix padded to the batch length, one rank
for the whole batch and every head (the largest), a tolerance of eps · 12 with no σ_max scaling,
and the padding mask applied to key columns only after the projection. On padded batches it
breaks A_eff @ V == A @ V; use `effective_attention` for real work.
"""

import torch

from .effective import check_inputs

__all__ = ["original_code_effective_attention"]

# Their tolerance was eps · max(U.shape[1], W.shape[1]): both are the head count of BERT-base.
ORIGINAL_TOLERANCE_FACTOR = 12


def original_code_effective_attention(attn: torch.Tensor, values: torch.Tensor,
                                      attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """A_eff as the original research code computed it (attn, values: (batch, head, n, ·))."""
    check_inputs(attn, values, attention_mask)
    left, singular, _ = torch.linalg.svd(values, full_matrices=True)
    tolerance = torch.finfo(singular.dtype).eps * ORIGINAL_TOLERANCE_FACTOR
    shared_rank = int((singular > tolerance).sum(-1).max())
    null_basis = left[..., shared_rank:]                      # (batch, head, n, n - rank)
    attn_eff = attn - (attn @ null_basis) @ null_basis.transpose(-1, -2)
    if attention_mask is not None:
        key_mask = attention_mask.to(attn.dtype).reshape(
            attn.shape[0], *([1] * (attn.ndim - 2)), attn.shape[-1])
        attn_eff = attn_eff * key_mask
    return attn_eff
