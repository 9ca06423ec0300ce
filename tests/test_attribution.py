import pytest
import torch
from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

from effattn import InputShapeError, UnsupportedModelError, attribution_grad
from effattn.attribution import head_attribution, layer_influence, normalised_entropy
from effattn.attribution_grad import Pullbacks, token_jacobians
from effattn.attribution_graph import Encoder, eval_no_dropout

SEQ_LEN = 7    # a few tokens: the reference below takes one backward per objective
LENGTHS = (SEQ_LEN, 5, 3)
PAD = {"bert": 0, "roberta": 1}


def tiny(name, attn_implementation="eager", layers=2):
    torch.manual_seed(0)
    config_class, model_class = {"bert": (BertConfig, BertModel),
                                 "roberta": (RobertaConfig, RobertaModel)}[name]
    config = config_class(vocab_size=120, hidden_size=32, num_attention_heads=4,
                          num_hidden_layers=layers, intermediate_size=48, max_position_embeddings=64,
                          pad_token_id=PAD[name], attn_implementation=attn_implementation)
    model = model_class(config).eval()
    for module in model.modules():  # trained-looking LayerNorms: at γ = 1, β = 0 a layer
        if isinstance(module, torch.nn.LayerNorm):  # output's norm is constant, its gradient noise
            torch.nn.init.normal_(module.weight, 1.0, 0.5)
            torch.nn.init.normal_(module.bias, 0.0, 0.5)
    return model


