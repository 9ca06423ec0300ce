"""Importance of the inputs for the output (Meister et al. Eq. 4–6): against direct autograd and
direct deletions, padding-invariant; and the importance stage's table on a tiny run."""

import polars as pl
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import effattn
from conftest import tiny_run_argv
from effattn import output_importance
from effattn.errors import InputShapeError
from precompute.schema import IMPORTANCE_TARGETS

SENTENCES = ["a short one", "and a rather longer sentence with more words"]


@pytest.fixture(scope="module")
def model_and_batch(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, attn_implementation="eager")
    model = model.double().eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt", return_special_tokens_mask=True)
    removable = (batch.pop("special_tokens_mask") == 0) & batch["attention_mask"].bool()
    return model, dict(batch), removable


def _probability(model, predicted, **inputs):
    return model(**inputs).logits.softmax(-1)[0, predicted]


def test_gradients_match_a_direct_autograd_pass_per_unpadded_example(model_and_batch):
    model, batch, removable = model_and_batch
    result = output_importance(model, batch, removable)
    for row in range(len(SENTENCES)):
        n = int(batch["attention_mask"][row].sum())
        ids = batch["input_ids"][row : row + 1, :n]
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        output = model(inputs_embeds=embeds, token_type_ids=batch["token_type_ids"][row : row + 1, :n],
                       output_hidden_states=True)
        predicted = int(output.logits.argmax(-1))
        target = output.logits.softmax(-1)[0, predicted]
        grads = torch.autograd.grad(target, [embeds, *output.hidden_states[:-1]])
        expected_input = grads[0][0].norm(dim=-1)
        assert torch.allclose(result.input_gradient[row, :n], expected_input / expected_input.sum(), atol=1e-10)
        for layer, grad in enumerate(grads[1:]):
            norms = grad[0].norm(dim=-1)
            assert torch.allclose(result.intermediate_gradient[row, layer, :n], norms / norms.sum(), atol=1e-10)
        assert (result.input_gradient[row, n:] == 0).all()
        assert float(result.target[row]) == pytest.approx(float(target.detach()), abs=1e-12)


def test_leave_one_out_matches_deleting_each_token_by_hand(model_and_batch):
    model, batch, removable = model_and_batch
    result = output_importance(model, batch, removable)
    row = 1
    n = int(batch["attention_mask"][row].sum())
    ids, types = batch["input_ids"][row, :n], batch["token_type_ids"][row, :n]
    with torch.no_grad():
        full = model(input_ids=ids[None], token_type_ids=types[None]).logits.softmax(-1)[0]
        predicted = int(full.argmax())
        expected = torch.zeros(batch["input_ids"].shape[1], dtype=torch.float64)
        for position in removable[row].nonzero()[:, 0].tolist():
            keep = [index for index in range(n) if index != position]
            without = _probability(model, predicted, input_ids=ids[keep][None], token_type_ids=types[keep][None])
            expected[position] = abs(full[predicted] - without)
    assert torch.allclose(result.leave_one_out[row], expected / expected.sum(), atol=1e-10)
    assert result.leave_one_out[row, 0] == 0 and result.leave_one_out[row, n - 1] == 0  # [CLS], [SEP] kept
    assert torch.allclose(result.leave_one_out.sum(-1), torch.ones(2, dtype=torch.float64))


