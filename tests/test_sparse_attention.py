"""Sparse attention maps: sparsemax / sparsegen-lin against an independent simplex projection and
entmax, inside a real model through the registered attention implementation, and a tiny BERT
fine-tuned and evaluated end to end with sparse attention."""

import json

import numpy as np
import polars as pl
import pytest
import torch

import effattn
from conftest import tiny_run_argv
from effattn import parse_attention_map, set_attention_map, sparsegen_lin, sparsemax
from effattn.errors import EffattnError
from precompute.cli import main


def simplex_projection_by_bisection(z: np.ndarray) -> np.ndarray:
    """argmin ‖p − z‖² on the simplex, by bisection on τ in Σ max(z − τ, 0) = 1 (no sorting)."""
    low, high = z.max() - 1, z.max()
    for _ in range(200):
        tau = (low + high) / 2
        low, high = (tau, high) if np.maximum(z - tau, 0).sum() > 1 else (low, tau)
    return np.maximum(z - (low + high) / 2, 0)


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
def test_sparsemax_is_the_projection_onto_the_simplex(scale):
    torch.manual_seed(0)
    scores = torch.randn(50, 9, dtype=torch.float64) * scale
    projected = sparsemax(scores)
    expected = np.stack([simplex_projection_by_bisection(row) for row in scores.numpy()])
    np.testing.assert_allclose(projected.numpy(), expected, atol=1e-12)
    assert torch.allclose(projected.sum(-1), torch.ones(50, dtype=torch.float64))
    assert (projected >= 0).all()


def test_sparsemax_matches_entmax_values_and_gradients():
    entmax = pytest.importorskip("entmax")
    torch.manual_seed(1)
    scores = torch.randn(4, 3, 11, dtype=torch.float64, requires_grad=True)
    cotangent = torch.randn(4, 3, 11, dtype=torch.float64)
    ours = torch.autograd.grad((sparsemax(scores) * cotangent).sum(), scores)[0]
    theirs = torch.autograd.grad((entmax.sparsemax(scores, dim=-1) * cotangent).sum(), scores)[0]
    assert torch.allclose(sparsemax(scores), entmax.sparsemax(scores, dim=-1), atol=1e-12)
    assert torch.allclose(ours, theirs, atol=1e-12)


@pytest.mark.parametrize("mask_value", [float("-inf"), torch.finfo(torch.float32).min])
def test_masked_keys_get_exact_zeros_and_finite_gradients(mask_value):
    torch.manual_seed(2)
    scores = torch.randn(3, 8)
    masked = scores.clone()
    masked[:, 5:] = mask_value
    masked.requires_grad_(True)
    probabilities = sparsemax(masked)
    assert (probabilities[:, 5:] == 0).all()
    assert torch.allclose(probabilities[:, :5], sparsemax(scores[:, :5]), atol=1e-6)
    (gradient,) = torch.autograd.grad(probabilities[:, 0].sum(), masked)
    assert torch.isfinite(gradient).all() and (gradient[:, 5:] == 0).all()


def test_sparsegen_lin_gets_sparser_as_lambda_grows():
    torch.manual_seed(3)
    scores = torch.randn(200, 16)
    zeros = [(sparsegen_lin(scores, lam) == 0).float().mean().item() for lam in (-3.0, -1.0, 0.0, 0.5, 0.9)]
    assert zeros == sorted(zeros) and zeros[0] < zeros[-1]
    assert torch.equal(sparsegen_lin(scores, 0.0), sparsemax(scores))
    assert torch.allclose(sparsegen_lin(scores, 0.5), sparsemax(2 * scores))


def test_attention_map_names_are_canonical_and_bad_ones_name_the_choices():
    assert parse_attention_map(" SparseMax ") == "sparsemax"
    assert parse_attention_map("sparsegen:0") == "sparsemax"
    assert parse_attention_map("sparsegen:0.50") == "sparsegen:0.5"
    assert parse_attention_map("sparsegen:-2") == "sparsegen:-2"
    for bad in ("sparsegen:1", "sparsegen:x", "entmax", "sparsegen:nan"):
        with pytest.raises(EffattnError, match="sparsegen:<λ>"):
            parse_attention_map(bad)


def _tiny_model(tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, attn_implementation="eager").eval()
    batch = tokenizer(["a short one", "and a longer sentence with more words in it"], padding=True,
                      return_tensors="pt")
    return model, batch


