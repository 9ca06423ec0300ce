"""MPNet's self-attention recomputed around effattn's attention step, for routing.py.

MPNet (transformers 5.23) computes attention inside MPNetSelfAttention.forward instead of calling
transformers' AttentionInterface, so the registered "effattn" implementation never sees it.
routing.py therefore replaces that forward, for the models it routes, by
`mpnet_self_attention`: the same projections, scaling and relative position bias as
transformers' own code, line for line, with the softmax, dropout and product with V handed to
routing's `attend` (which applies the model's attention map and calls the active handler).
"""

import math
from typing import Callable

import torch
from transformers.models.mpnet.modeling_mpnet import MPNetLayer, MPNetSelfAttention

__all__ = ["ATTENTION_CLASS", "RECORDED_OUTPUTS", "mpnet_self_attention"]

ATTENTION_CLASS = MPNetSelfAttention
# What transformers' _can_record_outputs would say if MPNet declared it (BERT-family models
# do): the layer modules and the self-attention modules, in run order.
RECORDED_OUTPUTS = {"hidden_states": MPNetLayer, "attentions": MPNetSelfAttention}

# (scores, value, attention_mask, dropout, training) -> (A·V (batch, head, query, d_head), A)
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, float, bool],
                  tuple[torch.Tensor, torch.Tensor]]


def mpnet_self_attention(module: MPNetSelfAttention, attend: Attend, hidden_states: torch.Tensor,
                         attention_mask: torch.Tensor | None = None,
                         position_bias: torch.Tensor | None = None, output_attentions: bool = False,
                         **kwargs):
    """MPNetSelfAttention.forward with `attend` between the scores and the output projection."""
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, module.attention_head_size)
    query = module.q(hidden_states).view(hidden_shape).transpose(1, 2)
    key = module.k(hidden_states).view(hidden_shape).transpose(1, 2)
    value = module.v(hidden_states).view(hidden_shape).transpose(1, 2)

    # MPNet divides by √d_head (not multiplies by d_head^-½) and adds the relative position
    # bias before the mask, as its own forward does; out of place, so torch.func can trace it.
    scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(module.attention_head_size)
    if position_bias is not None:
        scores = scores + position_bias
    context, attn = attend(scores, value, attention_mask, module.dropout.p, module.training)

    context = context.permute(0, 2, 1, 3).contiguous()
    context = context.view(*context.size()[:-2], module.all_head_size)
    output = module.o(context)
    return (output, attn) if output_attentions else (output,)
