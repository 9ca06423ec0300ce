"""Run a model with every head's A replaced by A_eff, as the paper did at test time.

Because A_eff V = A V, the logits must not change (to float tolerance): a running check of the
decomposition on the real model. The original-code method is offered for comparison; it breaks
the identity on padded batches and so changes predictions.
"""

from contextlib import contextmanager
from typing import Iterator, Literal

import torch

from .effective import effective_attention
from .original_code import original_code_effective_attention
from .routing import routed_attention

__all__ = ["effective_attention_substituted"]

_METHODS = {
    "exact": effective_attention,
    "original_code": original_code_effective_attention,
}


@contextmanager
def effective_attention_substituted(
        model: torch.nn.Module, *,
        method: Literal["exact", "original_code"] = "exact") -> Iterator[torch.nn.Module]:
    """Inside the block, `model(...)` multiplies V by A_eff instead of A in every head."""
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
    compute = _METHODS[method]

    def substitute(attn, values, key_mask, spare):
        return compute(attn, values, key_mask).to(attn.dtype)

    with routed_attention(model, substitute):
        yield model
