"""precompute.measures against plain-numpy recomputations on each example's real block."""

import numpy as np
import pytest
import torch

import effattn
from precompute import measures

LENGTHS = (7, 5, 9)  # real tokens per example; the batch pads to 9
N_HEAD = 2
N_KEY = max(LENGTHS)


def _softmax(scores: np.ndarray) -> np.ndarray:
    exp = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


@pytest.fixture
def batch():
    """Padded maps whose padded entries hold garbage, so any leak from padding shows."""
    rng = np.random.default_rng(0)
    blocks = [_softmax(rng.normal(size=(N_HEAD, n, n))) for n in LENGTHS]
    attn = rng.normal(size=(len(LENGTHS), N_HEAD, N_KEY, N_KEY)).astype(np.float32)
    signed = rng.normal(size=attn.shape).astype(np.float32)  # stands in for an effective map
    for row, (block, n) in enumerate(zip(blocks, LENGTHS)):
        attn[row, :, :n, :n] = block
    real = np.arange(N_KEY)[None, :] < np.array(LENGTHS)[:, None]
    return attn, signed, real


def _real(array: np.ndarray, row: int, head: int) -> np.ndarray:
    n = LENGTHS[row]
    return array[row, head, :n, :n].astype(np.float64)


def _torch(*arrays):
    return [torch.from_numpy(np.ascontiguousarray(array)) for array in arrays]


def _pair_mask(real: torch.Tensor) -> torch.Tensor:
    """(batch, 1, query, key) 1.0 where both query and key are real tokens, else 0.0."""
    real = real.to(measures.REDUCTION_DTYPE)
    return (real[:, :, None] * real[:, None, :])[:, None]


