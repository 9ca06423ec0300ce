"""Pattern shares with intervals (precompute/share_intervals.py): adjustment and coverage."""
import numpy as np
import polars as pl
import pytest

from precompute.schema import PATTERNS
from precompute.share_intervals import POOLED, adjust, rate_matrix, read_confusions, share_intervals

TRUE_SHARES = np.array([0.4, 0.25, 0.1, 0.05, 0.2])
# a classifier that confuses neighbouring classes (rows: true class, P(predicted | true))
CONFUSION = np.array([[0.80, 0.02, 0.08, 0.02, 0.08],
                      [0.03, 0.85, 0.07, 0.00, 0.05],
                      [0.15, 0.15, 0.60, 0.00, 0.10],
                      [0.05, 0.00, 0.00, 0.75, 0.20],
                      [0.10, 0.05, 0.05, 0.05, 0.75]])


def simulate(rng, *, n_examples, maps_per_example=24, rates=None, task="rte", kinds=("standard",)):
    """Classified maps of examples whose true class shares vary around TRUE_SHARES."""
    rows = []
    for example in range(n_examples):
        shares = rng.dirichlet(50 * TRUE_SHARES)
        for kind in kinds:
            true = rng.choice(len(PATTERNS), maps_per_example, p=shares)
            if rates is not None:  # inverse-CDF draw of each map's predicted class
                true = (np.cumsum(rates[true], -1) < rng.random((len(true), 1))).sum(-1)
            rows += [dict(task=task, example_id=example, kind=kind, pattern=PATTERNS[p]) for p in true]
    return pl.DataFrame(rows)


def labelled_confusion(rng, rates, per_class=80):
    """Counts of a held-out labelled sample of per_class maps of each true class."""
    return np.stack([rng.multinomial(per_class, row) for row in rates]).astype(float)


def rows_of(table, kind="standard"):
    return table.filter(pl.col("kind") == kind).sort("pattern")


def test_perfect_classifier_adjusted_share_equals_raw_share():
    table = share_intervals(simulate(np.random.default_rng(0), n_examples=30),
                            {POOLED: np.eye(5) * 100}, n_boot=100)
    np.testing.assert_allclose(table["share_adjusted"], table["share"], atol=1e-9)


def test_interval_shrinks_with_more_examples():
    rng = np.random.default_rng(1)
    width = [share_intervals(simulate(rng, n_examples=n), {POOLED: np.eye(5) * 1000}, n_boot=200)
             .select((pl.col("share_high") - pl.col("share_low")).mean()).item() for n in (10, 160)]
    assert width[1] < 0.6 * width[0]


def test_adjustment_recovers_true_shares_within_the_interval():
    rng = np.random.default_rng(2)
    table = share_intervals(simulate(rng, n_examples=200, rates=CONFUSION),
                            {POOLED: labelled_confusion(rng, CONFUSION, 400)}, n_boot=300)
    t = rows_of(table)
    truth = dict(zip(PATTERNS, TRUE_SHARES))
    expected = np.array([truth[p] for p in t["pattern"]])
    adjusted_error = np.abs(t["share_adjusted"].to_numpy() - expected).max()
    assert adjusted_error < min(0.03, np.abs(t["share"].to_numpy() - expected).max())  # raw is biased
    assert ((t["share_low"].to_numpy() <= expected) & (expected <= t["share_high"].to_numpy())).all()


def test_intervals_cover_the_truth_in_at_least_90_percent_of_runs():
    rng = np.random.default_rng(3)
    covered, total = 0, 0
    for _ in range(100):
        table = rows_of(share_intervals(simulate(rng, n_examples=25, maps_per_example=12, rates=CONFUSION),
                                        {POOLED: labelled_confusion(rng, CONFUSION)},
                                        n_boot=60, seed=int(rng.integers(1 << 30))))
        truth = dict(zip(PATTERNS, TRUE_SHARES))
        for pattern, low, high in table.select("pattern", "share_low", "share_high").iter_rows():
            covered += low <= truth[pattern] <= high
            total += 1
    assert covered / total >= 0.90


