import numpy as np
import pytest
import torch

import effattn.effective
from effattn import (InputShapeError, NonFiniteValuesError, NotAProbabilityError,
                     decompose_attention, effective_attention)
from tests.reference import reference_effective_attention

D_HEAD = 32


def use_torch_ops(monkeypatch) -> None:
    """Take the torch ops that CUDA, inputs needing gradients and left padding use, on the CPU."""
    monkeypatch.setattr(effattn.effective, "_fused_cpu_applies", lambda attn, values: False)


@pytest.fixture(autouse=True, params=["compiled", "torch_ops"])
def cpu_path(request, monkeypatch):
    """Every test runs on both CPU paths: the compiled pass (fused_cpu.py) and the torch ops.
    Tests that reach one path whatever the setting name it (indirect parametrisation)."""
    if request.param == "torch_ops":
        use_torch_ops(monkeypatch)
    else:
        assert effattn.effective.fused_bases is not None, "numba is missing: pip install -r requirements.txt"
    return request.param


# for tests that fail before a path is chosen, or that always take the torch ops
torch_ops_only = pytest.mark.parametrize("cpu_path", ["torch_ops"], indirect=True)


def random_attention(*shape, generator, dtype=torch.float64, sharpness=3.0):
    scores = torch.randn(*shape, generator=generator, dtype=dtype) * sharpness
    return torch.softmax(scores, dim=-1)


def padded_batch(lengths, heads=3, n=48, d_head=D_HEAD, dtype=torch.float64, seed=0):
    """Attention and values as a model produces them for right-padded examples."""
    generator = torch.Generator().manual_seed(seed)
    mask = (torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]).long()
    scores = torch.randn(len(lengths), heads, n, n, generator=generator, dtype=dtype) * 3
    scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    attn = torch.softmax(scores, dim=-1)
    # pad rows of V are not zero in a real model: give them large values to catch leaks
    values = torch.randn(len(lengths), heads, n, d_head, generator=generator, dtype=dtype)
    return attn, values, mask


