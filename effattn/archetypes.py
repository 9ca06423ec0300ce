"""Generated archetype maps of each pattern class, for tests of the pattern classifier.

`archetype(pattern, rng, ...)` draws one map with realistic noise: a random length, one or two
sentences ([CLS] a... [SEP] b... [SEP]), background weight from a Dirichlet draw, and the
pattern's structure carrying most of each row's mass. For kind="effective" a signed,
zero-mean perturbation is added and rows are rescaled, so the map has negative entries and rows
that do not sum to 1, as effective attention does.
"""
from __future__ import annotations

import numpy as np

from .patterns import PATTERNS


def segment_ids_for(n: int, n_first: int | None) -> np.ndarray:
    """token_type_ids of [CLS] + n_first tokens + [SEP] (+ rest + [SEP]); None = one sentence."""
    seg = np.zeros(n, dtype=np.int8)
    if n_first is not None:
        seg[n_first + 2:] = 1
    return seg


def archetype(pattern: str, rng: np.random.Generator, *, n: int | None = None,
              two_sentences: bool = True, kind: str = "standard") -> tuple[np.ndarray, np.ndarray]:
    """-> (weights (n, n) float32, segment_ids (n,) int8) of one map of `pattern`."""
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}.")
    if pattern == "block" and not two_sentences:
        raise ValueError("a block map needs two sentences; pass two_sentences=True.")
    n = int(rng.integers(12, 90)) if n is None else n
    n_first = int(rng.integers(3, n - 4)) if two_sentences and n >= 8 else None
    seg = segment_ids_for(n, n_first)
    seps = [i for i in range(1, n) if i == n - 1 or seg[i + 1] != seg[i]]
    structure = _STRUCTURES[pattern](n, seg, [0, *seps], rng)            # (query, key), rows sum 1
    share = rng.uniform(0.75, 0.9)
    background = rng.dirichlet(np.full(n, 0.5), size=n)                  # (query, key)
    weights = share * structure + (1 - share) * background
    if kind == "effective":
        weights = _as_effective(weights, rng)
    return weights.astype(np.float32), seg


def _vertical(n, seg, specials, rng, max_columns=2):
    size = min(len(specials), int(rng.integers(1, max_columns + 1)))
    cols = rng.choice(specials, size=size, replace=False)
    out = np.zeros((n, n))
    out[:, cols] = rng.dirichlet(np.ones(len(cols)), size=n)
    return out


def _diagonal(n, seg, specials, rng):
    offset = int(rng.choice([-1, 1]))
    out = np.zeros((n, n))
    rows = np.arange(n)
    out[rows, np.clip(rows + offset, 0, n - 1)] = 1.0
    return out


def _vertical_diagonal(n, seg, specials, rng):
    mix = rng.uniform(0.4, 0.6)  # one stripe and one diagonal of similar strength
    return (mix * _vertical(n, seg, specials, rng, max_columns=1)
            + (1 - mix) * _diagonal(n, seg, specials, rng))


def _block(n, seg, specials, rng):
    same = (seg[:, None] == seg[None, :]).astype(float)                   # (query, key)
    out = same * rng.dirichlet(np.full(n, 2.0), size=n)
    return out / out.sum(-1, keepdims=True)


def _heterogeneous(n, seg, specials, rng):
    return rng.dirichlet(np.full(n, 0.15), size=n)                        # scattered peaks


_STRUCTURES = {"vertical": _vertical, "diagonal": _diagonal,
               "vertical+diagonal": _vertical_diagonal, "block": _block,
               "heterogeneous": _heterogeneous}


def _as_effective(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Signed zero-mean noise of ~1/n per cell, then rows scaled by 0.5-1.5."""
    n = weights.shape[-1]
    noise = rng.normal(0.0, 0.5 / n, size=weights.shape)
    noise -= noise.mean(-1, keepdims=True)
    return (weights + noise) * rng.uniform(0.5, 1.5, size=(n, 1))
