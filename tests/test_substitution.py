import torch
from transformers import BertConfig, BertForSequenceClassification

from effattn import effective_attention_substituted


def tiny_classifier():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=120, hidden_size=32, num_attention_heads=4, num_hidden_layers=3,
                        intermediate_size=48, num_labels=3)
    model = BertForSequenceClassification(config).eval()
    model.set_attn_implementation("eager")
    return model


def padded_inputs(lengths=(30, 24, 9), n=30):
    generator = torch.Generator().manual_seed(2)
    mask = (torch.arange(n)[None] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": torch.randint(5, 120, (len(lengths), n), generator=generator) * mask,
            "attention_mask": mask}


def test_logits_unchanged_with_effective_attention():
    model, inputs = tiny_classifier(), padded_inputs()
    with torch.no_grad():
        expected = model(**inputs).logits
        with effective_attention_substituted(model):
            substituted = model(**inputs).logits
    assert torch.allclose(substituted, expected, atol=1e-5)


def test_substitution_is_undone_on_exit():
    model = tiny_classifier()
    with effective_attention_substituted(model):
        pass
    assert model.config._attn_implementation == "eager"


def test_original_code_method_changes_logits_of_padded_examples():
    model, inputs = tiny_classifier(), padded_inputs()
    with torch.no_grad():
        expected = model(**inputs).logits
        with effective_attention_substituted(model, method="original_code"):
            original = model(**inputs).logits
        with effective_attention_substituted(model):
            exact = model(**inputs).logits
    exact_change = (exact[1:] - expected[1:]).abs().max()
    assert (original[1:] - expected[1:]).abs().max() > 100 * max(exact_change, 1e-8)
