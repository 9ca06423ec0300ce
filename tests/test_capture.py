import pytest
import torch
from transformers import (BertConfig, BertModel, DistilBertConfig, DistilBertModel,
                          ElectraConfig, ElectraModel, RobertaConfig, RobertaModel)

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
