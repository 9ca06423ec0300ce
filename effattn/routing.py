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

Encoders whose attention modules compute attention in their own forward instead of calling
AttentionInterface (MPNet) are routed by replacing that forward, for the routed models only, by
a recomputation of it around the same attention step (mpnet_attention.py): the flag is the
same `config._attn_implementation == "effattn"`, so both kinds switch on and off alike.
"""

import functools
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

from . import mpnet_attention
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


def _normalizer_of(config) -> Callable[[torch.Tensor], torch.Tensor]:
    """The attention map a model's config names (softmax unless set_attention_map chose another)."""
    name = getattr(config, CONFIG_ATTRIBUTE, None)
    return normalizer(name) if name else softmax


def _attend(config, scores, value, attention_mask, dropout, training):
    """Masked scores (batch, head, query, key) -> (A·V (batch, head, query, d_head), A), with
    the active handler between the attention map and the product with V."""
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    attn = _normalizer_of(config)(scores)
    attn = torch.nn.functional.dropout(attn, p=dropout, training=training)
    handler = _active_handler.get()
    if handler is not None:
        # scores is this function's own tensor and the attention map has consumed it: reusable,
        # unless autograd may still need the graph it belongs to.
        reusable = (not torch.is_grad_enabled() and scores.is_contiguous()
                    and scores.shape == attn.shape and scores.dtype == attn.dtype)
        spare = scores if reusable else None
        attn = handler(attn, value, _key_mask(attention_mask, attn), spare)
    return torch.matmul(attn, value), attn


def _attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                       **kwargs):
    """Eager attention with a hook between softmax and the product with V."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    output, attn = _attend(getattr(module, "config", None), scores, value, attention_mask,
                           dropout, module.training)
    return output.transpose(1, 2).contiguous(), attn  # (batch, query, head, d_head)


AttentionInterface.register(IMPLEMENTATION_NAME, _attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION_NAME, eager_mask)

# Attention modules that do not call AttentionInterface -> their forward recomputed around
# `attend` (module, attend, *forward's arguments); and what such a model would declare in
# transformers' _can_record_outputs (attribution_graph finds its layers with it).
_MODULE_FORWARDS = {mpnet_attention.ATTENTION_CLASS: mpnet_attention.mpnet_self_attention}
_MODULE_RECORDED_OUTPUTS = {mpnet_attention.ATTENTION_CLASS: mpnet_attention.RECORDED_OUTPUTS}
_CONFIG_SLOT = "_effattn_config"  # the routed model's config, kept on each replaced module


def _route_module_class(cls, recomputed) -> None:
    """Make `cls.forward` run `recomputed` in the modules of models routed through effattn (their
    config, kept in _CONFIG_SLOT, says "effattn"); every other instance runs the original."""
    original = getattr(cls.forward, "_effattn_original", cls.forward)  # once, even on reload

    @functools.wraps(original)
    def forward(self, *args, **kwargs):
        config = getattr(self, _CONFIG_SLOT, None)
        if config is None or config._attn_implementation != IMPLEMENTATION_NAME:
            return original(self, *args, **kwargs)
        return recomputed(self, functools.partial(_attend, config), *args, **kwargs)

    forward._effattn_original = original
    cls.forward = forward


for _cls, _recomputed in _MODULE_FORWARDS.items():
    _route_module_class(_cls, _recomputed)


def _replaced_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's attention modules whose forward effattn replaces (empty for BERT and kin)."""
    classes = tuple(_MODULE_FORWARDS)
    return [module for module in model.modules() if isinstance(module, classes)]


def _uses_attention_interface(model: torch.nn.Module) -> bool:
    return (hasattr(model, "set_attn_implementation")
            and bool(getattr(model, "_supports_attention_backend", False)))


def recorded_outputs(model: torch.nn.Module) -> dict:
    """transformers' _can_record_outputs of the model, or effattn's stand-in for a model whose
    attention forward it replaces (MPNet declares none)."""
    declared = getattr(model, "_can_record_outputs", None)
    if declared:
        return declared
    replaced = _replaced_modules(model)
    return _MODULE_RECORDED_OUTPUTS[type(replaced[0])] if replaced else {}


def check_supported(model: torch.nn.Module) -> None:
    """Raise UnsupportedModelError unless effattn can route the model's attention: through
    AttentionInterface, or by replacing its attention modules' forward (MPNet)."""
    config = getattr(model, "config", None)
    if config is not None and (_uses_attention_interface(model) or _replaced_modules(model)):
        return
    raise UnsupportedModelError(
        f"{type(model).__name__} does not route attention through transformers' "
        "AttentionInterface, so effattn cannot see its attention weights and values: use a "
        "transformers (≥ 5) encoder such as BERT, RoBERTa, DistilBERT, ELECTRA, MiniLM or MPNet")


def _use_implementation(model: torch.nn.Module, name: str) -> None:
    if _uses_attention_interface(model):
        model.set_attn_implementation(name)
        return
    # transformers ignores set_attn_implementation here (with a warning); the config flag is
    # what the replaced forwards and MPNet's mask (eager_mask for "effattn" too) read.
    for module in _replaced_modules(model):
        setattr(module, _CONFIG_SLOT, model.config)
    model.config._attn_implementation = name


def set_implementation(model: torch.nn.Module) -> None:
    """Route the model's attention through effattn's implementation (until set back)."""
    _use_implementation(model, IMPLEMENTATION_NAME)


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
        _use_implementation(model, previous)


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
