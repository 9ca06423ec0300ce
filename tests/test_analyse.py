"""precompute.analyse: its tables equal direct polars/numpy computations on the same caches."""

import numpy as np
import polars as pl
import pytest

from precompute import CacheError, analyse
from precompute.schema import ATTRIBUTION_MEASURES, HEAD_MEASURES, INFLUENCE_MEASURES, PATTERNS
from precompute.store import RunFolder, Shard

N_EXAMPLES, N_LAYERS, N_HEADS, D_HEAD = 24, 2, 3, 16
KINDS = ("standard", "effective")


def _head_measures(example_ids: np.ndarray, rng: np.random.Generator, patterns: bool) -> pl.DataFrame:
    keys = pl.DataFrame({"example_id": example_ids}).join(
        pl.DataFrame({"layer": range(N_LAYERS)}), how="cross").join(
        pl.DataFrame({"head": range(N_HEADS)}), how="cross").join(
        pl.DataFrame({"kind": KINDS}), how="cross")
    n = len(keys)
    columns = {name: rng.random(n) for name in HEAD_MEASURES}
    columns["cls_row_pron"] = np.where(rng.random(n) < 0.3, np.nan, columns["cls_row_pron"])  # absent
    frame = keys.with_columns(task=pl.lit("rte"), seq_len=20, rank=16, nullity=4, **columns).fill_nan(None)
    if patterns:
        frame = frame.with_columns(pattern=pl.Series(rng.choice(PATTERNS[:3], n)), pattern_score=0.5)
    return frame