def test_a_sparse_model_returns_sparse_rows_and_padding_changes_nothing(tiny_bert_dir):
    model, batch = _tiny_model(tiny_bert_dir)
    with torch.no_grad():
        dense = model(**batch, output_attentions=True)
        set_attention_map(model, "sparsegen:0.99")  # random weights: near-uniform scores
        sparse = model(**batch, output_attentions=True)
        alone = model(**{name: tensor[:1, :5] for name, tensor in batch.items()}, output_attentions=True)
    assert effattn.attention_map_of(model) == "sparsegen:0.99"
    n_real = int(batch["attention_mask"][0].sum())
    for layer, dense_layer in zip(sparse.attentions, dense.attentions):
        real = layer[1]  # the unpadded example
        assert torch.allclose(real.sum(-1), torch.ones_like(real.sum(-1)), atol=1e-5)
        assert (real == 0).any() and not (dense_layer[1] == 0).any()
        assert (layer[0, :, :, n_real:] == 0).all()  # padded keys
    assert torch.allclose(sparse.logits[0], alone.logits[0], atol=1e-5)
    assert not torch.allclose(sparse.logits, dense.logits, atol=1e-4)


def test_capture_and_attribution_see_the_sparse_map(tiny_bert_dir):
    model, batch = _tiny_model(tiny_bert_dir)
    set_attention_map(model, "sparsemax")
    captured = effattn.capture_attention(model, batch)
    with torch.no_grad():
        expected = model(**batch, output_attentions=True).attentions
    for layer, attn in zip(captured.layers, expected):
        assert torch.equal(layer.attn[1], attn[1])  # the unpadded example (capture zeroes padded rows)
        assert (layer.attn == 0).any()
        # A_eff V = A V holds for a sparse A too
        assert torch.allclose(layer.attn_eff @ layer.values, layer.attn @ layer.values, atol=1e-5)
    attribution = effattn.head_attribution(model, batch)
    assert torch.isfinite(attribution).all()


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory, glue_dir, tiny_bert_dir):
    out = tmp_path_factory.mktemp("sparse_run")
    argv = tiny_run_argv("rte", out, glue_dir, tiny_bert_dir, analysis_examples=4, map_examples=2,
                         attribution_examples=2, attention="SPARSEMAX")
    assert main(argv) == 0
    return out, argv


def test_a_tiny_bert_fine_tunes_and_evaluates_with_sparsemax(sparse_run):
    out, _ = sparse_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["attention"] == "sparsemax" and manifest["config"]["attention"] == "sparsemax"
    checkpoint = json.loads((out / "checkpoints" / "rte" / "config.json").read_text())
    assert checkpoint["attention_map"] == "sparsemax"  # a reloaded checkpoint runs the map it was trained with
    support = pl.read_parquet(out / "head_measures" / "**" / "*.parquet").filter(pl.col("kind") == "standard")
    assert support["support_share"].min() < 1  # exact zeros in the captured maps (softmax: 1 everywhere)
    assert manifest["metrics"]["rte"]["standard"]["accuracy"] == manifest["metrics"]["rte"]["effective"]["accuracy"]


def test_a_run_folder_keeps_one_attention_map(sparse_run, capsys):
    out, argv = sparse_run
    argv = [*argv[:-1], "softmax"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "made with --attention sparsemax" in err


def test_an_unknown_attention_map_is_one_line(capsys, tmp_path):
    assert main(["--tasks", "rte", "--attention", "entmax", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "sparsegen:<λ>" in err


def test_torch_func_transforms_sparsemax_like_autograd():
    """The attribution machinery vmaps vjps through the attention map: same as one autograd call per row."""
    torch.manual_seed(4)
    scores = torch.randn(6, 10, dtype=torch.float64)
    cotangents = torch.randn(5, 6, 10, dtype=torch.float64)
    _, pullback = torch.func.vjp(sparsemax, scores)
    batched = torch.func.vmap(pullback)(cotangents)[0]
    for cotangent, got in zip(cotangents, batched):
        leaf = scores.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad((sparsemax(leaf) * cotangent).sum(), leaf)
        assert torch.allclose(got, expected, atol=1e-12)
    # and the gradient is the exact Jacobian of the projection, by finite differences
    assert torch.autograd.gradcheck(sparsemax, (scores.clone().requires_grad_(True),))


def test_the_sparse_runs_caches_pass_the_schema(sparse_run):
    from precompute.schema import TABLES
    from precompute.store import check_schema_version

    out, _ = sparse_run
    tables = {path.parent.parent.name for path in out.glob("*/task=*/*.parquet")}
    assert {"head_measures", "maps", "importance", "sparsity_summary", "layer_influence"} <= tables
    for path in out.glob("*/task=*/*.parquet"):
        check_schema_version(path)
        table = path.parent.parent.name
        assert dict(pl.read_parquet_schema(path)) == TABLES[table], path
