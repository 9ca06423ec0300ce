"""Route a transformers model's attention through effattn, without forking transformers.

transformers (≥ 5) calls every attention layer through `AttentionInterface`. We register one
implementation, "effattn", that computes exactly what the eager implementation computes
(softmax(QKᵀ·scaling + mask) V, or another attention map a model was given with
`sparse_attention.set_attention_map`, read from the module's config) and hands each layer's probabilities and value vectors to the
active session, which may record them or replace A before it multiplies V. The session also
gets the layer's attention scores as a spare buffer once softmax has consumed them (without
gradients only), so what it computes per layer can go there instead of into fresh memory. A
model loaded with sdpa or flash attention is switched to it for the duration of the session and
restored afterwards, so it never returns silently wrong results.
"""

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

from .errors import UnsupportedModelError
from .sparse_attention import normalizer, parse_attention_map, softmax

IMPLEMENTATION_NAME = "effattn"
CONFIG_ATTRIBUTE = "attention_map"  # where a model's config keeps the name of its attention map

# Called with (attn (batch, head, query, key), values (batch, head, key, d_head),
# key_mask (batch, key) bool, spare: a contiguous tensor shaped like attn that the forward no
# longer needs, free to overwrite and keep, or None when gradients are on); returns the
# attention probabilities to multiply V with.
LayerHandler = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None],
                        torch.Tensor]

_active_handler: ContextVar[LayerHandler | None] = ContextVar("effattn_handler", default=None)


def _key_mask(attention_mask: torch.Tensor | None, attn: torch.Tensor) -> torch.Tensor:
    """(batch, key) bool from the 4D mask transformers built; bidirectional rows are all alike."""
    if attention_mask is None:
        return torch.ones(attn.shape[0], attn.shape[-1], dtype=torch.bool, device=attn.device)
    first_row = attention_mask[:, 0, 0, :]
    return first_row if first_row.dtype == torch.bool else first_row == 0


def _normalizer_of(module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The module's attention map (softmax unless its config names another)."""
    name = getattr(getattr(module, "config", None), CONFIG_ATTRIBUTE, None)
    return normalizer(name) if name else softmax


def _attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                       **kwargs):
    """Eager attention with a hook between softmax and the product with V."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    attn = _normalizer_of(module)(scores)
    attn = torch.nn.functional.dropout(attn, p=dropout, training=module.training)
    handler = _active_handler.get()
    if handler is not None:
        # scores is this function's own tensor and softmax has consumed it: reusable, unless
        # autograd may still need the graph it belongs to.
        reusable = (not torch.is_grad_enabled() and scores.is_contiguous()
                    and scores.shape == attn.shape and scores.dtype == attn.dtype)
        spare = scores if reusable else None
        attn = handler(attn, value, _key_mask(attention_mask, attn), spare)
    output = torch.matmul(attn, value).transpose(1, 2).contiguous()  # (batch, query, head, d_head)
    return output, attn


AttentionInterface.register(IMPLEMENTATION_NAME, _attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION_NAME, eager_mask)


def check_supported(model: torch.nn.Module) -> None:
    """Raise UnsupportedModelError unless the model routes attention through AttentionInterface."""
    config = getattr(model, "config", None)
    if (config is None or not hasattr(model, "set_attn_implementation")
            or not getattr(model, "_supports_attention_backend", False)):
        raise UnsupportedModelError(
            f"{type(model).__name__} does not route attention through transformers' "
            "AttentionInterface, so effattn cannot see its attention weights and values: use a "
            "transformers (≥ 5) encoder such as BERT, RoBERTa, DistilBERT, ELECTRA or MiniLM")


def set_implementation(model: torch.nn.Module) -> None:
    """Route the model's attention through effattn's implementation (until set back)."""
    model.set_attn_implementation(IMPLEMENTATION_NAME)


@contextmanager
def routed_attention(model: torch.nn.Module, handler: LayerHandler) -> Iterator[None]:
    """Inside the block, every attention layer of `model` calls `handler`; restored on exit."""
    check_supported(model)
    previous = model.config._attn_implementation
    token = _active_handler.set(handler)
    try:
        set_implementation(model)
        yield
    finally:
        _active_handler.reset(token)
        model.set_attn_implementation(previous)


def attention_map_of(model: torch.nn.Module) -> str:
    """The attention map a model runs with: "softmax" unless set_attention_map chose another."""
    return getattr(model.config, CONFIG_ATTRIBUTE, None) or "softmax"


def set_attention_map(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """Make every self-attention head of `model` use the attention map `name`
    (sparse_attention.ATTENTION_MAP_HELP) from now on, for training and inference. The name is
    kept in model.config, so a saved checkpoint records it; after loading one, call this again
    with attention_map_of(model) (a model loaded with eager or sdpa attention runs softmax).
    softmax keeps the model's own implementation. Returns the model."""
    canonical = parse_attention_map(name)
    check_supported(model)
    setattr(model.config, CONFIG_ATTRIBUTE, canonical)
    if canonical != "softmax":
        set_implementation(model)
    return model
