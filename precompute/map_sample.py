"""Which analysed examples get full maps (the explorer sample): a seeded choice that spans lengths.

The explorer shows what effective attention changes, and it changes nothing where n ≤ d_head
(A_eff = A), so most of the sample is longer than d_head (LONG_SHARE where a task has enough);
within the long and the short examples the picks spread over length quantiles, so short, middle
and the longest inputs all appear; mispredicted examples are included where predictions are known.

extract chooses before any model has run, so it passes `estimated_lengths` and no predictions;
tools/regen_explorer_maps.py re-chooses a shipped run's sample from the stored seq_len and predictions.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence

import numpy as np

LONG_SHARE = 0.75  # share of the sample with n > d_head, where the task has that many
MISPREDICTED_SHARE = 0.25  # share of the sample that is mispredicted, where predictions are known
REGRESSION_MISS = 1.0  # a regression prediction this far from the label (STS-B's 0-5 scale) counts as wrong
# BERT's basic tokenizer cuts at whitespace and around every punctuation mark before WordPiece
# cuts further, so these pieces plus the special tokens never outnumber the real word pieces
_BASIC_TOKEN = re.compile(r"\w+|[^\w\s]")


def estimated_lengths(texts_a: Sequence[str], texts_b: Sequence[str | None] | None, max_seq_len: int) -> np.ndarray:
    """(example,) a lower bound on each example's token count n, capped at max_seq_len, without a tokenizer:
    words and punctuation marks plus [CLS]/[SEP] (3 for a pair)."""
    texts_b = texts_b if texts_b is not None else [None] * len(texts_a)
    counts = [len(_BASIC_TOKEN.findall(a or "")) + (len(_BASIC_TOKEN.findall(b)) + 3 if b is not None else 2)
              for a, b in zip(texts_a, texts_b)]
    return np.minimum(np.asarray(counts, dtype=np.int64), max_seq_len)


def mispredicted(labels: np.ndarray, predictions: np.ndarray, *, regression: bool) -> np.ndarray:
    """(example,) bool: a wrong class, or a regression score at least REGRESSION_MISS from the label."""
    if regression:
        return np.abs(predictions - labels) >= REGRESSION_MISS
    return predictions != labels


@functools.lru_cache(maxsize=4)
def model_d_head(model: str) -> int:
    """d_head of the run's base model, from its config (no weights)."""
    from precompute.models import load_config, resolve_model

    config = load_config(resolve_model(model), named=model)
    return config.hidden_size // config.num_attention_heads


def choose_map_sample(lengths: np.ndarray, *, size: int, d_head: int, seed: int,
                      wrong: np.ndarray | None = None, required: Sequence[int] = ()) -> np.ndarray:
    """Sorted indices into ``lengths`` of up to ``size`` examples: ``required`` first (e.g. the
    examples with attribution maps), then MISPREDICTED_SHARE of ``wrong`` ones, then long and short
    ones to LONG_SHARE long, each pick spread over length quantiles. Same inputs, same choice."""
    lengths = np.asarray(lengths)
    size = min(size, len(lengths))
    rng = np.random.default_rng(seed)
    chosen = list(dict.fromkeys(int(i) for i in required))[:size]
    long = lengths > d_head
    long_target = min(math.ceil(LONG_SHARE * size), int(long.sum()))

    def fill(pool: np.ndarray, count: int) -> None:
        free = np.setdiff1d(np.flatnonzero(pool), chosen)
        chosen.extend(_spread(free, lengths, min(count, size - len(chosen)), rng))

    def fill_by_length(pool: np.ndarray, count: int) -> None:
        """count picks from pool, as many long ones as the long target still needs."""
        wanted = min(count, size - len(chosen))
        needed_long = max(0, long_target - int(long[chosen].sum()))
        before = len(chosen)
        fill(pool & long, min(wanted, needed_long))
        fill(pool & ~long, wanted - (len(chosen) - before))
        fill(pool, wanted - (len(chosen) - before))  # too few short ones: more long ones

    if wrong is not None and size:
        fill_by_length(np.asarray(wrong, dtype=bool), max(1, round(MISPREDICTED_SHARE * size)))
    everything = np.ones(len(lengths), dtype=bool)
    fill_by_length(everything, size - len(chosen))
    return np.sort(np.asarray(chosen, dtype=np.int64))


def _spread(candidates: np.ndarray, lengths: np.ndarray, count: int, rng: np.random.Generator) -> list[int]:
    """count of the candidates, one drawn at random from each of count equal-size length quantiles."""
    if count <= 0 or not len(candidates):
        return []
    by_length = candidates[np.argsort(lengths[candidates], kind="stable")]
    bins = np.array_split(by_length, min(count, len(by_length)))
    return [int(rng.choice(part)) for part in bins]
