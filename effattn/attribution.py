"""Gradient attribution of heads and layers to the input tokens (METHODS.md §3.3, §3.4).

The influence of input token j on a vector h is Meister et al.'s (2021) normalised gradient norm

    g_h(j) = ‖∂‖h‖₂/∂e_j‖₂ / Σ_k ‖∂‖h‖₂/∂e_k‖₂,

e_j the word-piece embedding fed as `inputs_embeds` (the model adds position and type embeddings
as usual). For a head, h = z_{l,h,i}, the head's output A·V at query i before W_O
(`head_attribution`); for a layer, h = the hidden state after layer l at position i
(`layer_influence`). A row g(·) sits beside the head's attention row A[i, ·]. Rows are
normalised over the real tokens; padded queries and keys are exactly 0, so a padded batch gives
each example's unpadded result. The model as functions of its cut points, its forward stopped
after the last layer needed: `attribution_graph.py`; the batched backward: `attribution_grad.py`.
"""

from dataclasses import dataclass
from typing import Iterable, Literal

import torch

from .attribution_grad import Objectives, Pullbacks, chunk_for, influence_rows
from .attribution_graph import Encoder, eval_no_dropout
from .errors import InputShapeError
from .routing import check_supported

__all__ = ["LayerInfluence", "head_attribution", "layer_influence"]

METHODS = ("gradient_norm", "jacobian")


@dataclass(frozen=True)
class LayerInfluence:
    """Influence of the input tokens on every layer's output vectors; padded rows are 0."""

    influence: torch.Tensor       # (batch, layer, query, key) g(j) for the output at query i
    own_share: torch.Tensor       # (batch, layer, query) g(i) at i: the position's own token
    entropy: torch.Tensor         # (batch, layer, query) Shannon entropy of the row / log n_real
    attention_mask: torch.Tensor  # (batch, key) bool, True = real token


def head_attribution(model: torch.nn.Module, batch: dict[str, torch.Tensor], *,
                     method: Literal["gradient_norm", "jacobian"] = "gradient_norm",
                     layers: Iterable[int] | None = None,
                     chunk_size: int | None = None) -> torch.Tensor:
    """(batch, layer, head, query, key): influence of input token `key` on each head's output
    at `query`, in eval mode with the model's training flag and attention implementation restored.

    method "gradient_norm" is g above; "jacobian" replaces ‖∂‖h‖₂/∂e_j‖₂ by the per-coordinate
    Jacobian norm ‖∂h/∂e_j‖_F (d_head times the backward work: for checks and short inputs).
    `layers` (0-based, default all) picks the layers, returned in increasing order; the forward
    stops after the last of them. `chunk_size`: cotangents per vmapped pullback, one per
    objective (d_head per objective with "jacobian"); default sized to the device
    (attribution_grad._ROWS_PER_CHUNK).
    """
    chosen = _chosen_layers(model, layers)
    _check_method(method)
    with eval_no_dropout(model):
        encoder = Encoder(model, batch)
        pullbacks = Pullbacks(encoder, stop=("heads", chosen[-1]))  # the forward ends there
        rows = influence_rows(pullbacks, [_head_objectives(pullbacks, layer) for layer in chosen],
                              method=method, chunk=chunk_for(encoder, chunk_size))
    per_layer = [r.unflatten(1, (-1, r.shape[-1])) for r in rows]  # (batch, head, query, key)
    return normalise_influence(torch.stack(per_layer, 1), encoder.key_mask)


def _head_objectives(pullbacks: Pullbacks, layer: int) -> Objectives:
    """‖z‖ at every (head, query) of one layer; cotangents enter at the layer's input."""
    z, pullback = pullbacks.piece("heads", layer)  # (batch, head, query, d_head)
    batch_size, heads, queries, d_head = z.shape
    return Objectives(
        target=z.reshape(batch_size, heads * queries, d_head),  # objective = head · query
        live=pullbacks.encoder.key_mask.any(0).repeat(heads), start=layer,
        enter=lambda cotangent: pullback(cotangent.reshape(-1, *z.shape))[0])


def layer_influence(model: torch.nn.Module, batch: dict[str, torch.Tensor], *,
                    chunk_size: int | None = None) -> LayerInfluence:
    """Influence of the input tokens on each layer's output at every position (Meister et al.'s
    Table 1 measure: how dispersed it is), objective ‖hidden state after layer l at i‖₂."""
    check_supported(model)
    depth = model.config.num_hidden_layers
    with eval_no_dropout(model):
        encoder = Encoder(model, batch)
        pullbacks = Pullbacks(encoder, stop=("output", depth - 1))  # no pooler, no task head
        live = encoder.key_mask.any(0)  # positions that are real in some example
        objectives = [Objectives(target=pullbacks.values[("output", layer)], live=live,
                                 start=layer + 1, enter=lambda cotangent: cotangent)
                      for layer in range(depth)]
        rows = influence_rows(pullbacks, objectives, method="gradient_norm",
                              chunk=chunk_for(encoder, chunk_size))
    influence = normalise_influence(torch.stack(rows, 1), encoder.key_mask)
    return LayerInfluence(influence=influence,
                          own_share=influence.diagonal(dim1=-2, dim2=-1),
                          entropy=normalised_entropy(influence, encoder.key_mask),
                          attention_mask=encoder.key_mask)


def normalise_influence(rows: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """rows (batch, ..., query, key) ≥ 0 scaled to sum to 1 over the real keys; padded queries
    and keys set to exactly 0 (so are all-zero rows, e.g. of a head output that is 0)."""
    mask = key_mask.view(key_mask.shape[0], *[1] * (rows.dim() - 3), key_mask.shape[1])
    real = mask[..., :, None] & mask[..., None, :]  # (batch, ..., query, key)
    rows = torch.where(real, rows, 0)
    return rows / rows.sum(-1, keepdim=True).clamp_min(torch.finfo(rows.dtype).tiny)


def normalised_entropy(rows: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """(batch, ..., query) Shannon entropy of each normalised row / log n_real (1 = uniform over
    the real tokens, 0 = one token); 0 for padded queries and for one-token examples."""
    tiny = torch.finfo(rows.dtype).tiny
    entropy = torch.where(rows > 0, -rows * rows.clamp_min(tiny).log(), 0).sum(-1)  # 0·log 0 = 0
    n_real = key_mask.sum(-1).to(rows.dtype)
    scale = n_real.log().view(-1, *[1] * (entropy.dim() - 1))
    return torch.where(scale > 0, entropy / scale.clamp_min(tiny), 0)


def _chosen_layers(model, layers) -> list[int]:
    """Sorted unique 0-based layer indices, checked against the model's depth."""
    check_supported(model)  # before reading its config, so a non-transformers model says why
    depth = model.config.num_hidden_layers
    asked = list(range(depth) if layers is None else layers)
    chosen = sorted(set(asked))
    if not chosen or not 0 <= chosen[0] <= chosen[-1] < depth:
        raise InputShapeError(
            f"layers must be 0-based indices below the model's {depth} layers, got {asked}: "
            "pass e.g. layers=[0] or leave it None for all")
    return chosen


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
