"""precompute.attribute and precompute.agreement: the measures against scipy/numpy, the stage
end to end on a tiny random BERT, and its resumability."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import kendalltau
from transformers import AutoTokenizer, BertForSequenceClassification

from effattn.attribution import head_attribution
from precompute import ConfigError, agreement, attribute, extract
from precompute.config import RunConfig
from precompute.schema import KINDS
from precompute.store import RunFolder, Shard
from test_extract import eval_frame  # noqa: F401 (the same made-up sentence pairs)

N_LAYERS, N_HEADS = 2, 4
N_ANALYSED, N_MAPS, N_EFFICIENT = 11, 3, 5
N_ATTRIBUTED, CHUNK = 6, 4  # the first 6 analysed examples -> chunks of 4 and 2
TABLES = ("attribution", "layer_influence", "attribution_maps")


def _config(out: Path, **options) -> RunConfig:
    settings = dict(tasks=("rte",), out=out, analysis_examples=N_ANALYSED, map_examples=N_MAPS,
                    efficient_examples=N_EFFICIENT, attribution_examples=N_ATTRIBUTED, eval_batch_size=3,
                    device="cpu", threads=1)  # more threads only slow a tiny model down
    return RunConfig(**{**settings, **options})


def _attribute(folder: Path, checkpoint, eval_frame, **hooks) -> RunFolder:
    run = RunFolder(folder)
    run.mark_stage_done("extract", "rte")  # attribute reads none of extract's tables, only its marker
    attribute.run_attribute(run, "rte", checkpoint, eval_frame, _config(folder), Shard(), chunk_examples=CHUNK, **hooks)
    return run


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory, tiny_bert_dir, eval_frame) -> RunFolder:
    return _attribute(tmp_path_factory.mktemp("attribute"), tiny_bert_dir, eval_frame)


def _tables(run: RunFolder) -> dict[str, pl.DataFrame]:
    return {table: run.scan(table).collect() for table in TABLES}


# --- the measures ----------------------------------------------------------------------------

def test_jsd_of_a_row_with_itself_is_zero_and_lies_in_the_unit_interval():
    rows = torch.rand(50, 9, dtype=torch.float64)
    p, _ = agreement.as_distributions(rows)
    q, _ = agreement.as_distributions(torch.rand(50, 9, dtype=torch.float64) ** 4)
    assert agreement.jensen_shannon(p, p).abs().max() < 1e-12
    jsd = agreement.jensen_shannon(p, q)
    assert ((jsd >= 0) & (jsd <= 1)).all()
    reference = [jensenshannon(a, b, base=2) ** 2 for a, b in zip(p.numpy(), q.numpy())]
    np.testing.assert_allclose(jsd.numpy(), reference, atol=1e-12)
    disjoint = agreement.jensen_shannon(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    assert disjoint.item() == pytest.approx(1.0)


def test_signed_rows_are_read_as_absolute_distributions():
    rows = torch.randn(4, 3, 6, 6)
    measures = agreement.agreement_measures(-rows, rows.abs())
    assert measures["jsd"].abs().max() < 1e-12
    assert (measures["kendall_tau"] == 1).all() and (measures["top1_agreement"] == 1).all()


def test_kendall_tau_b_equals_scipy_on_rows_with_ties():
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (3, 40, 11), generator=generator).float()  # few values: many ties
    y = torch.randint(0, 5, (40, 11), generator=generator).float()
    x[0, 0] = 2.0  # a constant row: τ-b is undefined, NaN as scipy says
    tau = agreement.kendall_tau_b(x, y)  # y shared by x's leading index
    assert tau.shape == (3, 40)
    reference = [[kendalltau(a, b).statistic for a, b in zip(rows, y.numpy())] for rows in x.numpy()]
    np.testing.assert_allclose(tau.numpy(), reference, atol=1e-12)
    assert tau[0, 0].isnan()


def test_kendall_tau_b_is_the_same_in_small_row_chunks(monkeypatch):
    x, y = torch.rand(2, 30, 8), torch.rand(30, 8)
    whole = agreement.kendall_tau_b(x, y)
    monkeypatch.setattr(agreement, "KENDALL_CHUNK_ELEMENTS", 100)
    assert torch.equal(agreement.kendall_tau_b(x, y), whole)


def test_top1_agreement_equals_numpy():
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(-3, 4, (5, 30, 7), generator=generator).float()  # signed, with tied maxima
    y = torch.randint(0, 4, (30, 7), generator=generator).float()
    expected = (np.abs(x.numpy()).argmax(-1) == y.numpy().argmax(-1)).astype(float)
    np.testing.assert_array_equal(agreement.top1_agreement(x, y).numpy(), expected)


def test_rows_without_mass_are_left_out_of_the_means():
    attn = torch.rand(2, 5, 5)
    attn[0, 1] = 0  # head 0, query 1 has no weight at all
    measures = agreement.agreement_measures(attn, torch.rand(2, 5, 5))
    rows = [agreement.agreement_measures(attn[0, [query]], torch.rand(1, 5))["jsd"] for query in (0, 2)]
    assert all(not value.isnan().any() for value in rows) and not measures["jsd"].isnan().any()
    alone = agreement.agreement_measures(torch.zeros(1, 1, 4), torch.rand(1, 1, 4))
    assert all(value.isnan().all() for value in alone.values())


# --- the stage -------------------------------------------------------------------------------

def test_sample_is_the_first_analysed_examples_plus_the_map_sample(eval_frame):
    analysed = extract.analysis_sample(eval_frame, _config(Path("unused")), Shard())["example_id"].to_list()
    sample = attribute.attribution_sample(eval_frame, _config(Path("unused")), Shard())
    assert sample["example_id"].to_list() == analysed[:N_ATTRIBUTED]
    only_maps = attribute.attribution_sample(eval_frame, _config(Path("unused"), attribution_examples=1), Shard())
    assert only_maps["example_id"].to_list() == analysed[:N_MAPS]


def test_rows_for_every_layer_head_and_kind_of_the_sample(complete_run):
    rows = complete_run.scan("attribution").collect()
    in_efficient = min(N_ATTRIBUTED, N_EFFICIENT)  # efficient maps exist only for these
    assert len(rows) == (N_ATTRIBUTED * (len(KINDS) - 1) + in_efficient) * N_LAYERS * N_HEADS
    assert rows.select("example_id", "layer", "head", "kind").n_unique() == len(rows)
    assert set(rows["kind"]) == set(KINDS) and rows["example_id"].n_unique() == N_ATTRIBUTED
    counts = rows.group_by("example_id", "layer", "kind").len()["len"]
    assert (counts == N_HEADS).all()
    assert rows["jsd"].is_between(0, 1).all() and rows["kendall_tau"].is_between(-1, 1).all()
    assert rows["top1_agreement"].is_between(0, 1).all()
    manifest = complete_run.read_manifest()
    assert manifest["row_counts"]["rte"]["attribution_examples"] == N_ATTRIBUTED


def test_layer_influence_has_one_row_per_example_and_layer(complete_run):
    influence = complete_run.scan("layer_influence").collect()
    assert len(influence) == N_ATTRIBUTED * N_LAYERS
    assert influence.select("example_id", "layer").n_unique() == len(influence)
    assert influence["own_share"].is_between(0, 1).all() and influence["entropy"].is_between(0, 1).all()
    assert (influence["seq_len"] > 5).all()


def test_attribution_maps_only_for_the_map_sample(complete_run, eval_frame):
    maps = complete_run.scan("attribution_maps").collect()
    analysed = extract.analysis_sample(eval_frame, _config(Path("unused")), Shard())["example_id"].to_list()
    assert set(maps["example_id"]) == set(analysed[:N_MAPS]) and len(maps) == N_MAPS * N_LAYERS * N_HEADS
    for n, weights in maps.select("seq_len", "weights").iter_rows():
        rows = np.asarray(weights).reshape(n, n)
        assert np.allclose(rows.sum(-1), 1, atol=n * 1e-3) and (rows >= 0).all()


def test_measures_equal_an_independent_recomputation(complete_run, tiny_bert_dir, eval_frame):
    """Standard kind of the map sample: attention straight from transformers and the attribution
    of the unpadded example, compared with scipy's JSD and τ-b and numpy's argmax."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir, attn_implementation="eager").eval()
    rows = complete_run.scan("attribution").filter(pl.col("kind") == "standard").collect()
    sample = attribute.attribution_sample(eval_frame, _config(Path("unused")), Shard()).filter("in_map_sample")
    for example in sample.iter_rows(named=True):
        inputs = tokenizer(example["text_a"], example["text_b"], return_tensors="pt")
        with torch.no_grad():
            attentions = model(**inputs, output_attentions=True).attentions
        attribution = head_attribution(model, dict(inputs))[0].double().numpy()
        for row in rows.filter(pl.col("example_id") == example["example_id"]).iter_rows(named=True):
            attn = attentions[row["layer"]][0, row["head"]].double().numpy()
            target = attribution[row["layer"], row["head"]]
            assert row["jsd"] == pytest.approx(np.mean([jensenshannon(a, b, base=2) ** 2 for a, b in zip(attn, target)]),
                                               abs=1e-5)
            assert row["kendall_tau"] == pytest.approx(np.mean([kendalltau(a, b).statistic for a, b in zip(attn, target)]),
                                                       abs=1e-5)
            assert row["top1_agreement"] == pytest.approx((attn.argmax(-1) == target.argmax(-1)).mean())


