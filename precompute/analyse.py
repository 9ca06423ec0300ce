"""Stage 3, analyse: per-task aggregates of the extracted caches, read directly by the dashboard.

Reads `head_measures` and `examples` of all shards as one dataset (polars lazy scans) and
writes, per task, one part of each analysis table (docs/SCHEMA.md):
- head_summary: mean, std, q25, q50, q75 and n (non-null values) of every f32 measure per
  layer × head × kind;
- task_summary: examples analysed, d_head, share of examples with seq_len ≤ d_head (where
  effective equals standard), mean seq_len, agreement of the predictions standard vs effective;
- pattern_shares / pattern_grid: only when the `pattern` column has been filled; the shares come
  with the classifier-corrected share and 95 % intervals (precompute/share_intervals.py) when a
  classifier evaluation (data/pattern_labels/classifier_eval.parquet) is available;
- attribution_summary / influence_summary: mean, std and n of the attention-vs-attribution
  measures per layer × head × kind and of the layer influence measures per layer, only when the
  attribute stage has written `attribution` (a run without it analyses as before);
- importance_summary: the same of the [CLS]-row-vs-importance τ-b per target, when the
  importance stage has run;
- sparsity_summary: zero share and support size of every kind's maps per layer × head.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from precompute import CacheError
from precompute import share_intervals as intervals
from precompute.schema import ATTRIBUTION_MEASURES, HEAD_MEASURES, INFLUENCE_MEASURES, PATTERNS, SPARSITY_MEASURES, TASKS
from precompute.store import RunFolder, Shard

HEAD = ["task", "layer", "head", "kind"]
QUANTILE_METHOD = "linear"  # numpy's default, so the numbers match a numpy recomputation
# Regression predictions (STS-B) agree when they differ by at most this (scores span 0..5):
# effective attention reproduces the head outputs exactly up to float rounding.
REGRESSION_AGREEMENT_TOLERANCE = 1e-3


def head_summary(measures: pl.LazyFrame) -> pl.LazyFrame:
    """Distribution of each measure per task × layer × head × kind (nulls left out)."""
    value = pl.col("value").drop_nulls()
    long = measures.unpivot(index=HEAD, on=list(HEAD_MEASURES), variable_name="measure", value_name="value")
    return (
        long.group_by([*HEAD, "measure"])
        .agg(
            mean=value.mean(), std=value.std(),
            q25=value.quantile(0.25, QUANTILE_METHOD), q50=value.quantile(0.5, QUANTILE_METHOD),
            q75=value.quantile(0.75, QUANTILE_METHOD), n=value.count().cast(pl.Int64),
        )
        .sort([*HEAD, "measure"])
    )


def _mean_std_n(frame: pl.LazyFrame, keys: list[str], measures: tuple[str, ...]) -> pl.LazyFrame:
    """mean, std and n (non-null values) of each measure per `keys`, in long format."""
    value = pl.col("value").drop_nulls()
    long = frame.unpivot(index=keys, on=list(measures), variable_name="measure", value_name="value")
    return (
        long.group_by([*keys, "measure"])
        .agg(mean=value.mean(), std=value.std(), n=value.count().cast(pl.Int64))
        .sort([*keys, "measure"])
    )


def attribution_summary(attribution: pl.LazyFrame) -> pl.LazyFrame:
    """jsd, kendall_tau, top1_agreement per task × layer × head × kind: mean, std, n."""
    return _mean_std_n(attribution, HEAD, ATTRIBUTION_MEASURES)


def influence_summary(layer_influence: pl.LazyFrame) -> pl.LazyFrame:
    """own_share and entropy per task × layer: mean, std, n."""
    return _mean_std_n(layer_influence, ["task", "layer"], INFLUENCE_MEASURES)


def importance_summary(importance: pl.LazyFrame) -> pl.LazyFrame:
    """Kendall τ-b of [CLS] rows vs each importance target per task × layer × head × kind."""
    return _mean_std_n(importance, [*HEAD, "target"], ("kendall_tau",)).drop("measure")


def sparsity_summary(measures: pl.LazyFrame) -> pl.LazyFrame:
    """Per task × layer × head × kind: zero_share, the share of a map's real weights that are
    exactly 0 (1 − support_share), and support_size, the mean number of non-zero keys per real
    query row (support_share · n, since support_share counts non-zeros over n² weights)."""
    sparsity = measures.select(*HEAD, zero_share=1 - pl.col("support_share"),
                               support_size=pl.col("support_share") * pl.col("seq_len"))
    return _mean_std_n(sparsity, HEAD, SPARSITY_MEASURES)


def task_summary(examples: pl.LazyFrame, task: str, d_head: int) -> pl.LazyFrame:
    """One row: n_eval, d_head, share_le_d_head, mean_seq_len, prediction_agreement."""
    if TASKS[task].is_regression:
        agree = (pl.col("prediction") - pl.col("prediction_effective")).abs() <= REGRESSION_AGREEMENT_TOLERANCE
    else:
        agree = pl.col("prediction") == pl.col("prediction_effective")
    return examples.filter(pl.col("task") == task).select(
        task=pl.lit(task),
        n_eval=pl.len().cast(pl.Int64),
        d_head=pl.lit(d_head, dtype=pl.Int64),
        share_le_d_head=(pl.col("seq_len") <= d_head).mean(),
        mean_seq_len=pl.col("seq_len").mean(),
        prediction_agreement=agree.mean(),
    )


def pattern_shares(measures: pl.LazyFrame) -> pl.LazyFrame:
    """Share of classified maps in each pattern class per task × kind (every class listed)."""
    classified = measures.filter(pl.col("pattern").is_not_null())
    totals = classified.group_by("task", "kind").agg(n_maps=pl.len().cast(pl.Int64))
    counts = classified.group_by("task", "kind", "pattern").agg(count=pl.len())
    every_class = totals.join(pl.LazyFrame({"pattern": list(PATTERNS)}), how="cross")
    return (
        every_class.join(counts, on=["task", "kind", "pattern"], how="left")
        .with_columns(share=pl.col("count").fill_null(0) / pl.col("n_maps"))
        .select("task", "kind", "pattern", "share", "n_maps")
        .sort("task", "kind", "pattern")
    )


def with_intervals(shares: pl.DataFrame, measures: pl.LazyFrame, classifier_eval: Path | None, *,
                   classifier: str = intervals.SHIPPED_CLASSIFIER) -> pl.DataFrame:
    """Add the corrected shares and their intervals to pattern_shares (null columns when there is
    no classifier evaluation to correct with). classifier: whose held-out confusion corrects the
    counts, the one that labelled the run's maps (a new run: the shipped one)."""
    if classifier_eval is None or not Path(classifier_eval).is_file():
        return shares
    try:
        confusions = intervals.read_confusions(Path(classifier_eval), classifier=classifier)
    except (ValueError, OSError, pl.exceptions.PolarsError) as err:
        raise CacheError(f"cannot read the classifier's confusion from {classifier_eval} ({err}); "
                         "rerun `python tools/compare_pattern_classifiers.py` or pass another "
                         "classifier_eval file") from err
    labels = measures.select("task", "example_id", "kind", "pattern").filter(pl.col("pattern").is_not_null())
    table = intervals.share_intervals(labels.collect(), confusions)
    return shares.join(table.drop("share", "n_maps"), on=["task", "kind", "pattern"], how="left", maintain_order="left")


