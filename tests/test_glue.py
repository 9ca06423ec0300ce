"""precompute.glue on made-up GLUE TSVs (tests/fixtures/glue)."""


import polars as pl
import pytest

from precompute import DataError
from precompute.glue import FRAME_SCHEMA, carve, load_task, read_tsv
from precompute.schema import TASKS


@pytest.mark.parametrize("task", ["rte", "mrpc", "sst2", "stsb"])
def test_every_task_fixture_parses(glue_dir, task):
    data = load_task(task, glue_dir=glue_dir)
    for frame in (data.train, data.eval):
        assert frame.schema == pl.Schema(FRAME_SCHEMA)
        assert frame["text_a"].null_count() == 0
        assert (frame["text_b"].null_count() == len(frame)) == (not TASKS[task].two_sentences)
    assert data.row_counts == {"train": 32, "train_available": 32, "dev": 24, "eval": 24}


def test_mrpc_bom_header_and_quotes_are_kept_verbatim(glue_dir):
    frame = read_tsv("mrpc", glue_dir / "MRPC" / "dev.tsv")
    assert frame["label"].to_list()[:2] == [0.0, 1.0]
    assert '"blue"' in frame["text_a"][1]


def test_nli_labels_follow_the_hub_ids(glue_dir):
    frame = read_tsv("rte", glue_dir / "RTE" / "train.tsv")
    assert frame["label"].to_list()[:2] == [0.0, 1.0]  # entailment, not_entailment


def test_stsb_scores_come_from_the_last_column(glue_dir):
    assert read_tsv("stsb", glue_dir / "STS-B" / "train.tsv")["label"].to_list()[:2] == [0.0, 0.37]


def test_row_with_wrong_field_count_names_file_and_line(tmp_path, glue_dir):
    path = tmp_path / "dev.tsv"
    text = (glue_dir / "SST-2" / "dev.tsv").read_text()
    path.write_text(text + "broken\trow\t1\n")
    with pytest.raises(DataError, match=r"dev\.tsv:26: expected 2 tab-separated fields, found 3"):
        read_tsv("sst2", path)


def test_missing_file_names_glue_dir(tmp_path):
    with pytest.raises(DataError, match="RTE/dev.tsv is missing: pass --glue-dir"):
        load_task("rte", glue_dir=tmp_path)


def test_task_without_train_split_asks_for_carve_out(glue_dir):
    with pytest.raises(DataError, match="--carve-train-from-dev"):
        load_task("qnli", glue_dir=glue_dir)


def test_carve_out_is_disjoint_and_covers_dev(glue_dir):
    data = load_task("qnli", glue_dir=glue_dir, carve_train_from_dev=0.6, seed=3)
    train_ids, eval_ids = set(data.train["example_id"]), set(data.eval["example_id"])
    assert not train_ids & eval_ids
    assert train_ids | eval_ids == set(range(40))
    assert data.carve_out == {"from": "dev", "fraction": 0.6, "train_rows": 24, "eval_rows": 16, "seed": 3}


def test_carve_out_is_reproducible_and_eval_cap_never_adds_train_rows(glue_dir):
    first = load_task("qnli", glue_dir=glue_dir, carve_train_from_dev=0.5, max_eval_examples=5)
    again = load_task("qnli", glue_dir=glue_dir, carve_train_from_dev=0.5, max_eval_examples=5)
    assert first.train.equals(again.train) and first.eval.equals(again.eval)
    assert not set(first.eval["example_id"]) & set(first.train["example_id"])


def test_carve_ignored_when_train_exists(glue_dir):
    assert load_task("rte", glue_dir=glue_dir, carve_train_from_dev=0.6).carve_out is None


def test_train_cap_is_a_seeded_subset_in_source_order(glue_dir):
    data = load_task("rte", glue_dir=glue_dir, max_train_examples=10, seed=1)
    ids = data.train["example_id"].to_list()
    assert len(ids) == 10 and ids == sorted(ids)
    assert data.row_counts["train_available"] == 32


def test_carve_split_sizes():
    dev = pl.DataFrame({"example_id": range(10), "text_a": ["x"] * 10, "text_b": [None] * 10, "label": [0.0] * 10},
                       schema=FRAME_SCHEMA)
    train, evaluation = carve(dev, 0.3, seed=0)
    assert (len(train), len(evaluation)) == (3, 7)


def test_hub_offline_fails_naming_glue_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="pass --glue-dir DIR"):
        load_task("rte", glue_dir=None)
