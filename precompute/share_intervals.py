"""Pattern-class shares with 95 % intervals that account for both sources of error (issue 17).

A share of maps per class (task × kind) is uncertain for two reasons:
- the examples are a sample: bootstrap them (every draw resamples a task's examples with
  replacement, the same examples for every kind, so differences between kinds are paired);
- the classifier errs: its held-out confusion matrix M (true × predicted counts, from
  data/pattern_labels/classifier_eval.parquet) says how. Adjusted classify-and-count solves
  p_pred = Mᵀ p_true for p_true on the simplex (non-negative least squares with a heavily
  weighted sum-to-one row, then renormalised). Every bootstrap draw also draws M's rows from
  Dirichlet(counts + 1), so a confusion matrix measured on few labels widens the interval.

`share_intervals` is the pure function; `read_confusions` turns the evaluation table into the
matrices it takes (one per kind with at least MIN_LABELS_PER_KIND labels, else the pooled one).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from scipy.optimize import nnls

from precompute.schema import PATTERNS, TASKS

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLASSIFIER_EVAL = REPO / "data" / "pattern_labels" / "classifier_eval.parquet"
# The classifier whose labels the caches hold (head_measures.pattern): the one extract ran.
# classifier_eval.parquet scores two classifiers: the one effattn ships now, which labels every new
# run ("shipped"), and the issue-4 one that labelled the shipped data/minilm caches ("caches")
SHIPPED_CLASSIFIER = "shipped"
CACHE_CLASSIFIER = "caches"
POOLED = "pooled"
MIN_LABELS_PER_KIND = 50  # fewer consensus labels than this: a kind's own matrix is too noisy
N_BOOT = 1000
LEVEL = 0.95
SUM_WEIGHT = 100.0  # weight of the sum-to-one row in the constrained least squares
INTERVAL_COLUMNS = ("share_adjusted", "share_low", "share_high", "diff_adjusted", "diff_low",
                    "diff_high")


def read_confusions(path: Path = DEFAULT_CLASSIFIER_EVAL, *, classifier: str = SHIPPED_CLASSIFIER,
                    min_labels: int = MIN_LABELS_PER_KIND) -> dict[str, np.ndarray]:
    """classifier_eval.parquet -> {POOLED or kind: (true, predicted) counts}; None-free.

    Only kinds with ≥ min_labels labelled maps get their own matrix; the others use POOLED.
    """
    table = pl.read_parquet(path)
    if "classifier" in table.columns:
        table = table.filter(pl.col("classifier") == classifier)
    table = table.filter(pl.col("metric") == "confusion")
    if table.is_empty():
        raise ValueError(f"{path} has no confusion rows for classifier {classifier!r}: run "
                         "`python tools/compare_pattern_classifiers.py` to write them.")
    out = {}
    for kind in table["kind"].unique().to_list():
        counts = confusion_array(table.filter(pl.col("kind") == kind))
        if kind == "all":
            out[POOLED] = counts
        elif counts.sum() >= min_labels:
            out[kind] = counts
    if POOLED not in out:
        raise ValueError(f"{path} has no pooled (kind 'all') confusion for {classifier!r}.")
    return out


def confusion_array(rows: pl.DataFrame) -> np.ndarray:
    """Long confusion rows (true_pattern, predicted_pattern, value) -> (true, predicted) counts."""
    counts = np.zeros((len(PATTERNS), len(PATTERNS)))
    for true, pred, value in rows.select("true_pattern", "predicted_pattern", "value").iter_rows():
        counts[PATTERNS.index(true), PATTERNS.index(pred)] += value
    return counts


def rate_matrix(counts: np.ndarray) -> np.ndarray:
    """(true, predicted) counts -> P(predicted | true); a class never labelled is assumed right."""
    totals = counts.sum(-1, keepdims=True)
    return np.where(totals > 0, counts / np.where(totals > 0, totals, 1), np.eye(counts.shape[-1]))


def adjust(predicted_share: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Adjusted classify-and-count: p_true ≥ 0 with sum 1 minimising |Mᵀ p_true − p_pred|."""
    c = len(predicted_share)
    a = np.vstack([rates.T, SUM_WEIGHT * np.ones((1, c))])
    b = np.concatenate([predicted_share, [SUM_WEIGHT]])
    p, _ = nnls(a, b)
    return p / p.sum() if p.sum() > 0 else np.full(c, 1.0 / c)


def _class_counts(example_ids: np.ndarray, kind_index: np.ndarray, class_index: np.ndarray,
                  n_kinds: int) -> tuple[np.ndarray, int]:
    """One task's maps -> ((example, kind, class) counts of predicted labels, n_examples)."""
    examples, example_index = np.unique(example_ids, return_inverse=True)
    counts = np.zeros((len(examples), n_kinds, len(PATTERNS)))
    np.add.at(counts, (example_index, kind_index, class_index), 1)
    return counts