def values_with_condition(n, d_head, condition, generator, dtype):
    left, _ = torch.linalg.qr(torch.randn(n, min(n, d_head), generator=generator, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(d_head, min(n, d_head), generator=generator, dtype=torch.float64))
    singular = torch.logspace(0, -np.log10(condition), min(n, d_head), dtype=torch.float64)
    return ((left * singular) @ right.T).to(dtype)


def assert_matches_reference(attn, values, mask, tolerance, input_eps):
    attn_eff = effective_attention(attn, values, mask)
    for example in range(attn.shape[0]):
        n_real = int(mask[example].sum())
        for head in range(attn.shape[1]):
            expected, _ = reference_effective_attention(
                attn[example, head].double().numpy(), values[example, head].double().numpy(),
                n_real, input_eps)
            error = np.abs(attn_eff[example, head].double().numpy() - expected).max()
            assert error <= tolerance, (example, head, error)


def test_effective_times_values_equals_attention_times_values():
    attn, values, mask = padded_batch([48, 40, 33, 20])
    parts = decompose_attention(attn, values, mask)
    real = mask[:, None, :, None].double()
    assert torch.allclose(parts.attn_eff @ values, (attn * real) @ values, atol=1e-12)


def test_effective_plus_null_equals_attention_on_real_block():
    attn, values, mask = padded_batch([48, 35])
    parts = decompose_attention(attn, values, mask)
    block = (mask[:, None, :, None] * mask[:, None, None, :]).double()
    assert torch.allclose(parts.attn_eff + parts.attn_null, attn * block, atol=1e-14)


def test_null_component_is_cancelled_by_values():
    attn, values, mask = padded_batch([48, 41])
    parts = decompose_attention(attn, values, mask)
    assert (parts.attn_null @ values).abs().max() < 1e-12
    assert parts.attn_null.abs().max() > 1e-3  # n > d_head: a real, non-trivial null part


def test_effective_equals_standard_when_n_le_d_head():
    attn, values, mask = padded_batch([32, 20, 5], dtype=torch.float32)
    parts = decompose_attention(attn, values, mask)
    block = (mask[:, None, :, None] * mask[:, None, None, :]).float()
    assert torch.equal(parts.attn_eff, attn * block)
    assert torch.equal(parts.nullity, torch.zeros_like(parts.nullity))


def test_padded_positions_are_zero():
    attn, values, mask = padded_batch([48, 30])
    attn_eff = effective_attention(attn, values, mask)
    assert attn_eff[1, :, 30:, :].abs().max() == 0
    assert attn_eff[1, :, :, 30:].abs().max() == 0


def test_padded_example_equals_the_example_alone():
    attn, values, mask = padded_batch([48, 37, 45])
    batched = effective_attention(attn, values, mask)
    alone = effective_attention(attn[1:2, :, :37, :37], values[1:2, :, :37])
    assert torch.allclose(batched[1:2, :, :37, :37], alone, atol=1e-13)


def test_matches_float64_reference_on_padded_mixed_lengths_float64():
    attn, values, mask = padded_batch([48, 47, 40, 33, 32, 31, 12, 2], heads=4)
    assert_matches_reference(attn, values, mask, 1e-8, np.finfo(np.float64).eps)


def test_matches_float64_reference_on_padded_mixed_lengths_float32():
    attn, values, mask = padded_batch([48, 40, 33, 32, 20], dtype=torch.float32, heads=4)
    assert_matches_reference(attn, values, mask, 2e-4, np.finfo(np.float32).eps)


@pytest.mark.parametrize("n", [30, 32, 33, 34, 40])
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-8), (torch.float32, 2e-4)])
def test_matches_reference_when_n_near_d_head_and_badly_conditioned(n, dtype, tolerance):
    generator = torch.Generator().manual_seed(n)
    values = torch.stack([values_with_condition(n, D_HEAD, 1e3, generator, dtype) for _ in range(3)])
    attn = random_attention(3, n, n, generator=generator, dtype=dtype)
    mask = torch.ones(1, n, dtype=torch.long)
    assert_matches_reference(attn[None], values[None], mask, tolerance, torch.finfo(dtype).eps)


@pytest.mark.parametrize("condition", [1e4, 1e6, 1e7])
def test_float64_matches_reference_for_ill_conditioned_long_sequences(condition):
    # n = 2·d_head: full rank under the float64 rule, but V L⁻ᵀ alone would lose orthonormality
    # (~eps64·cond²); a second Cholesky pass or the SVD must restore 1e-8 agreement. (Past
    # cond ~1e8 the column space itself is fixed only to eps64·cond, and two SVDs differ.)
    generator = torch.Generator().manual_seed(int(np.log10(condition)))
    values = torch.stack([values_with_condition(64, D_HEAD, condition, generator, torch.float64)
                          for _ in range(2)])
    attn = random_attention(2, 64, 64, generator=generator)
    mask = torch.ones(1, 64, dtype=torch.long)
    assert_matches_reference(attn[None], values[None], mask, 1e-8, np.finfo(np.float64).eps)


def test_rank_deficient_values_from_repeated_tokens():
    generator = torch.Generator().manual_seed(3)
    distinct = torch.randn(2, 10, D_HEAD, generator=generator, dtype=torch.float64)
    values = distinct[:, torch.arange(40) % 10]      # 40 tokens, only 10 distinct value rows
    attn = random_attention(2, 40, 40, generator=generator)
    parts = decompose_attention(attn, values)
    assert parts.rank.tolist() == [10, 10]
    assert parts.nullity.tolist() == [30, 30]
    for head in range(2):
        expected, _ = reference_effective_attention(attn[head].numpy(), values[head].numpy())
        assert np.abs(parts.attn_eff[head].numpy() - expected).max() < 1e-8


