"""Batched gradients of many scalar objectives with respect to the word-piece embeddings.

Each piece of the encoder (`attribution_graph`) is differentiated once with `torch.func.vjp`
and its pullback vmapped, so one call pulls a whole chunk of cotangents through it. Examples
of a batch do not interact, so one cotangent that seeds objective p in every example at once
gives every example its own gradient. A chunk walks down one layer at a time, and only from
the layer its objectives live in (a head of layer l needs layers ≤ l):
- through the attention module by its pullback;
- through the rest of the layer (W_O, residuals, LayerNorms, FFN: token by token) by its
  pullback, or, where more cotangents pass the layer than twice its width, by each token's
  explicit Jacobian (d_model × (d_model + d_attention)), built once from d_model cotangents
  and checked against the pullback. One product with it replaces W_O and the FFN's two
  d_model × d_ffn products: per cotangent and layer passed, MiniLM at 64 tokens costs ~107
  instead of ~239 MFLOP (the attention pullback's ~69 stay).
Exact either way: the same gradients to float32 rounding.
"""

from dataclasses import dataclass
from typing import Callable

import torch

from .attribution_graph import Cut, Encoder

# Seeds per vmapped pullback are chosen so that each batched activation has about this many
# rows (seeds × batch × key): on the CPU ~2k rows keep every matmul at MKL's peak while the
# rows × d_ffn activations stay small (MiniLM, 64 tokens, one thread: 32 seeds per call
# beat 8 and 128); a GPU wants far more work per kernel.
_ROWS_PER_CHUNK = {"cpu": 2_048, "cuda": 65_536}
# Explicit Jacobians alive at once: batch × key × d_model × (d_model + d_attention) floats per
# layer (75 MB for one 64-token MiniLM input); layers beyond this budget use the pullback.
_JACOBIAN_BYTES = 2**30


class Pullbacks:
    """Vmapped pullbacks of the encoder's pieces at the values of one forward, built on first use."""

    def __init__(self, encoder: Encoder, stop: Cut):
        self.encoder, self.values, self._built = encoder, encoder.values(stop), {}

    def _vjp(self, key, function, *primals):
        if key not in self._built:
            output, pullback = torch.func.vjp(function, *primals)
            self._built[key] = output, torch.func.vmap(pullback)
        return self._built[key]

    def stem(self):
        """embeds ↦ layer 0's input."""
        run = self.encoder.run
        return self._vjp("stem", lambda e: run(e, {}, ("input", 0)), self.encoder.embeds)

    def piece(self, kind: str, layer: int):
        """Layer input ↦ its attention output or heads' z; (input, attention) ↦ its output."""
        run, embeds, inputs = self.encoder.run, self.encoder.embeds, ("input", layer)
        if kind == "output":
            return self._vjp((kind, layer), lambda x, a: run(
                embeds, {inputs: x, ("attention", layer): a}, (kind, layer)),
                self.values[inputs], self.values[("attention", layer)])
        return self._vjp((kind, layer), lambda x: run(embeds, {inputs: x}, (kind, layer)),
                         self.values[inputs])


@dataclass(frozen=True)
class Objectives:
    """Scalar objectives on one tensor, and where their cotangents enter the descent."""

    target: torch.Tensor   # (batch, objective, feature) value
    live: torch.Tensor     # (objective,) bool: False = padding in every example, skipped
    start: int             # cotangents reach layer start - 1's output ...
    enter: Callable[[torch.Tensor], torch.Tensor]  # ... by this map from target cotangents


def seeds(target: torch.Tensor, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(owner (seed,), direction (seed, batch, feature)): seed s puts `direction[s]` on
    objective owner[s]; an objective's squared gradient norms are the sum over its seeds."""
    batch, count, width = target.shape
    if method == "gradient_norm":  # one seed: ∂‖h‖/∂h = h / ‖h‖ (0 where h = 0)
        unit = target / target.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(target.dtype).tiny)
        return torch.arange(count, device=target.device), unit.transpose(0, 1)
    # jacobian: one seed per coordinate c of h, so Σ_c ‖∂h_c/∂e_j‖² = ‖∂h/∂e_j‖_F²
    owner = torch.arange(count, device=target.device).repeat_interleave(width)
    eye = torch.eye(width, dtype=target.dtype, device=target.device)
    return owner, eye.repeat(count, 1)[:, None, :].expand(-1, batch, -1)


