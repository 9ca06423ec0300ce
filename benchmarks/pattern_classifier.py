"""Throughput of the pattern classifier, and its held-out macro-F1, as one JSON line.

Maps: per example, every head of MiniLM (6 layers x 12 heads) for both kinds, i.e. an array
(kind, layer, head, n, n) with n drawn from 20..128 like GLUE dev inputs, two sentences.
Throughput is classify_patterns over such examples; 144k maps = 1,000 examples.
macro-F1 is read from data/pattern_labels/classifier_eval.parquet (the shipped classifier's
held-out predictions on the consensus labels, nested cross-validation grouped by example, by
tools/compare_pattern_classifiers.py; see data/pattern_labels/README.md), not recomputed here.

    python benchmarks/pattern_classifier.py [--examples 100]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from effattn.patterns import classify_patterns  # noqa: E402


def example_maps(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(kind, layer, head, n, n) random maps: softmax rows, and signed 'effective' ones."""
    scores = rng.normal(0, 2.0, size=(6, 12, n, n)).astype(np.float32)     # (layer, head, q, k)
    attn = np.exp(scores - scores.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    attn_eff = attn + rng.normal(0, 0.5 / n, size=attn.shape).astype(np.float32)
    segment_ids = (np.arange(n) > n // 2).astype(np.int8)
    return np.stack([attn, attn_eff]), segment_ids


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=100)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 129, size=args.examples)
    inputs = [example_maps(rng, int(n)) for n in lengths]
    start = time.perf_counter()
    for maps, segment_ids in inputs:
        classify_patterns(maps, segment_ids=segment_ids)
    seconds = time.perf_counter() - start
    n_maps = sum(maps.shape[0] * maps.shape[1] * maps.shape[2] for maps, _ in inputs)
    table = pl.read_parquet(REPO / "data" / "pattern_labels" / "classifier_eval.parquet")
    if "classifier" in table.columns:  # issue 17: also holds the caches' classifier's rows
        table = table.filter(pl.col("classifier") == "shipped")
    macro = table.filter((pl.col("metric") == "macro_f1") & (pl.col("kind") == "all"))
    mean = table.filter(pl.col("metric") == "macro_f1_mean")["value"][0]
    print(json.dumps({
        "benchmark": "pattern_classifier", "maps": n_maps, "seconds": round(seconds, 3),
        "maps_per_second": round(n_maps / seconds, 1),
        "seconds_for_144k_maps": round(144_000 * seconds / n_maps, 1),
        "mean_seq_len": float(lengths.mean()),
        "macro_f1_cross_validated": round(float(macro["value"][0]), 4),
        "macro_f1_mean_over_repeats": round(float(mean), 4),
        "n_labels": int(macro["n"][0])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
