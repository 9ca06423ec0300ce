"""The explorer sample rule (precompute/map_sample.py): seeded, spans lengths, mostly n > d_head,
includes mispredictions and the required examples; and extract puts it first in its order."""

from pathlib import Path

import numpy as np
import polars as pl
from transformers import AutoTokenizer

from precompute import extract
from precompute.config import RunConfig
from precompute.map_sample import (LONG_SHARE, choose_map_sample, estimated_lengths, mispredicted,
                                   model_d_head)
from precompute.store import Shard

D_HEAD = 32
RNG = np.random.default_rng(0)
LENGTHS = RNG.integers(8, 129, 600)  # like a task's analysed examples
SHORT_HEAVY = np.concatenate([RNG.integers(8, 33, 540), RNG.integers(33, 60, 60)])  # like SST-2: mostly n ≤ d_head


def test_same_inputs_give_the_same_sample_and_another_seed_another():
    first = choose_map_sample(LENGTHS, size=20, d_head=D_HEAD, seed=42)
    assert np.array_equal(first, choose_map_sample(LENGTHS, size=20, d_head=D_HEAD, seed=42))
    assert not np.array_equal(first, choose_map_sample(LENGTHS, size=20, d_head=D_HEAD, seed=7))


def test_sample_has_the_asked_size_without_repeats():
    picked = choose_map_sample(LENGTHS, size=20, d_head=D_HEAD, seed=1)
    assert len(picked) == len(np.unique(picked)) == 20
    assert len(choose_map_sample(LENGTHS[:5], size=20, d_head=D_HEAD, seed=1)) == 5
    assert len(choose_map_sample(LENGTHS, size=0, d_head=D_HEAD, seed=1)) == 0


def test_most_of_the_sample_is_longer_than_d_head_even_where_few_examples_are():
    for lengths in (LENGTHS, SHORT_HEAVY):
        picked = choose_map_sample(lengths, size=20, d_head=D_HEAD, seed=3)
        assert (lengths[picked] > D_HEAD).mean() >= LONG_SHARE


def test_some_short_examples_stay_so_the_page_can_show_a_eff_equals_a():
    picked = choose_map_sample(LENGTHS, size=20, d_head=D_HEAD, seed=3)
    assert (LENGTHS[picked] <= D_HEAD).sum() >= 1


def test_sample_spans_the_lengths_from_short_to_the_longest():
    picked = choose_map_sample(LENGTHS, size=20, d_head=D_HEAD, seed=5)
    long = np.sort(LENGTHS[picked][LENGTHS[picked] > D_HEAD])
    assert long[0] <= np.quantile(LENGTHS[LENGTHS > D_HEAD], 0.1)
    assert long[-1] >= np.quantile(LENGTHS, 0.95)


def test_mispredicted_examples_are_included_where_known():
    wrong = np.zeros(len(LENGTHS), dtype=bool)
    wrong[[3, 50, 51, 400, 401, 402]] = True  # rare errors: a random pick would likely miss them all
    picked = choose_map_sample(LENGTHS, size=20, d_head=D_HEAD, seed=2, wrong=wrong)
    assert wrong[picked].sum() >= 5


def test_required_examples_are_always_in_the_sample():
    picked = choose_map_sample(LENGTHS, size=20, d_head=D_HEAD, seed=2, required=[7, 8, 9])
    assert {7, 8, 9} <= set(picked.tolist()) and len(picked) == 20


def test_regression_counts_a_prediction_a_point_off_as_wrong():
    labels, predictions = np.array([1.0, 2.0, 3.0]), np.array([1.2, 3.0, 4.5])
    assert mispredicted(labels, predictions, regression=True).tolist() == [False, True, True]
    assert mispredicted(np.array([0.0, 1.0]), np.array([0.0, 0.0]), regression=False).tolist() == [False, True]


def test_estimated_length_never_exceeds_the_tokenizers_count(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts_a = ["Hello, world!", "The cat's owner (Dr. Smith) wasn't home.", "unbelievably antidisestablishmentarian"]
    texts_b = ["A second sentence.", "Yes.", None]
    estimated = estimated_lengths(texts_a, [b for b in texts_b], max_seq_len=128)
    for a, b, n in zip(texts_a, texts_b, estimated):
        assert n <= len(tokenizer(a, b)["input_ids"])
    assert estimated_lengths(["word " * 300], None, max_seq_len=128).tolist() == [128]


def test_extract_puts_the_map_sample_first_and_every_shard_agrees(glue_dir):
    from precompute import glue

    eval_frame = glue.load_task("rte", glue_dir=glue_dir).eval
    config = RunConfig(tasks=("rte",), out=Path("unused"), analysis_examples=12, map_examples=4, device="cpu")
    whole = extract.analysis_sample(eval_frame, config, Shard())
    assert whole["in_map_sample"].to_list() == [True] * 4 + [False] * 8
    parts = pl.concat([extract.analysis_sample(eval_frame, config, Shard(i, 3)) for i in range(3)])
    assert parts.equals(whole)
    assert model_d_head(config.model) == 32  # MiniLM-L6: 384 / 12