def _task_intervals(maps: dict[str, np.ndarray], confusions: dict, allowed: np.ndarray, rng,
                    n_boot: int) -> dict:
    """One task's shares: raw, adjusted, and bootstrap draws of the adjusted ones per kind.
    maps: example_id, kind, class (index into PATTERNS) of each of the task's maps."""
    kinds, kind_index = np.unique(maps["kind"], return_inverse=True)
    kinds = kinds.tolist()
    counts = _class_counts(maps["example_id"], kind_index, maps["class"], len(kinds))
    examples = counts.shape[0]
    counts = counts[..., allowed]                                    # (example, kind, class)
    conf = [confusions.get(k, confusions[POOLED])[np.ix_(allowed, allowed)] for k in kinds]
    total = counts.sum(0)                                            # (kind, class)
    raw = total / total.sum(-1, keepdims=True)
    point = np.stack([adjust(raw[i], rate_matrix(conf[i])) for i in range(len(kinds))])
    weights = rng.multinomial(examples, np.full(examples, 1 / examples), n_boot)
    boot_counts = np.einsum("be,ekc->bkc", weights, counts)         # (draw, kind, class)
    draws = np.empty_like(boot_counts)
    for i, matrix in enumerate(conf):
        rates = np.stack([rng.dirichlet(row + 1, n_boot) for row in matrix], axis=1)  # (draw, t, p)
        for b in range(n_boot):
            n = boot_counts[b, i].sum()
            share = boot_counts[b, i] / n if n > 0 else raw[i]
            draws[b, i] = adjust(share, rates[b])
    return dict(kinds=kinds, raw=raw, point=point, draws=draws,
                n_examples=(counts.sum(-1) > 0).sum(0),
                n_maps=total.sum(-1), conf=[k if k in confusions else POOLED for k in kinds])


def share_intervals(labels: pl.DataFrame, confusions: dict[str, np.ndarray], *,
                    n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> pl.DataFrame:
    """Per task × kind × pattern: raw share, adjusted share, its interval, and the paired
    difference kind − standard (adjusted, with its interval; null for standard itself).

    labels: one row per classified map, columns task, example_id, kind, pattern (nulls dropped).
    confusions: read_confusions' dict ({POOLED: counts, kind: counts, ...}).
    One-sentence tasks cannot have `block` maps: that class is left out of their adjustment.
    """
    labels = labels.filter(pl.col("pattern").is_not_null())
    columns = {c: labels[c].to_numpy() for c in ("task", "example_id", "kind")}
    columns["class"] = labels["pattern"].replace_strict(list(PATTERNS), range(len(PATTERNS)),
                                                       return_dtype=pl.Int64).to_numpy()
    rng = np.random.default_rng(seed)
    tail = (1 - level) / 2
    rows = []
    for task in sorted(set(columns["task"].tolist())):
        two = TASKS[task].two_sentences if task in TASKS else True
        allowed = np.array([two or p != "block" for p in PATTERNS])
        mask = columns["task"] == task
        t = _task_intervals({c: v[mask] for c, v in columns.items()}, confusions, allowed, rng,
                            n_boot)
        low, high = np.quantile(t["draws"], [tail, 1 - tail], axis=0)   # (kind, class)
        std = t["kinds"].index("standard") if "standard" in t["kinds"] else None
        for i, kind in enumerate(t["kinds"]):
            diff = (t["draws"][:, i] - t["draws"][:, std]) if std is not None and i != std else None
            d_low, d_high = np.quantile(diff, [tail, 1 - tail], axis=0) if diff is not None else (None, None)
            for j, pattern in enumerate(np.asarray(PATTERNS)[allowed]):
                rows.append(dict(
                    task=task, kind=kind, pattern=str(pattern), share=t["raw"][i, j],
                    share_adjusted=t["point"][i, j], share_low=low[i, j], share_high=high[i, j],
                    diff_adjusted=None if diff is None else t["point"][i, j] - t["point"][std, j],
                    diff_low=None if diff is None else d_low[j],
                    diff_high=None if diff is None else d_high[j],
                    n_maps=int(t["n_maps"][i]), n_examples=int(t["n_examples"][i]), confusion=t["conf"][i]))
            if not allowed.all():  # keep every class listed: block of a one-sentence task is 0
                rows.append(dict(task=task, kind=kind, pattern="block", share=0.0,
                                 share_adjusted=0.0, share_low=0.0, share_high=0.0,
                                 diff_adjusted=None if diff is None else 0.0,
                                 diff_low=None if diff is None else 0.0,
                                 diff_high=None if diff is None else 0.0,
                                 n_maps=int(t["n_maps"][i]), n_examples=int(t["n_examples"][i]),
                                 confusion=t["conf"][i]))
    return pl.DataFrame(rows, schema=SHARES_SCHEMA).sort(
        "task", "kind", "pattern")


SHARES_SCHEMA = {
    "task": pl.String, "kind": pl.String, "pattern": pl.String, "share": pl.Float64,
    **{c: pl.Float64 for c in INTERVAL_COLUMNS},
    "n_maps": pl.Int64, "n_examples": pl.Int64, "confusion": pl.String}