def test_one_example_and_a_class_never_predicted_give_finite_intervals():
    labels = pl.DataFrame(dict(task="rte", example_id=[0] * 6, kind="standard",
                               pattern=["vertical"] * 4 + ["diagonal"] * 2))
    table = share_intervals(labels, {POOLED: np.eye(5) * 10 + 1}, n_boot=50)
    values = table.select("share", "share_adjusted", "share_low", "share_high").to_numpy()
    assert np.isfinite(values).all() and table["n_examples"].to_list() == [1] * 5
    assert table.filter(pl.col("pattern") == "block")["share"].item() == 0.0


def test_difference_to_standard_is_paired_and_null_for_standard():
    rng = np.random.default_rng(4)
    labels = simulate(rng, n_examples=40, kinds=("standard", "effective"))
    table = share_intervals(labels, {POOLED: np.eye(5) * 200}, n_boot=200)
    assert rows_of(table, "standard")["diff_low"].null_count() == len(PATTERNS)
    effective = rows_of(table, "effective")
    assert (effective["diff_low"] <= effective["diff_adjusted"]).all()
    assert (effective["diff_adjusted"] <= effective["diff_high"]).all()


def test_one_sentence_task_leaves_block_out_of_the_adjustment():
    rng = np.random.default_rng(5)
    labels = simulate(rng, n_examples=20, task="sst2").with_columns(
        pattern=pl.when(pl.col("pattern") == "block").then(pl.lit("heterogeneous")).otherwise("pattern"))
    table = share_intervals(labels, {POOLED: np.eye(5) * 50 + 2}, n_boot=50)
    block = table.filter(pl.col("pattern") == "block")
    assert block["share_adjusted"].item() == 0.0 and block["share_high"].item() == 0.0
    assert abs(table["share_adjusted"].sum() - 1.0) < 1e-9


def test_adjust_stays_on_the_simplex():
    p = adjust(np.array([0.9, 0.1, 0.0, 0.0, 0.0]), rate_matrix(np.eye(5) * 10 + 5))
    assert (p >= 0).all() and abs(p.sum() - 1) < 1e-9


def test_read_confusions_uses_kinds_with_enough_labels_only(tmp_path):
    rows = [dict(classifier="caches", metric="confusion", kind=kind, true_pattern=t,
                 predicted_pattern=p, value=float(count) if t == p else 0.0, n=0)
            for kind, count in (("all", 30), ("standard", 20), ("norm", 2)) for t in PATTERNS for p in PATTERNS]
    path = tmp_path / "classifier_eval.parquet"
    pl.DataFrame(rows).write_parquet(path)
    confusions = read_confusions(path, classifier="caches")
    assert set(confusions) == {POOLED, "standard"}
    assert confusions[POOLED][0, 0] == 30
    with pytest.raises(ValueError, match="'shipped'"):  # a new run is corrected with the shipped classifier's
        read_confusions(path)


def test_read_confusions_without_rows_names_the_command(tmp_path):
    path = tmp_path / "classifier_eval.parquet"
    pl.DataFrame(dict(metric=["macro_f1"], kind=["all"], value=[0.5])).write_parquet(path)
    with pytest.raises(ValueError, match="compare_pattern_classifiers"):
        read_confusions(path)


def test_analyse_adds_intervals_to_pattern_shares_from_the_classifier_eval_file(tmp_path):
    from precompute.analyse import pattern_shares, with_intervals

    rows = [dict(classifier="shipped", metric="confusion", kind="all", true_pattern=t, predicted_pattern=p,
                 value=40.0 if t == p else 2.0, n=48) for t in PATTERNS for p in PATTERNS]
    path = tmp_path / "classifier_eval.parquet"
    pl.DataFrame(rows).write_parquet(path)
    measures = simulate(np.random.default_rng(7), n_examples=20, kinds=("standard", "effective")).lazy()
    raw = pattern_shares(measures).collect()
    table = with_intervals(raw, measures, path)
    assert table.height == raw.height and table["share"].equals(raw["share"])
    assert table["share_low"].null_count() == 0 and (table["share_low"] <= table["share_high"]).all()
    assert with_intervals(raw, measures, tmp_path / "missing.parquet").columns == raw.columns
