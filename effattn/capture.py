"""Capture each layer's attention, value vectors and effective attention from an HF encoder."""

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .effective import check_mask_values, decompose_attention
from .errors import InputShapeError, UnsupportedModelError
from .norm_weighted import head_output_weights, output_projections, transformed_value_norms
from .routing import routed_attention

__all__ = ["CaptureResult", "LayerCapture", "capture_attention"]


@dataclass(frozen=True)
class LayerCapture:
    """One layer of one batch. Padded query rows and key columns are 0 in every map."""

    layer: int                    # 0-based, in the order the model runs its layers
    attn: torch.Tensor            # (batch, head, query, key) attention probabilities
    values: torch.Tensor          # (batch, head, key, d_head) value vectors (X W_V + b_V)
    attn_eff: torch.Tensor        # (batch, head, query, key) effective attention
    rank: torch.Tensor            # (batch, head) int64, numerical rank of V's real block
    attention_mask: torch.Tensor  # (batch, key) bool, True = real token
    # The head's rows of the output projection W_O and ‖v_j W_O^h‖ per key (0 at padding), for
    # norm-weighted attention; None for a model whose W_O effattn does not recognise.
    output_weight: torch.Tensor | None = None  # (head, d_head, d_model), a view of the weights
    value_norms: torch.Tensor | None = None    # (batch, head, key)

    @property
    def attn_null(self) -> torch.Tensor:
        """(batch, head, query, key) attn − attn_eff, the part V cancels (derived on demand)."""
        return self.attn - self.attn_eff

    @property
    def n_real(self) -> torch.Tensor:
        """(batch,) real tokens per example."""
        return self.attention_mask.sum(-1)

    @property
    def nullity(self) -> torch.Tensor:
        """(batch, head) dimension of the left null space of V."""
        return self.n_real[:, None] - self.rank


@dataclass(frozen=True)
class CaptureResult:
    output: Any                        # the model's own output (logits, hidden states, ...)
    layers: tuple[LayerCapture, ...]   # empty when an on_layer callback consumed them


def capture_attention(model: torch.nn.Module, batch: dict[str, torch.Tensor], *,
                      on_layer: Callable[[LayerCapture], None] | None = None) -> CaptureResult:
    """Run `model(**batch)` once, without gradients and in eval mode, and capture every layer.

    With `on_layer`, each LayerCapture goes to the callback as soon as its layer has run and is
    then dropped, so at most one layer's extra tensors are alive beyond what the callback keeps.
    Without it, the layers are decomposed once the forward is done, and each layer's attention
    tensor is zeroed at padding in place (so `output.attentions`, if the model was asked for
    them, hold the same maps as the capture).
    """
    _check_batch(batch)
    projections = _output_projections_or_none(model)
    # Without a callback every layer is kept anyway, so each is decomposed after the forward,
    # when the forward is done with A: its padding is then zeroed in place instead of in a copy.
    pending: list[tuple | None] = []

    def record(attn, values, key_mask, spare):
        if on_layer is None:
            pending.append((attn, values, key_mask, spare))
        else:  # the forward still multiplies this A with V: the capture gets a zeroed copy
            on_layer(_layer_capture(len(pending), attn, values, key_mask, spare, projections, in_place=False))
            pending.append(None)  # counts the layer; its tensors are the callback's
        return attn

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), routed_attention(model, record):
            output = model(**batch)
            kept = [_layer_capture(layer, *recorded, projections, in_place=True)
                    for layer, recorded in enumerate(pending) if recorded is not None]
    finally:
        model.train(was_training)
    layer_count = len(pending)
    if layer_count == 0:
        raise UnsupportedModelError(
            f"{type(model).__name__} ran without calling its attention through transformers' "
            "AttentionInterface or an attention module effattn replaces, so nothing was captured: "
            "use a BERT-family, DistilBERT or MPNet encoder")
    if projections is not None and len(projections) != layer_count:
        raise UnsupportedModelError(
            f"{type(model).__name__} ran {layer_count} attention layers but effattn found "
            f"{len(projections)} output projections, so W_O cannot be matched to layers: use a "
            "BERT-family, DistilBERT or MPNet encoder")
    return CaptureResult(output=output, layers=tuple(kept))


def _layer_capture(layer, attn, values, key_mask, spare, projections, *, in_place) -> LayerCapture:
    """One layer's capture, its A_eff written into the spent scores buffer `spare`."""
    parts = decompose_attention(attn, values, key_mask, check_rows=False, out=spare, in_place=in_place)
    output_weight = value_norms = None
    if projections is not None and layer < len(projections):
        output_weight = head_output_weights(projections[layer], values.shape[1])
        value_norms = transformed_value_norms(values, output_weight, key_mask)
    return LayerCapture(layer=layer, attn=parts.attn, values=values, attn_eff=parts.attn_eff,
                        rank=parts.rank, attention_mask=key_mask, output_weight=output_weight,
                        value_norms=value_norms)


def _check_batch(batch: dict[str, torch.Tensor]) -> None:
    """Fail before the forward pass where the model would fail inside it (transformers cannot
    reshape zero examples or zero tokens into heads) or where a mask value is not 0/1."""
    for name in ("input_ids", "inputs_embeds", "attention_mask"):
        tensor = batch.get(name)
        if isinstance(tensor, torch.Tensor) and tensor.ndim >= 2 and 0 in tensor.shape[:2]:
            raise InputShapeError(
                f"{name} must hold at least one example of at least one token, got shape "
                f"{tuple(tensor.shape)}: skip empty batches before capture_attention")
    mask = batch.get("attention_mask")
    if isinstance(mask, torch.Tensor):
        check_mask_values(mask)


def _output_projections_or_none(model: torch.nn.Module):
    """W_O per layer, or None where effattn does not recognise it (norm kinds then unavailable)."""
    try:
        return output_projections(model) or None
    except UnsupportedModelError:
        return None