def test_rank_deficient_long_example_in_a_padded_batch_takes_the_exact_path():
    # Example 1 is longer than d_head but repeats 10 value rows: its heads cannot be certified
    # full rank, so it falls back to the SVD while its neighbours stay on the fast path.
    attn, values, mask = padded_batch([48, 40, 36], heads=2)
    values[1, :, :40] = values[1, :, torch.arange(40) % 10]
    parts = decompose_attention(attn, values, mask)
    assert parts.rank.tolist() == [[D_HEAD, D_HEAD], [10, 10], [D_HEAD, D_HEAD]]
    assert_matches_reference(attn, values, mask, 1e-8, np.finfo(np.float64).eps)


def test_rank_deficient_short_example_in_a_padded_batch_takes_the_exact_path():
    attn, values, mask = padded_batch([48, 20, 12], heads=2)
    values[2, :, :12] = values[2, :, torch.arange(12) % 4]   # 12 tokens, 4 distinct value rows
    parts = decompose_attention(attn, values, mask)
    assert parts.rank.tolist() == [[D_HEAD, D_HEAD], [20, 20], [4, 4]]
    assert_matches_reference(attn, values, mask, 1e-8, np.finfo(np.float64).eps)


def test_duplicated_tokens_in_a_short_sequence_lower_the_rank():
    generator = torch.Generator().manual_seed(4)
    values = torch.randn(1, 12, D_HEAD, generator=generator, dtype=torch.float32)
    values[:, 5] = values[:, 2]                        # n ≤ d_head but a repeated token
    attn = random_attention(1, 12, 12, generator=generator, dtype=torch.float32)
    parts = decompose_attention(attn, values)
    assert parts.rank.item() == 11
    expected, _ = reference_effective_attention(attn[0].numpy(), values[0].numpy(),
                                                input_eps=np.finfo(np.float32).eps)
    assert np.abs(parts.attn_eff[0].numpy() - expected).max() < 2e-4
    assert not torch.allclose(parts.attn_eff, attn)


def test_an_all_padding_example_is_zero_with_rank_zero():
    attn, values, mask = padded_batch([48, 40])
    mask[1] = 0
    parts = decompose_attention(attn, values, mask)
    assert parts.rank[1].tolist() == [0, 0, 0] and parts.nullity[1].tolist() == [0, 0, 0]
    assert parts.attn_eff[1].abs().max() == 0 and parts.attn[1].abs().max() == 0
    assert torch.equal(parts.attn_eff[0], effective_attention(attn[:1], values[:1], mask[:1])[0])


def test_nonprefix_mask_matches_the_example_alone():
    attn, values, _ = padded_batch([48], heads=2)
    mask = torch.ones(1, 48, dtype=torch.long)
    mask[0, :6] = 0                                     # left padding
    real = torch.arange(6, 48)
    scores = torch.randn(1, 2, 48, 48, dtype=torch.float64).masked_fill(mask[:, None, None] == 0, -torch.inf)
    attn = torch.softmax(scores, -1)
    batched = effective_attention(attn, values, mask)
    alone = effective_attention(attn[0][:, real][:, :, real], values[0][:, real])
    assert torch.allclose(batched[0][:, real][:, :, real], alone, atol=1e-13)


@torch_ops_only
def test_shape_mismatch_raises_a_clear_error():
    attn, values, mask = padded_batch([48])
    with pytest.raises(InputShapeError, match="values must be"):
        effective_attention(attn, values[..., :40, :], mask)
    with pytest.raises(InputShapeError, match="attention_mask must be"):
        effective_attention(attn, values, mask[:, :10])
    with pytest.raises(InputShapeError, match="query == key"):
        effective_attention(attn[..., :10], values, mask)


@pytest.mark.parametrize("lengths", [[48], [48, 20]])
def test_rows_not_summing_to_one_raise_a_clear_error(lengths):
    attn, values, mask = padded_batch(lengths)
    attn[-1, 0, 3] *= 2                       # one row of the last (long or short) example
    with pytest.raises(NotAProbabilityError, match="sum to 1"):
        effective_attention(attn, values, mask)