def pattern_grid(measures: pl.LazyFrame) -> pl.LazyFrame:
    """Most frequent pattern of each task × layer × head × kind and its share (ties: by name)."""
    counts = (
        measures.filter(pl.col("pattern").is_not_null())
        .group_by([*HEAD, "pattern"]).agg(count=pl.len())
        .with_columns(total=pl.col("count").sum().over(HEAD))
    )
    return (
        counts.sort([*HEAD, "count", "pattern"], descending=[False] * len(HEAD) + [True, False])
        .group_by(HEAD, maintain_order=True).first()
        .select(*HEAD, dominant_pattern=pl.col("pattern"), dominant_share=pl.col("count") / pl.col("total"))
        .sort(HEAD)
    )


def run_analyse(run: RunFolder, tasks: list[str], *,
                classifier_eval: Path | None = intervals.DEFAULT_CLASSIFIER_EVAL) -> None:
    """Write head_summary, task_summary and (when classified) pattern tables for each task, and
    the attribution summaries when the attribute stage has run. classifier_eval: the held-out
    confusion of the pattern classifier for the share intervals (None or missing: no intervals)."""
    d_head = run.read_manifest().get("d_head")
    if d_head is None:
        raise CacheError(f"manifest {run.manifest_path} has no d_head: re-run `python -m precompute` so that it records the model shape")
    for task in tasks:
        measures = run.scan("head_measures", [task])
        examples = run.scan("examples", [task])
        if not run.part_files("head_measures", [task]):
            raise CacheError(f"no head_measures for task {task} in {run.root}: run the extract stage first (--stages extract)")
        frames = {
            "head_summary": head_summary(measures), "task_summary": task_summary(examples, task, d_head),
            "pattern_shares": pattern_shares(measures), "pattern_grid": pattern_grid(measures),
            "sparsity_summary": sparsity_summary(measures),
        }
        if run.part_files("attribution", [task]):
            frames["attribution_summary"] = attribution_summary(run.scan("attribution", [task]))
            frames["influence_summary"] = influence_summary(run.scan("layer_influence", [task]))
        else:
            for table in ("attribution_summary", "influence_summary"):
                run.clear(table, task)  # drop summaries of attribution rows that are gone
        if run.part_files("importance", [task]):
            frames["importance_summary"] = importance_summary(run.scan("importance", [task]))
        else:
            run.clear("importance_summary", task)
        tables = _collect(frames)
        # pattern_shares lists every class of each task × kind with a classified map, so it is
        # empty exactly when no map has a pattern yet (or any more).
        if tables["pattern_shares"].is_empty():
            for table in ("pattern_shares", "pattern_grid"):
                run.clear(table, task)  # drop pattern tables of an earlier analysis
                del tables[table]
        else:
            tables["pattern_shares"] = with_intervals(tables["pattern_shares"], measures, classifier_eval)
        for table, frame in tables.items():
            run.write_part(table, task, frame, shard=Shard(), chunk=0)


def _collect(frames: dict[str, pl.LazyFrame]) -> dict[str, pl.DataFrame]:
    """Collect all frames in one query, so the caches they share are scanned once, not per table."""
    return dict(zip(frames, pl.collect_all(frames.values(), engine="streaming")))
