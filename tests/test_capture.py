import pytest
import torch
from transformers import (BertConfig, BertModel, DistilBertConfig, DistilBertModel,
                          ElectraConfig, ElectraModel, MPNetConfig, MPNetForSequenceClassification,
                          MPNetModel, RobertaConfig, RobertaModel)

from effattn import UnsupportedModelError, capture_attention, effective_attention

SEQ_LEN = 20  # longer than the tiny models' d_head of 8, so null spaces are non-trivial


def tiny(model_class, config_class, **extra):
    torch.manual_seed(0)
    common = dict(vocab_size=120, max_position_embeddings=64)
    if config_class is DistilBertConfig:
        config = config_class(dim=32, n_heads=4, n_layers=2, hidden_dim=48, **common)
    else:
        config = config_class(hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
                              intermediate_size=48, **common, **extra)
    return model_class(config).eval()


ARCHITECTURES = {
    "bert": lambda: tiny(BertModel, BertConfig),
    "roberta": lambda: tiny(RobertaModel, RobertaConfig, pad_token_id=1),
    "distilbert": lambda: tiny(DistilBertModel, DistilBertConfig),
    "electra": lambda: tiny(ElectraModel, ElectraConfig, embedding_size=32),
    # no AttentionInterface: effattn replaces MPNetSelfAttention's forward (mpnet_attention.py)
    "mpnet": lambda: tiny(MPNetModel, MPNetConfig, pad_token_id=1),
}


