"""precompute on an encoder without token_type_ids (RoBERTa-style, MPNet): sentences and special
tokens come from the tokenizer's own separator, not from token_type_ids. MPNet also has no
AttentionInterface: effattn replaces its attention forward (effattn/mpnet_attention.py)."""

import polars as pl
import pytest
import torch

from conftest import tiny_run_argv
from mpnet_fixture import tiny_mpnet_dir  # noqa: F401 (a pytest fixture)
from precompute.cli import main
from precompute.extract import segment_ids


def test_segments_match_berts_token_type_ids(tiny_bert_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    encoding = tokenizer(["The cat sat on the mat.", "Rain."], ["A dog ran.", "It was wet outside today."],
                         padding=True, return_tensors="pt")
    segments = segment_ids(encoding["input_ids"], tokenizer.sep_token_id, pairs=True)
    real = encoding["attention_mask"].bool()
    assert torch.equal(segments[real], encoding["token_type_ids"][real])


def test_roberta_pairs_split_after_the_first_separator():
    # <s> A A </s> </s> B </s> <pad>
    input_ids = torch.tensor([[0, 7, 8, 2, 2, 9, 2, 1]])
    assert segment_ids(input_ids, 2, pairs=True).tolist() == [[0, 0, 0, 0, 1, 1, 1, 1]]
    assert segment_ids(input_ids, 2, pairs=False).tolist() == [[0] * 8]


def run_every_stage(out, glue_dir, model_dir):
    """A run folder of RTE and SST-2 (pairs and single sentences) through every stage."""
    for task in ("rte", "sst2"):
        assert main(tiny_run_argv(task, out, glue_dir, model_dir, map_examples=2, attribution_examples=1,
                                  importance_examples=2)) == 0
    return out


@pytest.fixture(scope="module")
def roberta_run(tmp_path_factory, glue_dir, tiny_roberta_dir):
    return run_every_stage(tmp_path_factory.mktemp("roberta_run"), glue_dir, tiny_roberta_dir)


def test_a_roberta_style_encoder_runs_every_stage(roberta_run):
    examples = pl.read_parquet(roberta_run / "examples", hive_partitioning=False)
    assert set(examples["task"]) == {"rte", "sst2"}
    for path in ("head_measures", "head_summary", "attribution", "importance", "metrics"):
        assert len(pl.read_parquet(roberta_run / path, hive_partitioning=False)) > 0, path


def check_sentences_and_separators(run):
    """<s> A </s></s> B </s>: tags, segments and the [SEP] measure keyed by the model's own tokens."""
    stored = pl.read_parquet(run / "examples", hive_partitioning=False).filter(pl.col("in_map_sample"))
    assert set(stored["task"]) == {"rte", "sst2"}
    for row in stored.iter_rows(named=True):
        tokens, segments, tags = row["tokens"], row["segment_ids"], row["token_pos"]
        assert tokens[0] == "<s>" and tokens[-1] == "</s>"
        assert tags[0] == "[CLS]" and all(tag == "[SEP]" for token, tag in zip(tokens, tags) if token == "</s>")
        if row["task"] == "rte":  # <s> A </s></s> B </s>: the second </s> opens sentence 1
            first_sep = tokens.index("</s>")
            assert tokens[first_sep + 1] == "</s>"
            assert set(segments[: first_sep + 1]) == {0} and set(segments[first_sep + 1:]) == {1}
        else:
            assert set(segments) == {0} and tokens.count("</s>") == 1
    measures = pl.read_parquet(run / "head_measures", hive_partitioning=False)
    assert measures["sep_weight"].drop_nulls().len() == len(measures)  # every example has a </s>


def test_its_sentences_and_separators_come_from_its_own_tokens(roberta_run):
    check_sentences_and_separators(roberta_run)


@pytest.fixture(scope="module")
def mpnet_run(tmp_path_factory, glue_dir, tiny_mpnet_dir):
    return run_every_stage(tmp_path_factory.mktemp("mpnet_run"), glue_dir, tiny_mpnet_dir)


def test_mpnet_runs_every_stage(mpnet_run):
    for path in ("head_measures", "head_summary", "attribution", "importance", "metrics"):
        assert len(pl.read_parquet(mpnet_run / path, hive_partitioning=False)) > 0, path
    measures = pl.read_parquet(mpnet_run / "head_measures", hive_partitioning=False)
    assert measures["layer"].n_unique() == 2 and measures["head"].n_unique() == 4


def test_mpnet_sentences_and_separators_come_from_its_own_tokens(mpnet_run):
    check_sentences_and_separators(mpnet_run)


def test_mpnet_special_token_measures_are_keyed_by_its_own_tokens(mpnet_run):
    stored = pl.read_parquet(mpnet_run / "examples", hive_partitioning=False).filter(pl.col("in_map_sample"))
    for row in stored.iter_rows(named=True):
        special = {token for token, tag in zip(row["tokens"], row["token_pos"]) if tag in ("[CLS]", "[SEP]")}
        assert special == {"<s>", "</s>"}
    measures = pl.read_parquet(mpnet_run / "head_measures", hive_partitioning=False)
    assert measures["cls_weight"].drop_nulls().len() == len(measures)  # every example starts with <s>
