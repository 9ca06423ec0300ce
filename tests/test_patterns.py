"""Pattern classifier (issue 4): archetypes, edge cases, normalisation, held-out evaluation."""
import importlib.util
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from effattn.archetypes import archetype
from effattn.patterns import (FEATURES, PATTERNS, classify_pattern, classify_patterns,
                              normalise_rows, pattern_features)

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO / "data" / "pattern_labels" / "labels.parquet"
EVAL = REPO / "data" / "pattern_labels" / "classifier_eval.parquet"
CONSENSUS = REPO / "data" / "pattern_labels" / "consensus.parquet"


def _tool():
    spec = importlib.util.spec_from_file_location("label_patterns",
                                                  REPO / "tools" / "label_patterns.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", ["standard", "effective"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_archetypes_are_classified_as_their_pattern(pattern, kind):
    rng = np.random.default_rng(PATTERNS.index(pattern) + 10 * (kind == "effective"))
    hits = []
    for i in range(10):
        two = pattern == "block" or i % 2 == 0
        weights, seg = archetype(pattern, rng, kind=kind, two_sentences=two)
        hits.append(classify_pattern(weights, segment_ids=seg)[0] == pattern)
    assert np.mean(hits) >= 0.8


def test_effective_archetypes_have_negative_entries_and_unnormalised_rows():
    weights, _ = archetype("vertical", np.random.default_rng(0), kind="effective")
    assert weights.min() < 0
    assert not np.allclose(weights.sum(-1), 1.0)


def test_one_sentence_input_is_never_block():
    rng = np.random.default_rng(1)
    weights, _ = archetype("block", rng, n=40)
    labels, scores = classify_patterns(weights, segment_ids=np.zeros(40, np.int8))
    assert labels != "block"
    assert scores[PATTERNS.index("block")] == 0


def test_two_token_map_gets_a_class_and_finite_scores():
    for weights in (np.array([[0.5, 0.5], [0.5, 0.5]]), np.eye(2), np.array([[1.0, 0], [1, 0]])):
        label, score = classify_pattern(weights, segment_ids=np.zeros(2, np.int8))
        assert label in PATTERNS and label != "block" and np.isfinite(score)


@pytest.mark.parametrize("column", ["cls", "sep"])
def test_all_weight_on_one_special_column_is_vertical(column):
    n = 30
    seg = np.r_[np.zeros(12, np.int8), np.ones(n - 12, np.int8)]
    weights = np.zeros((n, n))
    weights[:, 0 if column == "cls" else n - 1] = 1.0
    assert classify_pattern(weights, segment_ids=seg)[0] == "vertical"
    assert classify_pattern(-0.3 * weights, segment_ids=seg)[0] == "vertical"


def test_normalisation_ignores_sign_and_row_scale():
    rng = np.random.default_rng(2)
    weights, seg = archetype("heterogeneous", rng, kind="effective")
    scaled = -weights * rng.uniform(0.1, 3.0, size=(weights.shape[0], 1))
    np.testing.assert_allclose(pattern_features(weights, segment_ids=seg),
                               pattern_features(scaled, segment_ids=seg), rtol=1e-4, atol=1e-5)


def test_all_zero_row_becomes_uniform():
    rows = normalise_rows(np.zeros((3, 4)))
    np.testing.assert_allclose(rows, 0.25)


def test_batch_of_maps_matches_one_by_one():
    rng = np.random.default_rng(3)
    seg = np.r_[np.zeros(10, np.int8), np.ones(14, np.int8)]
    maps = np.stack([archetype(p, rng, n=24)[0] for p in PATTERNS for _ in range(2)])
    maps = maps.reshape(2, 5, 24, 24)                               # (kind, head, query, key)
    labels, scores = classify_patterns(maps, segment_ids=seg)
    assert labels.shape == (2, 5) and scores.shape == (2, 5, len(PATTERNS))
    np.testing.assert_allclose(scores.sum(-1), 1.0, rtol=1e-5)
    assert labels[1, 3] == classify_pattern(maps[1, 3], segment_ids=seg)[0]


def test_sep_positions_give_the_same_features_as_segment_ids():
    weights, seg = archetype("block", np.random.default_rng(4), n=30)
    seps = [int(np.flatnonzero(seg == 0)[-1]), 29]
    np.testing.assert_allclose(pattern_features(weights, segment_ids=seg),
                               pattern_features(weights, sep_positions=seps), rtol=1e-6)


def test_missing_segments_raise_a_message_naming_the_fix():
    with pytest.raises(ValueError, match="segment_ids"):
        classify_patterns(np.eye(5))


def test_features_have_one_value_per_name():
    weights, seg = archetype("diagonal", np.random.default_rng(5), n=20)
    assert pattern_features(weights, segment_ids=seg).shape == (len(FEATURES),)


def test_cross_validation_scores_each_label_with_a_model_that_never_saw_it():
    # One-hot row-id features and random labels: a memorising model is perfect on its
    # training rows, but held-out predictions can only be at chance level.
    tool = _tool()
    rng = np.random.default_rng(6)
    n = 100
    features, y, two = np.eye(n, dtype=np.float32), rng.integers(0, 5, n), np.ones(n, bool)
    fit = lambda f, t, _: tool.fit_logistic(f, t, C=1e4, augment=False)  # noqa: E731
    from effattn.patterns import pattern_scores
    memorised = pattern_scores(features, two, model=fit(features, y, two)).argmax(-1)
    held_out = tool.cross_validated_predictions(features, y, two, fit, n_splits=5, seed=0)
    assert (memorised == y).mean() == 1.0
    assert (held_out == y).mean() < 0.4


def test_shipped_evaluation_predicts_every_consensus_label_once():
    consensus = pl.read_parquet(CONSENSUS, columns=["pattern"]).filter(pl.col("pattern") != "ambiguous")
    table = pl.read_parquet(EVAL).filter(pl.col("classifier") == "shipped", pl.col("kind") == "all")
    assert table.filter(pl.col("metric") == "confusion")["value"].sum() == consensus.height
    assert table.filter(pl.col("metric") == "macro_f1")["n"][0] == consensus.height


def test_caches_classifier_is_evaluated_on_maps_it_was_not_fitted_on():
    key = ["model", "task", "example_id", "layer", "head", "kind"]
    table = pl.read_parquet(EVAL).filter(pl.col("classifier") == "caches", pl.col("kind") == "all")
    consensus = pl.read_parquet(CONSENSUS, columns=[*key, "pattern"]).filter(pl.col("pattern") != "ambiguous")
    unseen = consensus.join(pl.read_parquet(LABELS, columns=key), on=key, how="anti")
    assert table.filter(pl.col("metric") == "confusion")["value"].sum() == unseen.height > 0


def test_shipped_labels_cover_every_class_for_both_kinds():
    labels = pl.read_parquet(LABELS, columns=["pattern", "kind", "labeller"])
    assert labels.height >= 300
    counts = labels.group_by("pattern", "kind").len()
    assert counts.height == len(PATTERNS) * 2
    assert labels["labeller"].unique().to_list() == ["AI assistant (Claude) viewing rendered maps"]


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_very_short_sentence_pairs_get_finite_scores(n):
    seg = np.r_[np.zeros(n // 2, np.int8), np.ones(n - n // 2, np.int8)]
    maps = np.stack([np.eye(n), np.full((n, n), 1.0 / n)])
    labels, scores = classify_patterns(maps, segment_ids=seg)
    assert np.isfinite(scores).all() and set(labels.tolist()) <= set(PATTERNS)