def batch(lengths=(SEQ_LEN, 13, 6)):
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 120, (len(lengths), SEQ_LEN), generator=generator)
    mask = (torch.arange(SEQ_LEN)[None] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": input_ids * mask + (1 - mask), "attention_mask": mask}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_capture_returns_every_layer_with_documented_shapes(name):
    model = ARCHITECTURES[name]()
    layers = capture_attention(model, batch()).layers
    assert [capture.layer for capture in layers] == [0, 1]
    for capture in layers:
        assert capture.attn.shape == (3, 4, SEQ_LEN, SEQ_LEN)
        assert capture.values.shape == (3, 4, SEQ_LEN, 8)
        assert capture.rank.shape == (3, 4)
        assert capture.n_real.tolist() == [SEQ_LEN, 13, 6]
        assert capture.nullity[0].min() >= SEQ_LEN - 8


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_captured_attention_equals_the_models_own_attention_weights(name):
    model = ARCHITECTURES[name]()
    inputs = batch()
    with torch.no_grad():
        own = model(**inputs, output_attentions=True).attentions
    real = inputs["attention_mask"].float()
    block = real[:, None, :, None] * real[:, None, None, :]
    for capture, expected in zip(capture_attention(model, inputs).layers, own):
        assert torch.allclose(capture.attn, expected * block, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_captured_effective_attention_keeps_the_head_output(name):
    for capture in capture_attention(ARCHITECTURES[name](), batch()).layers:
        output = capture.attn @ capture.values
        error = (capture.attn_eff @ capture.values - output).abs().max() / output.abs().max()
        assert error < 1e-5
        assert capture.attn_null[0].abs().max() > 1e-3  # 20 tokens > d_head 8


def test_captured_effective_attention_equals_a_direct_call_and_layers_do_not_share_memory():
    # capture writes A_eff into each layer's spent score buffer instead of fresh memory
    layers = capture_attention(ARCHITECTURES["bert"](), batch()).layers
    for capture in layers:
        assert torch.equal(capture.attn_eff, effective_attention(
            capture.attn, capture.values, capture.attention_mask))
    pointers = {capture.attn_eff.data_ptr() for capture in layers}
    assert len(pointers) == len(layers)


def test_capture_does_not_change_the_model_output():
    model = ARCHITECTURES["bert"]()
    inputs = batch()
    with torch.no_grad():
        expected = model(**inputs).last_hidden_state
    assert torch.allclose(capture_attention(model, inputs).output.last_hidden_state, expected, atol=1e-5)


def test_on_layer_receives_layers_in_order_and_nothing_is_kept():
    seen = []
    result = capture_attention(ARCHITECTURES["bert"](), batch(),
                               on_layer=lambda capture: seen.append(capture.layer))
    assert seen == [0, 1]
    assert result.layers == ()


def test_deferred_layers_equal_the_on_layer_ones_on_a_padded_batch():
    """Without a callback the layers are decomposed after the forward, A zeroed in place; with one,
    inside it on a copy: the same captures, and the same model output."""
    model, inputs = ARCHITECTURES["bert"](), batch()
    assert not bool(inputs["attention_mask"].all()), "the batch must have padding"
    streamed = []
    with_callback = capture_attention(model, inputs, on_layer=streamed.append)
    deferred = capture_attention(model, inputs)
    assert torch.equal(with_callback.output.last_hidden_state, deferred.output.last_hidden_state)
    for late, early in zip(deferred.layers, streamed, strict=True):
        for field in ("attn", "values", "attn_eff", "rank", "value_norms"):
            assert torch.equal(getattr(late, field), getattr(early, field)), field
        padded = ~late.attention_mask
        assert bool((late.attn[padded[:, None, :, None].expand_as(late.attn)] == 0).all())


def test_sdpa_model_is_switched_for_the_capture_and_restored():
    torch.manual_seed(0)
    model = tiny(BertModel, BertConfig)
    model.set_attn_implementation("sdpa")
    eager = tiny(BertModel, BertConfig)
    eager.set_attn_implementation("eager")
    eager.load_state_dict(model.state_dict())
    inputs = batch()
    with torch.no_grad():
        expected = eager(**inputs, output_attentions=True).attentions[1]
    captured = capture_attention(model, inputs).layers[1].attn
    real = inputs["attention_mask"].float()
    assert torch.allclose(captured, expected * real[:, None, :, None] * real[:, None, None, :], atol=1e-6)
    assert model.config._attn_implementation == "sdpa"


def test_training_mode_is_restored_after_capture():
    model = ARCHITECTURES["bert"]().train()
    capture_attention(model, batch())
    assert model.training


def test_model_without_attention_interface_raises_a_clear_error():
    with pytest.raises(UnsupportedModelError, match="AttentionInterface"):
        capture_attention(torch.nn.Linear(4, 4), {"input": torch.zeros(1, 4)})


# MPNet: its relative position bias and its own attention forward, checked in float64 against
# transformers' code (the recomputation must agree to rounding, not merely to float32 noise).

def tiny_mpnet_classifier():
    return tiny(MPNetForSequenceClassification, MPNetConfig, pad_token_id=1, num_labels=2).double()


def test_mpnet_capture_equals_its_own_attentions_in_float64_and_leaves_the_output_alone():
    model, inputs = tiny_mpnet_classifier(), batch()
    with torch.no_grad():
        own = model(**inputs, output_attentions=True)
    result = capture_attention(model, inputs)
    real = inputs["attention_mask"].double()
    block = real[:, None, :, None] * real[:, None, None, :]
    assert len(result.layers) == 2
    for capture, expected in zip(result.layers, own.attentions):
        assert capture.attn.dtype == torch.float64
        assert torch.allclose(capture.attn, expected * block, rtol=0, atol=1e-12)
        output = capture.attn @ capture.values
        assert torch.allclose(capture.attn_eff @ capture.values, output, rtol=0, atol=1e-10)
        assert capture.attn_null[0].abs().max() > 1e-3
        assert capture.output_weight is not None  # MPNet's W_O (attention.attn.o) was found
    assert torch.allclose(result.output.logits, own.logits, rtol=0, atol=1e-12)
    assert model.config._attn_implementation == "eager"  # routing restored


def test_mpnet_values_are_its_value_projection():
    model, inputs = tiny(MPNetModel, MPNetConfig, pad_token_id=1).double(), batch()
    inputs_seen = []
    hook = model.encoder.layer[0].attention.attn.register_forward_pre_hook(
        lambda module, args: inputs_seen.append(args[0]))
    try:
        values = capture_attention(model, inputs).layers[0].values
    finally:
        hook.remove()
    expected = model.encoder.layer[0].attention.attn.v(inputs_seen[0]).view(3, SEQ_LEN, 4, 8).transpose(1, 2)
    assert torch.allclose(values, expected, rtol=0, atol=1e-12)


def test_routing_one_mpnet_model_leaves_another_untouched():
    routed, bystander, inputs = tiny_mpnet_classifier(), tiny_mpnet_classifier(), batch()
    seen = []

    def on_layer(capture):
        with torch.no_grad():
            seen.append(bystander(**inputs).logits)  # runs inside the routed forward

    capture_attention(routed, inputs, on_layer=on_layer)
    assert len(seen) == 2  # two layers of `routed`, none of `bystander` recorded
    assert bystander.config._attn_implementation == "eager"


def test_mpnet_logits_survive_effective_attention_substitution():
    from effattn import effective_attention_substituted

    model, inputs = tiny_mpnet_classifier(), batch()
    with torch.no_grad():
        expected = model(**inputs).logits
        with effective_attention_substituted(model):
            substituted = model(**inputs).logits
    assert torch.allclose(substituted, expected, rtol=0, atol=1e-10)


def test_mpnet_runs_a_sparse_attention_map_and_back():
    from effattn import set_attention_map

    model, inputs = tiny_mpnet_classifier(), batch()
    with torch.no_grad():
        softmax_logits = model(**inputs).logits
        set_attention_map(model, "sparsemax")
        sparse = model(**inputs, output_attentions=True)
        set_attention_map(model, "softmax")
        back = model(**inputs).logits
    real = inputs["attention_mask"].bool()
    rows = sparse.attentions[0][0, :, :SEQ_LEN]
    assert (rows == 0).any() and torch.allclose(rows.sum(-1), torch.ones_like(rows.sum(-1)))
    assert not torch.allclose(sparse.logits, softmax_logits)
    assert torch.allclose(back, softmax_logits, rtol=0, atol=1e-12)
    assert (sparse.attentions[1][~real[:, None, None, :].expand_as(sparse.attentions[1])] == 0).all()


def test_mpnet_head_attribution_and_layer_influence_run():
    from effattn.attribution import head_attribution, layer_influence

    model, inputs = tiny(MPNetForSequenceClassification, MPNetConfig, pad_token_id=1), batch((8, 5))
    inputs = {name: value[:, :8] for name, value in inputs.items()}
    heads = head_attribution(model, inputs, layers=[1])
    assert heads.shape == (2, 1, 4, 8, 8)
    assert torch.allclose(heads[1, 0, :, :5].sum(-1), torch.ones(4, 5), atol=1e-5)
    assert (heads[1, ..., 5:] == 0).all()
    influence = layer_influence(model, inputs).influence
    assert influence.shape == (2, 2, 8, 8)
    # against plain autograd: ‖∂‖z‖/∂e_j‖ for head 2 at query 3 of layer 1, example 1 alone
    from effattn.routing import routed_attention

    single = {name: value[1:, :5] for name, value in inputs.items()}
    embeds = model.get_input_embeddings()(single["input_ids"]).detach().requires_grad_(True)
    heads_out = []
    with torch.enable_grad(), routed_attention(model, lambda a, v, m, s: heads_out.append(a @ v) or a):
        model(inputs_embeds=embeds, attention_mask=single["attention_mask"])
    gradient, = torch.autograd.grad(heads_out[1][0, 2, 3].norm(), embeds)
    expected = gradient[0].norm(dim=-1)
    assert torch.allclose(heads[1, 0, 2, 3, :5], expected / expected.sum(), atol=1e-5)
