"""Sparse attention maps (Meister et al. 2021, METHODS.md §3.4): sparsemax and sparsegen-lin in
place of softmax in every self-attention head, through effattn's registered attention
implementation (routing.py), for training and inference alike.

    softmax          exp(z) / Σ exp(z), the model's own map
    sparsemax        argmin_p ‖p − z‖² over the probability simplex (Martins & Astudillo 2016):
                     p = max(z − τ, 0), exact zeros below the threshold τ
    sparsegen:<λ>    sparsegen-lin (Laha et al. 2018) = sparsemax(z / (1 − λ)), λ < 1: larger λ is
                     sparser, λ = 0 is sparsemax, λ < 0 is denser

The map is part of the model: `routing.set_attention_map` stores its name on `model.config`
(`attention_map`, saved with the checkpoint) and routes attention through effattn, whose
attention forward reads it from the module's config on every call. sparsemax's gradient is the
closed-form one of the piecewise-linear map, in a form torch.func (the attribution machinery's
vmap/vjp) transforms like softmax — entmax's autograd.Function is not.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch

from .errors import EffattnError

__all__ = ["ATTENTION_MAP_HELP", "normalizer", "parse_attention_map", "sparsegen_lambda", "sparsegen_lin",
           "sparsemax", "softmax"]

ATTENTION_MAP_HELP = "softmax, sparsemax or sparsegen:<λ> with λ < 1 (e.g. sparsegen:0.5)"


def sparsemax(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Euclidean projection of `scores` onto the probability simplex along `dim`.

    Keys masked with -inf or a dtype's most negative value (as transformers masks them) get
    exactly 0. τ solves Σ max(z − τ, 0) = 1 over the k largest entries, k = max{j : 1 + j z₍ⱼ₎ >
    Σ_{i ≤ j} z₍ᵢ₎} (z sorted in decreasing order).
    """
    return _Sparsemax.apply(scores.movedim(dim, -1)).movedim(-1, dim)


def _project(z: torch.Tensor) -> torch.Tensor:
    """sparsemax over the last dimension (the forward pass)."""
    z = z - z.amax(-1, keepdim=True)  # the largest entry 0: masked ones stay ≤ -finfo.max, never +inf
    ordered = z.sort(-1, descending=True).values
    ranks = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    in_support = 1 + ranks * ordered > ordered.cumsum(-1)  # the masked tail's cumsum is -inf: never true
    support_size = in_support.sum(-1, keepdim=True)  # ≥ 1: the top entry always qualifies
    # τ from the support only: where() keeps the masked tail's -inf out of the sum
    threshold = (torch.where(in_support, ordered, 0).sum(-1, keepdim=True) - 1) / support_size.to(z.dtype)
    return torch.clamp(z - threshold, min=0)


class _Sparsemax(torch.autograd.Function):
    """sparsemax with its closed-form backward (Martins & Astudillo 2016): on the support S,
    ∂p/∂z = I − 1 1ᵀ / |S|, zero off it; one masked mean instead of autograd through the sort
    (fine-tuning ~1.2× faster). Written in the setup_context form with generate_vmap_rule, so
    torch.func (vmap, vjp: the attribution machinery) transforms it like any torch operation."""

    generate_vmap_rule = True

    @staticmethod
    def forward(scores: torch.Tensor) -> torch.Tensor:
        return _project(scores)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (output,) = ctx.saved_tensors
        support = output > 0
        on_support = torch.where(support, grad_output, 0)
        mean = on_support.sum(-1, keepdim=True) / support.sum(-1, keepdim=True).to(grad_output.dtype)
        return torch.where(support, grad_output - mean, 0)


def sparsegen_lin(scores: torch.Tensor, lam: float, dim: int = -1) -> torch.Tensor:
    """sparsegen-lin: sparsemax(scores / (1 − λ)); λ < 1, larger λ sparser."""
    if not lam < 1:
        raise ValueError(f"sparsegen-lin needs λ < 1, got {lam}")
    return sparsemax(scores / (1 - lam), dim=dim)


def softmax(scores: torch.Tensor) -> torch.Tensor:
    """The model's own map, over the last dimension."""
    return torch.nn.functional.softmax(scores, dim=-1)


def parse_attention_map(name: str) -> str:
    """The canonical name of an attention map ("softmax", "sparsemax", "sparsegen:0.5"), or
    EffattnError naming the choices."""
    text = name.strip().lower()
    if text in ("softmax", "sparsemax"):
        return text
    prefix, _, value = text.partition(":")
    if prefix == "sparsegen":
        try:
            lam = float(value)
        except ValueError:
            lam = math.nan
        if lam < 1 and math.isfinite(lam):
            return "sparsemax" if lam == 0 else f"sparsegen:{lam:g}"
    raise EffattnError(f"unknown attention map {name!r}: use {ATTENTION_MAP_HELP}")


def sparsegen_lambda(name: str) -> float | None:
    """λ of a sparsegen map (0 for sparsemax), None for softmax."""
    canonical = parse_attention_map(name)
    if canonical == "softmax":
        return None
    return 0.0 if canonical == "sparsemax" else float(canonical.partition(":")[2])


@functools.lru_cache(maxsize=None)
def normalizer(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """scores (..., key) -> attention probabilities (..., key) for an attention map's name."""
    lam = sparsegen_lambda(name)
    if lam is None:
        return softmax
    if lam == 0:
        return sparsemax
    return functools.partial(sparsegen_lin, lam=lam)
