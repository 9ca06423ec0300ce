"""The attribute stage's tables for the synthetic run folders of cache_fixture.py.

Shaped like the real thing (docs/SCHEMA.md, "Attention vs attribution"): the attribution row of
a head at query i is a distribution that mixes the head's standard attention row with context,
more so in deeper layers (Pascual et al.'s "mixing of context"): a random spread-out row and the
query's own token. ``attribution`` then compares it with every kind's attention row exactly as
documented (JSD base 2, Kendall τ-b, top-1 agreement; signed kinds read as |row| / Σ|row|), and
``layer_influence`` has an own-token share that falls with depth but stays above 1/n, and an
entropy that rises. Torch-free (numpy + polars only).
"""

from __future__ import annotations

import numpy as np
import polars as pl

ATTRIBUTION_EXAMPLES = 3  # examples 0..2 (inside the efficient sample, and holding the map sample)


def attribution_map(rng: np.random.Generator, attn: np.ndarray, layer: int, n_layers: int) -> np.ndarray:
    """(query, key) attribution rows: attn mixed with context, the more the deeper the layer."""
    n = attn.shape[0]
    mix = 0.3 + 0.5 * layer / max(n_layers - 1, 1)  # share of the row that is not the head's own attention
    context = 0.5 * rng.dirichlet(np.ones(n), size=n) + 0.5 * np.eye(n)  # spread out, and the own token
    return (1 - mix) * attn + mix * context


def _jsd(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence (base 2) of each row pair of two (query, key) distributions."""
    m = (p + q) / 2

    def kl(a: np.ndarray) -> np.ndarray:  # KL(a ‖ m), 0 · log 0 = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, a * np.log2(a / m), 0.0).sum(axis=1)

    return 0.5 * kl(p) + 0.5 * kl(q)


def _kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall τ-b of each row pair of two (query, key) arrays; NaN where a row is constant."""
    sx = np.sign(x[:, :, None] - x[:, None, :])  # (query, key, key)
    sy = np.sign(y[:, :, None] - y[:, None, :])
    n = x.shape[1]
    pairs = n * (n - 1) / 2
    ties_x = ((sx == 0).sum(axis=(1, 2)) - n) / 2
    ties_y = ((sy == 0).sum(axis=(1, 2)) - n) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return (sx * sy).sum(axis=(1, 2)) / 2 / np.sqrt((pairs - ties_x) * (pairs - ties_y))


def compare(attention: np.ndarray, attribution: np.ndarray) -> dict[str, float | None]:
    """jsd, kendall_tau, top1_agreement of one head's (query, key) attention and attribution rows."""
    p = np.abs(attention) / np.abs(attention).sum(axis=1, keepdims=True)  # signed kinds: |row| / Σ|row|
    tau = _kendall_tau_b(np.abs(attention), attribution)
    return {"jsd": float(_jsd(p, attribution).mean()),
            "kendall_tau": float(np.nanmean(tau)) if np.isfinite(tau).any() else None,
            "top1_agreement": float((np.abs(attention).argmax(axis=1) == attribution.argmax(axis=1)).mean())}


def layer_influence(task: str, seq_lens: dict[int, int], n_layers: int, rng: np.random.Generator) -> pl.DataFrame:
    """One row per example × layer: own-token share falling with depth (above 1/n), entropy rising."""
    rows = [{"task": task, "example_id": example_id, "layer": layer, "seq_len": n,
             "own_share": float(0.2 + 0.5 * 0.6 ** layer + rng.uniform(-0.02, 0.02)),
             "entropy": float(min(0.45 + 0.08 * layer + rng.uniform(-0.03, 0.03), 1.0))}
            for example_id, n in seq_lens.items() for layer in range(n_layers)]
    return pl.DataFrame(rows)


def tables(task: str, maps: dict[tuple[int, int, int], dict[str, np.ndarray]], map_sample: tuple[int, ...],
           n_layers: int, rng: np.random.Generator) -> dict[str, pl.DataFrame]:
    """The attribute stage's tables and their analyse summaries for one task.

    ``maps`` is {(example_id, layer, head): {kind: (query, key) map}} of the attribution sample.
    """
    from precompute.analyse import attribution_summary, influence_summary  # torch-free, as stage 3 runs it

    rows, map_rows = [], []
    for (example_id, layer, head), by_kind in sorted(maps.items()):
        attribution = attribution_map(rng, by_kind["standard"], layer, n_layers)
        for kind, attention in by_kind.items():
            rows.append({"task": task, "example_id": example_id, "layer": layer, "head": head, "kind": kind,
                         **compare(attention, attribution)})
        if example_id in map_sample:
            map_rows.append({"task": task, "example_id": example_id, "layer": layer, "head": head,
                             "seq_len": attribution.shape[0], "weights": attribution.astype(np.float32).ravel().tolist()})
    seq_lens = {example_id: by_kind["standard"].shape[0] for (example_id, _, _), by_kind in maps.items()}
    per_example = pl.DataFrame(rows)
    influence = layer_influence(task, dict(sorted(seq_lens.items())), n_layers, rng)
    return {"attribution": per_example, "attribution_maps": pl.DataFrame(map_rows), "layer_influence": influence,
            "attribution_summary": attribution_summary(per_example.lazy()).collect(),
            "influence_summary": influence_summary(influence.lazy()).collect()}