def test_nan_attention_raises_a_clear_error():
    attn, values, mask = padded_batch([48, 40])
    attn[1, 2, 5, 7] = float("nan")
    with pytest.raises(NotAProbabilityError, match="sum to 1"):
        effective_attention(attn, values, mask)


@pytest.mark.parametrize("lengths", [[48, 40], [20, 12]])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_raise_a_clear_error(lengths, bad):
    attn, values, mask = padded_batch(lengths, dtype=torch.float32)
    values[0, 1, 3, 5] = bad
    with pytest.raises(NonFiniteValuesError, match="nan or inf"):
        effective_attention(attn, values, mask)


@torch_ops_only
def test_bfloat16_inputs_take_the_torch_path():
    attn, values, mask = padded_batch([48, 20], dtype=torch.float32)
    # rows of bfloat16 probabilities miss 1 by up to its unit roundoff, 0.004: the row check
    # allows for the rounding of the input's dtype
    parts = decompose_attention(attn.bfloat16(), values.bfloat16(), mask)
    assert parts.attn_eff.dtype == torch.bfloat16
    # Gaussian values are far from rank deficient: every direction is kept, as under the float64
    # rule (the old rule, scaling bfloat16's eps by n, dropped most of them)
    assert parts.rank.tolist() == [[D_HEAD] * 3, [20] * 3]
    for example, n_real in enumerate([48, 20]):
        for head in range(attn.shape[1]):
            expected, _ = reference_effective_attention(
                attn[example, head].bfloat16().double().numpy(),
                values[example, head].bfloat16().double().numpy(), n_real)
            assert np.abs(parts.attn_eff[example, head].double().numpy() - expected).max() < 0.05


def test_out_receives_every_element_of_the_result():
    attn, values, mask = padded_batch([48, 40, 20], dtype=torch.float32)
    out = torch.full_like(attn, float("nan"))
    result = effective_attention(attn, values, mask, out=out)
    assert result.data_ptr() == out.data_ptr()
    assert torch.equal(out, effective_attention(attn, values, mask))


@pytest.mark.parametrize("nonprefix", [False, True])
def test_in_place_zeroes_attn_itself_and_matches_the_copy(nonprefix):
    attn, values, mask = padded_batch([48, 40, 20], dtype=torch.float32)
    if nonprefix:
        # left padding takes the index-tensor branch
        attn, values, mask = attn.flip(-1, -2).contiguous(), values.flip(-2).contiguous(), mask.flip(-1)
    attn += 0.5 * (mask == 0)[:, None, :, None]  # padded query rows are not 0 in a real forward
    copied = decompose_attention(attn, values, mask)
    zeroed = decompose_attention(attn.clone(), values, mask, in_place=True)
    assert not torch.equal(copied.attn, attn)  # the copy had padding to zero
    assert torch.equal(zeroed.attn, copied.attn) and torch.equal(zeroed.attn_eff, copied.attn_eff)
    original = attn.clone()
    assert decompose_attention(attn, values, mask, in_place=True).attn.data_ptr() == attn.data_ptr()
    assert not torch.equal(attn, original)


@torch_ops_only
def test_a_bad_out_buffer_raises_a_clear_error():
    attn, values, mask = padded_batch([48])
    with pytest.raises(InputShapeError, match="empty_like"):
        effective_attention(attn, values, mask, out=torch.empty_like(attn[..., :10]))
    with pytest.raises(InputShapeError, match="shares memory"):
        effective_attention(attn, values, mask, out=attn)


@torch_ops_only
def test_gradients_flow_through_effective_attention():
    attn, values, mask = padded_batch([48, 40])
    values.requires_grad_()
    effective_attention(attn, values, mask).sum().backward()
    assert values.grad is not None and values.grad.abs().max() > 0


@torch_ops_only
def test_mixed_dtypes_raise_a_clear_error():
    attn, values, mask = padded_batch([48])
    with pytest.raises(InputShapeError, match="one dtype"):
        effective_attention(attn.float(), values, mask)