def test_resume_after_a_failure_gives_identical_tables(tmp_path, complete_run, tiny_bert_dir, eval_frame):
    with pytest.raises(extract.InjectedFailure):
        _attribute(tmp_path, tiny_bert_dir, eval_frame, fail_after_chunk=0)
    assert RunFolder(tmp_path).existing_chunks("attribution", "rte", Shard()) == {0}
    resumed = _attribute(tmp_path, tiny_bert_dir, eval_frame)
    for table, frame in _tables(complete_run).items():
        assert _tables(resumed)[table].equals(frame), table
    assert [path.name for path in resumed.part_files("attribution")] == \
        [path.name for path in complete_run.part_files("attribution")]


def test_rerun_after_completion_writes_nothing(complete_run, tiny_bert_dir, eval_frame):
    written = attribute.run_attribute(complete_run, "rte", tiny_bert_dir, eval_frame, _config(complete_run.root),
                                      Shard(), chunk_examples=CHUNK)
    assert written == 0


def test_attribute_before_extract_names_the_stage_to_run(tmp_path, tiny_bert_dir, eval_frame):
    with pytest.raises(ConfigError, match="has not been extracted .*--stages extract"):
        attribute.run_attribute(RunFolder(tmp_path), "rte", tiny_bert_dir, eval_frame, _config(tmp_path))