def _real_block(attn: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """attn in the reduction dtype with every padded query row and key column set to 0.

    The batch fixture puts garbage in the padding; extract's maps arrive already masked
    (effattn.capture_attention), so the tests mask first to feed the measures the same way.
    """
    return attn.to(measures.REDUCTION_DTYPE) * _pair_mask(real)


def _map_measure(column: str, attn: np.ndarray, real: np.ndarray, *, pretrained: np.ndarray | None = None,
                 types: dict[str, torch.Tensor] | None = None) -> np.ndarray:
    """One column of `measures.map_measures`, fed as extract feeds it: maps already masked."""
    attn, real = _torch(attn, real)
    other = attn if pretrained is None else _torch(pretrained)[0]
    if types is None:
        types = measures.token_type_masks([[]] * len(real), real.shape[-1])
    blocks = _real_block(attn, real), _real_block(other, real)
    return measures.map_measures(*blocks, real, types)[column]


def _capture(attn: torch.Tensor, real: torch.Tensor) -> effattn.LayerCapture:
    """A layer capture of the batch whose effective map is 0, so attn_null is attn itself."""
    return effattn.LayerCapture(layer=0, attn=attn, values=torch.zeros(0), attn_eff=torch.zeros_like(attn),
                                rank=torch.tensor([[5, 7], [5, 5], [8, 9]]), attention_mask=real)


def test_cls_weight_is_first_column_averaged_over_real_queries(batch):
    attn, _, real = batch
    got = _map_measure("cls_weight", attn, real)
    want = [[_real(attn, row, head)[:, 0].mean() for head in range(N_HEAD)] for row in range(len(LENGTHS))]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_sep_weight_takes_the_larger_of_two_sep_columns(batch):
    attn, _, real = batch
    is_sep = np.zeros_like(real)
    for row, n in enumerate(LENGTHS):
        is_sep[row, [n // 2, n - 1]] = True  # a sentence pair: [SEP] mid-way and at the end
    types = {**measures.token_type_masks([[]] * len(LENGTHS), N_KEY), "sep": torch.from_numpy(is_sep)}
    got = _map_measure("sep_weight", attn, real, types=types)
    for row, n in enumerate(LENGTHS):
        for head in range(N_HEAD):
            columns = _real(attn, row, head).mean(axis=0)
            assert got[row, head] == pytest.approx(max(columns[n // 2], columns[n - 1]), rel=1e-5)


def test_cls_row_weight_is_max_over_tokens_of_a_hand_tagged_type(batch):
    attn, _, real = batch
    pos_tags = [["[CLS]", "DET", "NOUN", "", "NOUN", "PUNCT", "[SEP]"],
                ["[CLS]", "PRON", "VERB", "PUNCT", "[SEP]"],
                ["[CLS]", "NOUN", "VERB", "", "DET", "NOUN", "PUNCT", "NOUN", "[SEP]"]]
    types = measures.token_type_masks(pos_tags, N_KEY)
    got = _map_measure("cls_row_noun", attn, real, types=types)
    for row, tags in enumerate(pos_tags):
        nouns = [key for key, tag in enumerate(tags) if tag == "NOUN"]
        for head in range(N_HEAD):
            want = attn[row, head, 0, nouns].max() if nouns else np.nan
            np.testing.assert_allclose(got[row, head], want, rtol=1e-5)


def test_cls_row_weight_is_nan_when_the_type_is_absent(batch):
    attn, _, real = batch
    types = measures.token_type_masks([["[CLS]", "NOUN", "[SEP]"]] * len(LENGTHS), N_KEY)
    assert np.isnan(_map_measure("cls_row_verb", attn, real, types=types)).all()


def test_punct_weight_sums_the_punctuation_columns_averaged_over_real_queries(batch):
    attn, _, real = batch
    pos_tags = [["[CLS]", "NOUN", "PUNCT", "VERB", "PUNCT", "NOUN", "[SEP]"],
                ["[CLS]", "PRON", "VERB", "NOUN", "[SEP]"],
                ["[CLS]", "NOUN", "VERB", "", "DET", "NOUN", "PUNCT", "NOUN", "[SEP]"]]
    got = _map_measure("punct_weight", attn, real, types=measures.token_type_masks(pos_tags, N_KEY))
    for row, tags in enumerate(pos_tags):
        punct = [key for key, tag in enumerate(tags) if tag == "PUNCT"]
        for head in range(N_HEAD):
            want = _real(attn, row, head).mean(axis=0)[punct].sum() if punct else np.nan
            np.testing.assert_allclose(got[row, head], want, rtol=1e-5)


def test_support_share_counts_exact_nonzeros_of_real_rows(batch):
    attn, _, real = batch
    sparse = attn.copy()
    sparse[0, 0, :7, 3:] = 0  # example 0 (n = 7), head 0: every row keeps 3 of 7 keys
    got = _map_measure("support_share", sparse, real)
    assert got[0, 0] == pytest.approx(3 / 7)
    assert np.allclose(np.delete(got.ravel(), 0), 1.0)  # softmax rows have full support


def test_token_type_masks_mark_specials_and_ignore_continuations():
    masks = measures.token_type_masks([["[CLS]", "VERB", "", "PUNCT", "[SEP]"]], 6)
    assert masks["cls"][0].tolist() == [True, False, False, False, False, False]
    assert masks["verb"][0].tolist() == [False, True, False, False, False, False]
    assert masks["sep"][0].tolist() == [False, False, False, False, True, False]
    assert masks["punct"][0].tolist() == [False, False, False, True, False, False]


def test_entropy_is_mean_row_entropy_of_abs_normalised_rows(batch):
    _, signed, real = batch
    got = _map_measure("entropy", signed, real)
    for row in range(len(LENGTHS)):
        for head in range(N_HEAD):
            probs = np.abs(_real(signed, row, head))
            probs /= probs.sum(axis=-1, keepdims=True)
            want = -(probs * np.log(probs)).sum(axis=-1).mean()
            assert got[row, head] == pytest.approx(want, rel=1e-5)


def test_entropy_of_uniform_attention_is_log_n():
    n = 6
    attn = np.full((1, 1, n, n), 1.0 / n, dtype=np.float32)
    assert _map_measure("entropy", attn, np.ones((1, n), dtype=bool)).item() == pytest.approx(np.log(n))


def test_null_norm_is_the_frobenius_norm_of_the_real_block(batch):
    _, signed, real = batch
    attn, real = _torch(signed, real)
    got = measures.head_properties(_capture(attn, real), _real_block(attn, real))["null_norm"]
    want = [[np.linalg.norm(_real(signed, row, head)) for head in range(N_HEAD)] for row in range(len(LENGTHS))]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_cosine_matches_numpy_on_flattened_real_blocks(batch):
    attn, signed, real = batch
    got = _map_measure("pretrained_cosine", attn, real, pretrained=signed)
    for row in range(len(LENGTHS)):
        for head in range(N_HEAD):
            left, right = _real(attn, row, head).ravel(), _real(signed, row, head).ravel()
            want = left @ right / (np.linalg.norm(left) * np.linalg.norm(right))
            assert got[row, head] == pytest.approx(want, rel=1e-5, abs=1e-9)


def test_cosine_of_a_map_with_itself_is_one(batch):
    attn, _, real = batch
    np.testing.assert_allclose(_map_measure("pretrained_cosine", attn, real, pretrained=attn), 1.0, rtol=1e-6)


def test_nullity_is_real_tokens_minus_rank(batch):
    _, signed, real = batch
    capture = _capture(*_torch(signed, real))
    got = measures.head_properties(capture, capture.attn_null)
    assert got["seq_len"].tolist() == [[7, 7], [5, 5], [9, 9]]
    assert got["nullity"].tolist() == [[2, 0], [0, 0], [1, 0]]