def _examples(example_ids: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
    n = len(example_ids)
    return pl.DataFrame({
        "task": "rte", "example_id": example_ids, "label": 0.0,
        "prediction": rng.integers(0, 2, n).astype(float), "prediction_effective": rng.integers(0, 2, n).astype(float),
        "seq_len": rng.integers(5, 40, n), "n_segments": 2, "in_map_sample": False, "in_efficient_sample": False,
        "text_a": None, "text_b": None, "tokens": None, "token_pos": None, "segment_ids": None,
    })


def _attribution(example_ids: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
    keys = _head_measures(example_ids, rng, False).select("task", "example_id", "layer", "head", "kind")
    columns = {name: rng.random(len(keys)) for name in ATTRIBUTION_MEASURES}
    columns["kendall_tau"] = np.where(rng.random(len(keys)) < 0.2, np.nan, columns["kendall_tau"])  # undefined
    return keys.with_columns(**columns).fill_nan(None)


def _layer_influence(example_ids: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
    keys = pl.DataFrame({"example_id": example_ids}).join(pl.DataFrame({"layer": range(N_LAYERS)}), how="cross")
    return keys.with_columns(task=pl.lit("rte"), seq_len=20,
                             **{name: rng.random(len(keys)) for name in INFLUENCE_MEASURES})


def _run(tmp_path, *, patterns: bool, attribution: bool = False) -> RunFolder:
    """A run folder whose caches come from two shards, two chunks each."""
    rng = np.random.default_rng(0)
    run = RunFolder(tmp_path)
    run.update_manifest({"d_head": D_HEAD})
    for part, ids in enumerate(np.array_split(np.arange(N_EXAMPLES), 4)):
        shard, chunk = Shard(part // 2, 2), part % 2
        run.write_part("head_measures", "rte", _head_measures(ids, rng, patterns), shard=shard, chunk=chunk)
        run.write_part("examples", "rte", _examples(ids, rng), shard=shard, chunk=chunk)
        if attribution:
            run.write_part("attribution", "rte", _attribution(ids, rng), shard=shard, chunk=chunk)
            run.write_part("layer_influence", "rte", _layer_influence(ids, rng), shard=shard, chunk=chunk)
    analyse.run_analyse(run, ["rte"])
    return run


@pytest.fixture
def run(tmp_path):
    return _run(tmp_path, patterns=True)


def test_head_summary_equals_a_direct_groupby(run):
    measures = run.scan("head_measures").collect()
    summary = run.scan("head_summary").collect()
    assert len(summary) == N_LAYERS * N_HEADS * len(KINDS) * len(HEAD_MEASURES)
    for row in summary.sample(20, seed=0).iter_rows(named=True):
        values = measures.filter(
            (pl.col("layer") == row["layer"]) & (pl.col("head") == row["head"]) & (pl.col("kind") == row["kind"])
        )[row["measure"]].drop_nulls().to_numpy().astype(np.float64)
        assert row["n"] == len(values)
        assert row["mean"] == pytest.approx(values.mean())
        assert row["std"] == pytest.approx(values.std(ddof=1))
        assert [row["q25"], row["q50"], row["q75"]] == pytest.approx(np.quantile(values, [0.25, 0.5, 0.75]))


def test_head_summary_counts_only_present_token_types(run):
    summary = run.scan("head_summary").filter(pl.col("measure") == "cls_row_pron").collect()
    assert (summary["n"] < N_EXAMPLES).any() and (summary["n"] > 0).all()


def test_task_summary_equals_direct_computation(run):
    examples = run.scan("examples").collect()
    row = run.scan("task_summary").collect().row(0, named=True)
    assert row["n_eval"] == N_EXAMPLES and row["d_head"] == D_HEAD
    assert row["share_le_d_head"] == pytest.approx((examples["seq_len"] <= D_HEAD).mean())
    assert row["mean_seq_len"] == pytest.approx(examples["seq_len"].mean())
    agreement = (examples["prediction"] == examples["prediction_effective"]).mean()
    assert row["prediction_agreement"] == pytest.approx(agreement)


def test_pattern_shares_sum_to_one_and_match_counts(run):
    measures = run.scan("head_measures").collect()
    shares = run.scan("pattern_shares").collect()
    assert set(shares["pattern"]) == set(PATTERNS)
    for (kind,), group in shares.group_by("kind"):
        assert group["share"].sum() == pytest.approx(1.0)
        of_kind = measures.filter(pl.col("kind") == kind)
        assert group["n_maps"].unique().to_list() == [len(of_kind)]
        vertical = group.filter(pl.col("pattern") == "vertical")["share"].item()
        assert vertical == pytest.approx((of_kind["pattern"] == "vertical").mean())


def test_pattern_grid_names_the_most_frequent_class(run):
    measures = run.scan("head_measures").collect()
    grid = run.scan("pattern_grid").collect()
    assert len(grid) == N_LAYERS * N_HEADS * len(KINDS)
    for row in grid.iter_rows(named=True):
        counts = measures.filter(
            (pl.col("layer") == row["layer"]) & (pl.col("head") == row["head"]) & (pl.col("kind") == row["kind"])
        )["pattern"].value_counts(sort=True)
        top = counts["count"].max()
        assert row["dominant_share"] == pytest.approx(top / N_EXAMPLES)
        assert row["dominant_pattern"] == min(counts.filter(pl.col("count") == top)["pattern"])


def test_pattern_tables_are_skipped_until_patterns_are_classified(tmp_path):
    run = _run(tmp_path, patterns=False)
    assert run.part_files("pattern_shares") == [] and run.part_files("head_summary")


def test_attribution_summary_equals_a_direct_groupby(tmp_path):
    run = _run(tmp_path, patterns=False, attribution=True)
    rows = run.scan("attribution").collect()
    summary = run.scan("attribution_summary").collect()
    assert len(summary) == N_LAYERS * N_HEADS * len(KINDS) * len(ATTRIBUTION_MEASURES)
    for row in summary.sample(15, seed=0).iter_rows(named=True):
        values = rows.filter(
            (pl.col("layer") == row["layer"]) & (pl.col("head") == row["head"]) & (pl.col("kind") == row["kind"])
        )[row["measure"]].drop_nulls().to_numpy().astype(np.float64)
        assert row["n"] == len(values)
        assert row["mean"] == pytest.approx(values.mean()) and row["std"] == pytest.approx(values.std(ddof=1))
    assert (summary.filter(pl.col("measure") == "kendall_tau")["n"] < N_EXAMPLES).any()


def test_influence_summary_equals_a_direct_groupby(tmp_path):
    run = _run(tmp_path, patterns=False, attribution=True)
    influence = run.scan("layer_influence").collect()
    summary = run.scan("influence_summary").collect()
    assert len(summary) == N_LAYERS * len(INFLUENCE_MEASURES)
    for row in summary.iter_rows(named=True):
        values = influence.filter(pl.col("layer") == row["layer"])[row["measure"]].to_numpy().astype(np.float64)
        assert row["n"] == N_EXAMPLES and row["mean"] == pytest.approx(values.mean())
        assert row["std"] == pytest.approx(values.std(ddof=1))


def test_attribution_summaries_are_skipped_without_the_attribute_stage(run):
    assert run.part_files("attribution_summary") == [] and run.part_files("influence_summary") == []
    assert run.part_files("head_summary")


def test_missing_extract_output_names_the_stage_to_run(tmp_path):
    run = RunFolder(tmp_path)
    run.update_manifest({"d_head": D_HEAD})
    with pytest.raises(CacheError, match="run the extract stage first"):
        analyse.run_analyse(run, ["rte"])