def padded_batch(name, lengths=LENGTHS, seq_len=SEQ_LEN):
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 120, (len(lengths), seq_len), generator=generator)
    mask = (torch.arange(seq_len)[None] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": input_ids * mask + PAD[name] * (1 - mask), "attention_mask": mask}


def alone(batch, example):
    """One example of a right-padded batch, cut to its real tokens."""
    n = int(batch["attention_mask"][example].sum())
    return {key: value[example:example + 1, :n] for key, value in batch.items()}


# --- the independent reference: plain autograd, one backward per objective, full forward ---

def reference_rows(embeds, vectors, *, jacobian=False):
    """(objective, key) normalised ‖∂‖v‖/∂e_j‖ (or ‖∂v/∂e_j‖_F) for each vector v of (objective, feature)."""
    rows = []
    for vector in vectors:
        objectives = list(vector) if jacobian else [vector.norm()]
        squares = sum(torch.autograd.grad(objective, embeds, retain_graph=True)[0][0].square().sum(-1)
                      for objective in objectives)
        rows.append(squares.sqrt() / squares.sqrt().sum())
    return torch.stack(rows)


def reference_heads(model, example, *, jacobian=False):
    """(layer, head, query, key) from hooks on each self-attention module of an untruncated forward."""
    outputs = []
    hooks = [layer.attention.self.register_forward_hook(lambda m, a, out: outputs.append(out[0]))
             for layer in model.encoder.layer]
    embeds = model.get_input_embeddings()(example["input_ids"]).detach().requires_grad_(True)
    model(inputs_embeds=embeds)
    for hook in hooks:
        hook.remove()
    heads = model.config.num_attention_heads
    result = []
    for z in outputs:  # (1, query, head · d_head), before W_O
        per_head = z[0].reshape(z.shape[1], heads, -1).transpose(0, 1)  # (head, query, d_head)
        result.append(torch.stack([reference_rows(embeds, per_head[h], jacobian=jacobian)
                                   for h in range(heads)]))
    return torch.stack(result)


def reference_layers(model, example):
    """(layer, query, key) for the hidden state after each layer, from output_hidden_states."""
    embeds = model.get_input_embeddings()(example["input_ids"]).detach().requires_grad_(True)
    hidden = model(inputs_embeds=embeds, output_hidden_states=True).hidden_states[1:]
    return torch.stack([reference_rows(embeds, state[0]) for state in hidden])


# --- head_attribution ---

@pytest.mark.parametrize("name", sorted(PAD))
def test_gradient_norm_equals_one_backward_per_objective(name):
    model, example = tiny(name), alone(padded_batch(name), 0)
    expected = reference_heads(model, example)
    assert (head_attribution(model, example)[0] - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("name", sorted(PAD))
def test_jacobian_equals_one_backward_per_coordinate(name):
    model, example = tiny(name), alone(padded_batch(name), 1)
    expected = reference_heads(model, example, jacobian=True)
    assert (head_attribution(model, example, method="jacobian")[0] - expected).abs().max() <= 1e-5


def test_rows_sum_to_one_over_real_keys_and_padding_is_exactly_zero():
    batch = padded_batch("bert")
    rows = head_attribution(tiny("bert"), batch)
    for example, n in enumerate(LENGTHS):
        assert torch.allclose(rows[example, :, :, :n].sum(-1), torch.ones(()), atol=1e-6)
        assert (rows[example, :, :, n:] == 0).all() and (rows[example, ..., n:] == 0).all()
    assert (rows >= 0).all()


@pytest.mark.parametrize("name", sorted(PAD))
def test_padded_batch_equals_each_example_alone(name):
    model, batch = tiny(name), padded_batch(name)
    rows = head_attribution(model, batch)
    for example, n in enumerate(LENGTHS):
        single = head_attribution(model, alone(batch, example))[0]
        assert (rows[example, :, :, :n, :n] - single).abs().max() <= 1e-6


def test_left_padded_roberta_equals_unpadded():
    # positions come from input_ids as in the model's own forward, not counted over the pads
    model, batch = tiny("roberta"), padded_batch("roberta", lengths=(4,))
    left_padded = {key: value.roll(SEQ_LEN - 4, dims=-1) for key, value in batch.items()}
    rows = head_attribution(model, left_padded)[0, :, :, -4:, -4:]
    assert (rows - head_attribution(model, alone(batch, 0))[0]).abs().max() <= 1e-6


def test_one_layer_stops_the_forward_there_and_equals_the_full_computation():
    model, example = tiny("bert"), alone(padded_batch("bert"), 0)
    calls = []
    hook = model.encoder.layer[1].register_forward_pre_hook(lambda module, args: calls.append(1))
    first = head_attribution(model, example, layers=[0])
    hook.remove()
    assert calls == [] and first.shape[1] == 1
    assert (first[0, 0] - reference_heads(model, example)[0]).abs().max() <= 1e-5


def test_small_chunks_give_the_same_rows():
    model, batch = tiny("bert"), padded_batch("bert")
    assert torch.allclose(head_attribution(model, batch, chunk_size=3),
                          head_attribution(model, batch), atol=1e-6)


# --- explicit per-token Jacobians of the token-wise part of a layer ---

def deep_example():
    """3 layers, 12 tokens: 2 × 4 heads × 12 queries pass layer 0, over twice its width of 32."""
    return tiny("bert", layers=3), padded_batch("bert", lengths=(12,), seq_len=12)


def jacobians_built(model, batch):
    with eval_no_dropout(model):
        pullbacks = Pullbacks(Encoder(model, batch), stop=("heads", 2))
        return sorted(token_jacobians(pullbacks, [96, 48], chunk=8))


def test_token_jacobian_is_used_where_enough_cotangents_pass_and_matches_the_reference():
    model, example = deep_example()
    assert jacobians_built(model, example) == [0]
    assert (head_attribution(model, example)[0] - reference_heads(model, example)).abs().max() <= 1e-5


def test_token_jacobians_and_pullbacks_give_the_same_rows(monkeypatch):
    model, example = deep_example()
    with_jacobians = head_attribution(model, example)
    monkeypatch.setattr(attribution_grad, "_JACOBIAN_BYTES", 0)  # every layer by its pullback
    assert jacobians_built(model, example) == []
    assert (head_attribution(model, example) - with_jacobians).abs().max() <= 1e-6


def test_layer_that_mixes_tokens_outside_attention_gets_no_token_jacobian():
    model, example = deep_example()
    model.encoder.layer[0].output.register_forward_hook(
        lambda module, args, output: output + 0.5 * output.roll(1, dims=1))
    assert jacobians_built(model, example) == []
    assert (head_attribution(model, example)[0] - reference_heads(model, example)).abs().max() <= 1e-5


# --- layer_influence ---

@pytest.mark.parametrize("name", sorted(PAD))
def test_layer_influence_equals_one_backward_per_position(name):
    model, example = tiny(name), alone(padded_batch(name), 0)
    influence = layer_influence(model, example).influence[0]
    assert influence.shape == (2, SEQ_LEN, SEQ_LEN)
    assert (influence - reference_layers(model, example)).abs().max() <= 1e-5


def test_own_share_and_entropy_follow_from_the_influence_rows():
    model, batch = tiny("bert"), padded_batch("bert")
    result = layer_influence(model, batch)
    for example, n in enumerate(LENGTHS):
        rows = reference_layers(model, alone(batch, example))  # (layer, query, key)
        entropy = -(rows * rows.log()).sum(-1) / torch.log(torch.tensor(float(n)))
        assert torch.allclose(result.own_share[example, :, :n], rows.diagonal(dim1=-2, dim2=-1), atol=1e-5)
        assert torch.allclose(result.entropy[example, :, :n], entropy, atol=1e-5)
        assert (result.own_share[example, :, n:] == 0).all() and (result.entropy[example, :, n:] == 0).all()


def test_entropy_is_one_for_uniform_rows_and_zero_for_one_token():
    mask = torch.tensor([[True, True, True, True]])
    assert torch.allclose(normalised_entropy(torch.full((1, 4, 4), 0.25), mask), torch.ones(1, 4))
    assert (normalised_entropy(torch.eye(4)[None], mask) == 0).all()


# --- the model is left as it was found ---

def test_training_flag_and_sdpa_implementation_are_restored():
    model = tiny("bert", attn_implementation="sdpa").train()
    head_attribution(model, padded_batch("bert"), layers=[1])
    layer_influence(model, padded_batch("bert"))
    assert model.training and model.config._attn_implementation == "sdpa"


def test_the_same_rows_under_no_grad_and_no_parameter_gradients():
    model, batch = tiny("bert"), padded_batch("bert")
    with torch.no_grad():
        rows = head_attribution(model, batch)
    assert torch.equal(rows, head_attribution(model, batch))
    layer_influence(model, batch)
    assert all(parameter.grad is None for parameter in model.parameters())


# --- errors ---

def test_batch_without_input_ids_raises():
    with pytest.raises(InputShapeError, match="input_ids"):
        head_attribution(tiny("bert"), {"attention_mask": torch.ones(1, 3, dtype=torch.long)})


def test_model_without_attention_interface_raises():
    with pytest.raises(UnsupportedModelError, match="AttentionInterface"):
        layer_influence(torch.nn.Linear(4, 4), {"input_ids": torch.zeros(1, 4, dtype=torch.long)})


class IdsOnlyBert(BertModel):
    def forward(self, input_ids=None, attention_mask=None):
        return super().forward(input_ids=input_ids, attention_mask=attention_mask)


def test_model_without_inputs_embeds_raises():
    torch.manual_seed(0)
    model = IdsOnlyBert(tiny("bert").config)
    with pytest.raises(UnsupportedModelError, match="inputs_embeds"):
        head_attribution(model, padded_batch("bert"))


def test_layer_beyond_the_model_raises():
    with pytest.raises(InputShapeError, match="below the model's 2 layers"):
        head_attribution(tiny("bert"), padded_batch("bert"), layers=[2])


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="gradient_norm"):
        head_attribution(tiny("bert"), padded_batch("bert"), method="saliency")
