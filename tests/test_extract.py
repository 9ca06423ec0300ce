"""precompute.extract end to end on a tiny random BERT and a made-up sentence-pair frame."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertForSequenceClassification

from precompute import extract
from precompute.config import RunConfig
from precompute.schema import KINDS, PATTERNS
from precompute.store import RunFolder, Shard

N_LAYERS, N_HEADS = 2, 4
N_EVAL, N_ANALYSED, N_MAPS, CHUNK = 14, 11, 3, 4  # 11 analysed examples -> chunks of 4, 4, 3
N_EFFICIENT = 5  # analysed examples that also get the sampled kinds (efficient)
N_FULL_KINDS = len(KINDS) - len(extract.SAMPLED_KINDS)
TABLES = ("examples", "head_measures", "maps")


@pytest.fixture(scope="module")
def checkpoint(tiny_bert_dir) -> Path:
    """A randomly initialised 2-layer, 4-head classifier saved with the MiniLM tokenizer."""
    return tiny_bert_dir


@pytest.fixture(scope="module")
def base_model(checkpoint):
    """The 'pretrained' encoder: other random weights, so the similarity is not trivially 1."""
    torch.manual_seed(1)
    config = AutoConfig.from_pretrained(checkpoint)
    return AutoModel.from_config(config, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def eval_frame() -> pl.DataFrame:
    words = ["The cat sat on the mat.", "She quickly wrote two long letters, then slept!",
             "Prices rose sharply in marvellous Paris"]
    return pl.DataFrame({
        "example_id": range(100, 100 + N_EVAL),
        "text_a": [" ".join(words[: 1 + i % 3]) for i in range(N_EVAL)],
        "text_b": [f"It is number {i}." for i in range(N_EVAL)],
        "label": [float(i % 2) for i in range(N_EVAL)],
    })


def _config(out: Path, **options) -> RunConfig:
    return RunConfig(tasks=("rte",), out=out, analysis_examples=N_ANALYSED, map_examples=N_MAPS,
                     efficient_examples=N_EFFICIENT,
                     eval_batch_size=3, device="cpu", **options)


def _extract(folder: Path, checkpoint, base_model, eval_frame, **hooks) -> RunFolder:
    run = RunFolder(folder)
    extract.run_extract(run, "rte", checkpoint, base_model, eval_frame, _config(folder), Shard(),
                        chunk_examples=CHUNK, **hooks)
    return run


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory, checkpoint, base_model, eval_frame) -> RunFolder:
    return _extract(tmp_path_factory.mktemp("complete"), checkpoint, base_model, eval_frame)


def test_one_row_per_example_layer_head_kind(complete_run):
    measures = complete_run.scan("head_measures").collect()
    assert len(measures) == (N_ANALYSED * N_FULL_KINDS + N_EFFICIENT) * N_LAYERS * N_HEADS
    assert set(measures["kind"]) == set(KINDS)
    assert measures.select("example_id", "layer", "head", "kind").n_unique() == len(measures)
    assert measures["pattern"].is_in(PATTERNS).all() and measures["pattern_score"].is_between(0, 1).all()
    assert complete_run.scan("examples").collect()["example_id"].n_unique() == N_ANALYSED


def test_maps_and_text_only_for_the_map_sample(complete_run):
    examples = complete_run.scan("examples").collect()
    sample = examples.filter("in_map_sample")
    assert len(sample) == N_MAPS and sample["text_a"].null_count() == 0
    assert examples.filter(~pl.col("in_map_sample"))["text_a"].null_count() == N_ANALYSED - N_MAPS
    maps = complete_run.scan("maps").collect()
    assert len(maps) == N_MAPS * N_LAYERS * N_HEADS * len(KINDS)
    assert (maps["weights"].list.len() == maps["seq_len"] ** 2).all()


def test_sampled_kinds_only_for_the_efficient_sample(complete_run):
    examples = complete_run.scan("examples").collect()
    sample = set(examples.filter("in_efficient_sample")["example_id"])
    assert len(sample) == N_EFFICIENT and set(examples.filter("in_map_sample")["example_id"]) <= sample
    efficient = complete_run.scan("head_measures").filter(pl.col("kind") == "efficient").collect()
    assert set(efficient["example_id"]) == sample
    assert (efficient["support_share"] <= (efficient["rank"] + 1) / efficient["seq_len"] + 1e-6).all()


def test_norm_rows_are_distributions_and_standard_support_is_full(complete_run):
    measures = complete_run.scan("head_measures").collect()
    assert (measures.filter(pl.col("kind") == "standard")["support_share"] == 1).all()
    maps = complete_run.scan("maps").filter(pl.col("kind") == "norm").collect()
    for n, weights in maps.select("seq_len", "weights").iter_rows():
        rows = np.asarray(weights).reshape(n, n)
        assert np.allclose(rows.sum(-1), 1, atol=n * 1e-3) and (rows >= 0).all()


def test_shards_split_the_sample_without_overlap(eval_frame):
    config = _config(Path("unused"))
    whole = extract.analysis_sample(eval_frame, config, Shard(0, 1))["example_id"].to_list()
    parts = [extract.analysis_sample(eval_frame, config, Shard(i, 3))["example_id"].to_list() for i in range(3)]
    assert sum(parts, []) == whole and len(whole) == N_ANALYSED


def _reference_attentions(model, tokenizer, text_a, text_b) -> list[np.ndarray]:
    """Attention maps of one unpadded example straight from transformers, per layer."""
    inputs = tokenizer(text_a, text_b, return_tensors="pt")
    with torch.no_grad():
        return [layer[0].double().numpy() for layer in model(**inputs, output_attentions=True).attentions]


def test_measures_equal_an_independent_recomputation(complete_run, checkpoint, base_model):
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    finetuned = BertForSequenceClassification.from_pretrained(checkpoint, attn_implementation="eager").eval()
    examples = complete_run.scan("examples").filter("in_map_sample").collect()
    measures = complete_run.scan("head_measures").filter(pl.col("kind") == "standard").collect()
    for example in examples.iter_rows(named=True):
        tuned = _reference_attentions(finetuned, tokenizer, example["text_a"], example["text_b"])
        pretrained = _reference_attentions(base_model, tokenizer, example["text_a"], example["text_b"])
        nouns = [key for key, tag in enumerate(example["token_pos"]) if tag == "NOUN"]
        assert nouns, "the fixture sentences contain nouns"
        rows = measures.filter(pl.col("example_id") == example["example_id"])
        for row in rows.iter_rows(named=True):
            attn = tuned[row["layer"]][row["head"]]
            other = pretrained[row["layer"]][row["head"]].ravel()
            cosine = attn.ravel() @ other / (np.linalg.norm(attn) * np.linalg.norm(other))
            assert row["cls_weight"] == pytest.approx(attn[:, 0].mean(), rel=1e-5)
            assert row["cls_row_noun"] == pytest.approx(attn[0, nouns].max(), rel=1e-5)
            assert row["pretrained_cosine"] == pytest.approx(cosine, rel=1e-5)


def _tables(run: RunFolder) -> dict[str, pl.DataFrame]:
    return {table: run.scan(table).collect() for table in TABLES}


def test_resume_after_a_failure_mid_extraction_gives_identical_caches(
        tmp_path, complete_run, checkpoint, base_model, eval_frame):
    with pytest.raises(extract.InjectedFailure):
        _extract(tmp_path, checkpoint, base_model, eval_frame, fail_after_chunk=1)
    assert RunFolder(tmp_path).existing_chunks("examples", "rte", Shard()) == {0, 1}
    resumed = _extract(tmp_path, checkpoint, base_model, eval_frame)
    for table, frame in _tables(complete_run).items():
        assert _tables(resumed)[table].equals(frame), table
    assert [path.name for path in resumed.part_files("head_measures")] == \
        [path.name for path in complete_run.part_files("head_measures")]


def test_rerun_after_completion_writes_nothing(complete_run, checkpoint, base_model, eval_frame):
    written = extract.run_extract(complete_run, "rte", checkpoint, base_model, eval_frame,
                                  _config(complete_run.root), Shard(), chunk_examples=CHUNK)
    assert written == 0
