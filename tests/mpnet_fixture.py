"""A tiny random MPNet classifier on disk, for end-to-end runs of an encoder whose attention
effattn routes by replacing its attention forward (MPNet calls no AttentionInterface).

Import the fixture into a test module: `from mpnet_fixture import tiny_mpnet_dir`.
"""

from pathlib import Path

import pytest

FIXTURE_GLUE = Path(__file__).parent / "fixtures" / "glue"
# MPNet's own special tokens, in all-mpnet-base-v2's order: its embeddings hard-code padding id 1
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def tiny_mpnet_config(vocab_size: int, **extra):
    """2 layers × 4 heads, d_head 8, MPNet's relative position bias and ids (pad 1, <s> 0, </s> 2)."""
    from transformers import MPNetConfig

    settings = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=37, max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
                    eos_token_id=2, num_labels=2)
    return MPNetConfig(**{**settings, **extra})


def tiny_mpnet_tokenizer():
    """An MPNet tokenizer (lower-cased WordPiece, `<s> A </s></s> B </s>` pairs) over a small
    vocabulary trained on the fixture GLUE files."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import MPNetTokenizerFast

    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train([str(path) for path in sorted(FIXTURE_GLUE.glob("*/*.tsv"))], vocab_size=400,
                    min_frequency=1, special_tokens=SPECIAL_TOKENS, show_progress=False)
    vocab = wordpiece.get_vocab()
    assert [vocab[token] for token in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    return MPNetTokenizerFast(vocab=vocab, unk_token="<unk>")


@pytest.fixture(scope="session")
def tiny_mpnet_dir(tmp_path_factory) -> Path:
    """A tiny random MPNetForSequenceClassification (2 labels) with its tokenizer, saved with
    save_pretrained: loads like a real checkpoint, runs in milliseconds."""
    import torch
    from transformers import MPNetForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny_mpnet")
    tokenizer = tiny_mpnet_tokenizer()
    torch.manual_seed(0)
    MPNetForSequenceClassification(tiny_mpnet_config(len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