def test_rows_are_distributions_and_bad_shapes_name_the_fix(model_and_batch):
    model, batch, removable = model_and_batch
    result = output_importance(model, batch, removable)
    assert torch.allclose(result.input_gradient.sum(-1), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(result.intermediate_gradient.sum(-1), torch.ones(2, 2, dtype=torch.float64))
    with pytest.raises(InputShapeError, match="one flag per token"):
        output_importance(model, batch, removable[:, :3])


def test_sparse_models_work_too(model_and_batch):
    model, batch, removable = model_and_batch
    effattn.set_attention_map(model, "sparsemax")
    try:
        result = output_importance(model, batch, removable)
    finally:
        effattn.set_attention_map(model, "softmax")
        model.set_attn_implementation("eager")
    assert torch.isfinite(result.input_gradient).all() and torch.isfinite(result.leave_one_out).all()


@pytest.fixture(scope="module")
def importance_run(tmp_path_factory, glue_dir, tiny_bert_dir):
    from precompute.cli import main

    out = tmp_path_factory.mktemp("importance_run")
    argv = tiny_run_argv("sst2", out, glue_dir, tiny_bert_dir, analysis_examples=5, map_examples=1,
                         efficient_examples=2, attribution_examples=1, importance_examples=4)
    assert main(argv) == 0
    return out, argv


def test_the_stage_compares_cls_rows_on_the_content_tokens(importance_run):
    importance_run, _ = importance_run
    importance = pl.read_parquet(importance_run / "importance" / "**" / "*.parquet")
    examples = pl.read_parquet(importance_run / "examples" / "**" / "*.parquet")
    assert importance["example_id"].n_unique() == 4 and set(importance["target"]) == set(IMPORTANCE_TARGETS)
    n_keys = importance.group_by("example_id").agg(pl.col("n_keys").unique()).join(examples, on="example_id")
    assert (n_keys["n_keys"].list.len() == 1).all()
    assert (n_keys["n_keys"].list.first() == n_keys["seq_len"] - 2).all()  # [CLS] and [SEP] left out
    taus = importance["kendall_tau"].drop_nulls()
    assert len(taus) and taus.min() >= -1 and taus.max() <= 1
    efficient = importance.filter(pl.col("kind") == "efficient")["example_id"].unique().sort().to_list()
    in_sample = examples.filter(pl.col("in_efficient_sample"))["example_id"].sort().to_list()
    assert set(efficient) <= set(in_sample) and efficient


def test_the_summaries_are_the_means_of_the_rows(importance_run):
    """importance_summary is the mean of `importance`; sparsity_summary of softmax maps: no zeros, full support."""
    importance_run, _ = importance_run
    importance = pl.read_parquet(importance_run / "importance" / "**" / "*.parquet")
    dispersion = pl.read_parquet(importance_run / "output_dispersion" / "**" / "*.parquet")
    assert dispersion["entropy"].drop_nulls().is_between(0, 1).all()
    summary = pl.read_parquet(importance_run / "importance_summary" / "**" / "*.parquet")
    mean = (importance.filter(pl.col("kind") == "standard", pl.col("target") == "leave_one_out", pl.col("layer") == 0,
                              pl.col("head") == 0)["kendall_tau"].drop_nulls().mean())
    stored = summary.filter(pl.col("kind") == "standard", pl.col("target") == "leave_one_out", pl.col("layer") == 0,
                            pl.col("head") == 0)["mean"].item()
    assert stored == pytest.approx(mean, abs=1e-6)
    sparsity = pl.read_parquet(importance_run / "sparsity_summary" / "**" / "*.parquet")
    zero = sparsity.filter(pl.col("kind") == "standard", pl.col("measure") == "zero_share")["mean"]
    assert (zero.abs() < 1e-6).all()  # softmax: no exact zeros
    size = sparsity.filter(pl.col("kind") == "standard", pl.col("measure") == "support_size", pl.col("layer") == 0,
                           pl.col("head") == 0)["mean"].item()
    assert size == pytest.approx(pl.read_parquet(importance_run / "examples" / "**" / "*.parquet")["seq_len"].mean(),
                                 rel=1e-5)  # softmax rows support every real key


def test_a_lost_chunk_is_recomputed_to_identical_rows(importance_run):
    """Resume: the stage redoes exactly the chunks whose part is missing, to the same numbers."""
    import shutil

    from precompute.cli import main

    out, argv = importance_run
    parts = sorted((out / "importance" / "task=sst2").glob("*.parquet"))
    before = pl.read_parquet(parts)
    parts[-1].unlink()  # as if killed before the chunk's last table was written
    shutil.rmtree(out / "stages" / "importance")
    assert main(argv) == 0
    after = pl.read_parquet(sorted((out / "importance" / "task=sst2").glob("*.parquet")))
    assert after.equals(before)