def chunk_for(encoder: Encoder, chunk_size: int | None) -> int:
    if chunk_size is not None:
        return chunk_size
    rows = _ROWS_PER_CHUNK.get(encoder.embeds.device.type, _ROWS_PER_CHUNK["cuda"])
    return max(1, rows // encoder.key_mask.numel())


def influence_rows(pullbacks: Pullbacks, objectives: list[Objectives], *, method: str,
                   chunk: int) -> list[torch.Tensor]:
    """(batch, objective, key) unnormalised ‖gradient‖ rows for each entry of `objectives`."""
    planned = [(item, *seeds(item.target, method)) for item in objectives]
    jacobians = token_jacobians(pullbacks, passes_per_layer(planned), chunk)
    return [rows_of(pullbacks, jacobians, item, owner, direction, chunk)
            for item, owner, direction in planned]


def passes_per_layer(planned) -> list[int]:
    """Live seeds that will be pulled through each layer below the highest start."""
    return [sum(int(item.live[owner].sum()) for item, owner, _ in planned if item.start > layer)
            for layer in range(max(item.start for item, _, _ in planned))]


def rows_of(pullbacks, jacobians, item: Objectives, owner, direction, chunk: int) -> torch.Tensor:
    """One target's rows: its live seeds in chunks, each chunk pulled down to the embeddings."""
    batch, count, width = item.target.shape
    embeds = pullbacks.encoder.embeds
    squares = embeds.new_zeros(count, batch, embeds.shape[1])
    for chunk_seeds in item.live[owner].nonzero().squeeze(1).split(chunk):
        cotangent = item.target.new_zeros(len(chunk_seeds), batch, count, width)
        cotangent[torch.arange(len(chunk_seeds)), :, owner[chunk_seeds]] = direction[chunk_seeds]
        grads = pull_down(pullbacks, jacobians, item.enter(cotangent), item.start)
        squares.index_add_(0, owner[chunk_seeds], grads.square().sum(-1))
    return squares.sqrt().transpose(0, 1)


def pull_down(pullbacks, jacobians, cotangent, start: int) -> torch.Tensor:
    """cotangent (seed, batch, key, d_model) on layer start - 1's output → on the embeddings."""
    for layer in range(start - 1, -1, -1):
        if layer in jacobians:
            residual, attention = explicit_pullback(cotangent, jacobians[layer])
        else:
            residual, attention = pullbacks.piece("output", layer)[1](cotangent)
        cotangent = residual + pullbacks.piece("attention", layer)[1](attention)[0]
    return pullbacks.stem()[1](cotangent)[0]


def explicit_pullback(cotangent, jacobian) -> tuple[torch.Tensor, torch.Tensor]:
    """cotangent (seed, batch, key, d_out) times each token's jacobian (batch, key, d_out,
    d_model + d_attention) → cotangents on the layer's input and on its attention output."""
    d_model = cotangent.shape[-1]  # a layer's output has its input's width
    both = torch.matmul(cotangent.permute(1, 2, 0, 3), jacobian).permute(2, 0, 1, 3)
    return both[..., :d_model], both[..., d_model:]


def token_jacobians(pullbacks: Pullbacks, passes: list[int], chunk: int) -> dict[int, torch.Tensor]:
    """layer -> explicit Jacobian of its token-wise part, where it pays off (building it costs
    d_model cotangents through the piece, each use saves most of one) and fits the budget."""
    jacobians, budget = {}, _JACOBIAN_BYTES
    for layer, count in enumerate(passes):
        out, attention = pullbacks.values[("output", layer)], pullbacks.values[("attention", layer)]
        size = out.numel() * (out.shape[-1] + attention.shape[-1]) * out.element_size()
        if count < 2 * out.shape[-1] or size > budget:
            continue
        jacobian = token_jacobian(pullbacks, layer, chunk)
        if jacobian is not None:
            jacobians[layer], budget = jacobian, budget - size
    return jacobians


def token_jacobian(pullbacks: Pullbacks, layer: int, chunk: int) -> torch.Tensor | None:
    """(batch, key, d_out, d_model + d_attention), or None when the layer mixes tokens outside
    its attention module (then its pullback, always right, does that layer)."""
    out, pullback = pullbacks.piece("output", layer)
    pieces = []
    for coordinates in torch.arange(out.shape[-1], device=out.device).split(chunk):
        seed = out.new_zeros(len(coordinates), *out.shape)  # coordinate c at every token at
        seed[torch.arange(len(coordinates)), ..., coordinates] = 1  # once: exact if tokens don't mix
        pieces.append(torch.cat(pullback(seed), -1))
    jacobian = torch.cat(pieces).permute(1, 2, 0, 3).contiguous()
    probe = torch.randn(out.shape, generator=torch.Generator(device=out.device).manual_seed(0),
                        dtype=out.dtype, device=out.device)[None]
    expected = torch.cat(pullback(probe), -1)
    got = torch.cat(explicit_pullback(probe, jacobian), -1)
    return jacobian if (got - expected).abs().max() <= 1e-4 * expected.abs().max() else None
