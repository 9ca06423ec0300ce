"""The rank rule (effattn/numerics.py) in every dtype, degenerate shapes and mask values.

Every expectation comes from an independent float64 reference: torch.linalg.svd of the float64
upcast of the SAME (possibly low-precision) values, with the documented rule written out again
below, or from exact constructions (well-conditioned V of known singular values, V = X W of
exact rank r, duplicated rows, zero heads).
"""

from contextlib import contextmanager
from functools import lru_cache

import pytest
import torch

import effattn.effective
from effattn import InputShapeError, NotAProbabilityError, decompose_attention, effective_attention
from effattn.norm_weighted import norm_weighted_attention, transformed_value_norms

LOW_PRECISION = [torch.bfloat16, torch.float16]
LENGTHS = [8, 32, 64, 128, 512, 1024, 2048]
# Tolerances, in units of eps(dtype), for the low-precision checks. Measured: A_eff is within
# 0.6 eps of A·P_V (in max norm, relative to max|A·P_V|) and A_eff·V within 0.7 eps of A·V
# (relative to max of |A|·|V|, the scale the rounding of a product is measured against).
PROJECTION_EPS = 2
PRODUCT_EPS = 2


def reference_rank(values: torch.Tensor, input_dtype: torch.dtype):
    """(rank, singular values, left vectors) of each (n, d) matrix in values (..., n, d), under
    the documented rule, from the float64 SVD of the upcast values."""
    values64 = values.double()
    left, singular, _ = torch.linalg.svd(values64, full_matrices=False)
    n, d = values.shape[-2:]
    unit_roundoff = torch.finfo(input_dtype).eps / 2
    frobenius = singular.square().sum(-1, keepdim=True).sqrt()
    tolerance = torch.maximum(unit_roundoff * frobenius,
                              torch.finfo(torch.float64).eps * max(n, d) * singular[..., :1])
    return (singular > tolerance).sum(-1), singular, left


def reference_projection(attn: torch.Tensor, left: torch.Tensor, rank: int) -> torch.Tensor:
    """A · P_V in float64, P_V the projection onto the first `rank` left singular vectors."""
    basis = left[..., :rank]
    return attn.double() @ basis @ basis.mT


def relative_error(result: torch.Tensor, expected: torch.Tensor, scale: torch.Tensor) -> float:
    return float((result.double() - expected).abs().max() / scale.abs().max())


@contextmanager
def torch_ops_path(enabled: bool):
    """Take the torch ops instead of the compiled CPU pass while enabled (both are tested)."""
    original = effattn.effective._fused_cpu_applies
    if enabled:
        effattn.effective._fused_cpu_applies = lambda attn, values: False
    try:
        yield
    finally:
        effattn.effective._fused_cpu_applies = original


def well_conditioned(n: int, d_head: int, generator, condition: float = 10.0) -> torch.Tensor:
    """(n, d_head) float64 with singular values spread evenly (log scale) from √n down to
    √n / condition. (A square Gaussian is NOT well conditioned: its σ_min ~ ‖V‖_F / n^1.5 falls
    under bfloat16's u·‖V‖_F at n = 64, and the rule rightly drops it.)"""
    k = min(n, d_head)
    left, _ = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(d_head, k, generator=generator, dtype=torch.float64))
    singular = torch.logspace(0, -torch.log10(torch.tensor(condition)).item(), k,
                              dtype=torch.float64) * n ** 0.5
    return (left * singular) @ right.T


def exact_rank(n: int, d_head: int, rank: int, generator) -> torch.Tensor:
    """(n, d_head) float64 X W with X (n, rank) and W (rank, d_head) Gaussian: rank exactly r."""
    return (torch.randn(n, rank, generator=generator, dtype=torch.float64)
            @ torch.randn(rank, d_head, generator=generator, dtype=torch.float64))


def softmax_rows(*shape, generator, dtype) -> torch.Tensor:
    scores = torch.randn(*shape, generator=generator, dtype=torch.float64) * 3
    return torch.softmax(scores, dim=-1).to(dtype)


@lru_cache(maxsize=None)
def low_precision_case(dtype: torch.dtype, n: int, d_head: int):
    """One example, two heads sharing one attention map: head 0 well conditioned of full rank,
    head 1 of exact rank r = min(n, d_head) // 2, both built in float64 and cast to dtype.
    Cached: the tests below read the same decomposition (n = 2048 costs ~1 s in bfloat16)."""
    generator = torch.Generator().manual_seed(n * 100 + d_head)
    values = torch.stack([well_conditioned(n, d_head, generator),
                          exact_rank(n, d_head, min(n, d_head) // 2, generator)]).to(dtype)
    attn = softmax_rows(1, n, n, generator=generator, dtype=dtype).expand(2, n, n)
    parts = decompose_attention(attn[None], values[None])
    return attn, values, parts


low_precision_cases = pytest.mark.parametrize(
    "dtype,n,d_head", [pytest.param(dtype, n, d_head, id=f"{str(dtype)[6:]}-n{n}-d{d_head}")
                       for dtype in LOW_PRECISION for d_head in (32, 64) for n in LENGTHS])


@low_precision_cases
def test_well_conditioned_low_precision_values_keep_full_rank(dtype, n, d_head):
    attn, values, parts = low_precision_case(dtype, n, d_head)
    assert parts.attn_eff.dtype == dtype
    assert parts.rank[0, 0].item() == min(n, d_head)
    assert reference_rank(values[0], dtype)[0].item() == min(n, d_head)


@low_precision_cases
def test_well_conditioned_low_precision_effective_attention_is_the_projection(dtype, n, d_head):
    attn, values, parts = low_precision_case(dtype, n, d_head)
    _, _, left = reference_rank(values[0], dtype)
    expected = reference_projection(attn[0], left, min(n, d_head))
    eps = torch.finfo(dtype).eps
    assert relative_error(parts.attn_eff[0, 0], expected, expected) <= PROJECTION_EPS * eps
    values64, attn64 = values[0].double(), attn[0].double()
    scale = attn64.abs() @ values64.abs()
    assert relative_error(parts.attn_eff[0, 0].double() @ values64, attn64 @ values64,
                          scale) <= PRODUCT_EPS * eps


@low_precision_cases
def test_rounding_noise_of_an_exact_low_rank_value_matrix_is_under_the_tolerance(dtype, n, d_head):
    attn, values, parts = low_precision_case(dtype, n, d_head)
    rank = min(n, d_head) // 2
    assert parts.rank[0, 1].item() == rank
    assert reference_rank(values[1], dtype)[0].item() == rank
    values64, attn64 = values[1].double(), attn[1].double()
    scale = attn64.abs() @ values64.abs()
    eps = torch.finfo(dtype).eps
    assert relative_error(parts.attn_eff[0, 1].double() @ values64, attn64 @ values64,
                          scale) <= PRODUCT_EPS * eps
    _, _, left = reference_rank(values[1], dtype)
    expected = reference_projection(attn[1], left, rank)
    assert relative_error(parts.attn_eff[0, 1], expected, expected) <= PROJECTION_EPS * eps


@pytest.mark.parametrize("torch_ops", [False, True], ids=["compiled", "torch_ops"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("n", [12, 48])  # shorter and longer than d_head
def test_full_precision_ranks_of_duplicated_rows_and_zero_heads_stay_exact(dtype, n, torch_ops):
    # 16 heads, each repeating rows: a float64 head with one repeated row used to pass the
    # Cholesky certificate about half the time (the Gram matrix's rounding hides the zero)
    d_head, heads = 32, 16
    generator = torch.Generator().manual_seed(n)
    values = torch.randn(heads, n, d_head, generator=generator, dtype=torch.float64)
    distinct = n - 1 if n <= d_head else 10
    values[:, distinct:] = values[:, torch.arange(distinct, n) % distinct]
    values[-1] = 0                                              # a zero head: rank 0
    values = values.to(dtype)
    attn = softmax_rows(heads, n, n, generator=generator, dtype=dtype)
    with torch_ops_path(torch_ops):
        parts = decompose_attention(attn[None], values[None])
    assert parts.rank[0].tolist() == [distinct] * (heads - 1) + [0]
    assert parts.rank[0].tolist() == reference_rank(values, dtype)[0].tolist()
    assert parts.attn_eff[0, -1].abs().max() == 0
    atol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(parts.attn_eff[0] @ values, attn @ values, atol=atol)


@pytest.mark.parametrize("dtype", LOW_PRECISION + [torch.float32], ids=str)
def test_softmax_rows_rounded_to_any_dtype_pass_the_row_check(dtype):
    generator = torch.Generator().manual_seed(5)
    scores = torch.randn(1, 2, 1024, 1024, generator=generator).to(dtype)
    attn = torch.softmax(scores, dim=-1)              # computed in the dtype itself
    values = torch.randn(1, 2, 1024, 8, generator=generator).to(dtype)
    assert effective_attention(attn, values).dtype == dtype


def test_bfloat16_rows_that_miss_1_by_their_rounding_alone_pass_the_row_check():
    generator = torch.Generator().manual_seed(9)
    attn = softmax_rows(1, 4, 8, 8, generator=generator, dtype=torch.bfloat16)
    assert (attn.double().sum(-1) - 1).abs().max() > 1e-3  # past the float32 tolerance
    values = torch.randn(1, 4, 8, 8, generator=generator).bfloat16()
    assert torch.equal(effective_attention(attn, values), attn)  # n ≤ d_head: A_eff is A


@pytest.mark.parametrize("dtype,off_by", [(torch.bfloat16, 0.05), (torch.float16, 0.01),
                                          (torch.float32, 0.002)])
def test_rows_off_by_more_than_the_dtypes_rounding_still_raise(dtype, off_by):
    generator = torch.Generator().manual_seed(6)
    attn = softmax_rows(1, 2, 40, 40, generator=generator, dtype=torch.float64)
    attn[0, 1, 3] *= 1 + off_by
    values = torch.randn(1, 2, 40, 8, generator=generator)
    with pytest.raises(NotAProbabilityError, match="sum to 1"):
        effective_attention(attn.to(dtype), values.to(dtype))


def padded_example(dtype=torch.float32, n=20, d_head=8):
    generator = torch.Generator().manual_seed(7)
    mask = torch.ones(2, n)
    mask[1, 13:] = 0
    scores = torch.randn(2, 3, n, n, generator=generator).masked_fill(mask[:, None, None] == 0,
                                                                      -torch.inf)
    return (torch.softmax(scores, -1).to(dtype),
            torch.randn(2, 3, n, d_head, generator=generator).to(dtype), mask)


@pytest.mark.parametrize("bad,mask_dtype", [(-1, torch.int64), (2, torch.int64),
                                            (-1.0, torch.float32), (2.0, torch.float32),
                                            (0.5, torch.float32), (float("nan"), torch.float32)],
                         ids=str)
def test_a_mask_holding_values_other_than_0_and_1_raises_a_clear_error(bad, mask_dtype):
    attn, values, mask = padded_example()
    mask[1, 15] = bad
    with pytest.raises(InputShapeError, match=r"only 0 and 1 .* mask\.bool\(\)"):
        decompose_attention(attn, values, mask.to(mask_dtype))
    with pytest.raises(InputShapeError, match="only 0 and 1"):
        transformed_value_norms(values, torch.randn(3, 8, 16), mask.to(mask_dtype))


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int64, torch.int32, torch.float32,
                                        torch.float64])
def test_bool_integer_and_float_masks_of_0_and_1_give_the_same_result(mask_dtype):
    attn, values, mask = padded_example()
    expected = decompose_attention(attn, values, mask.bool())
    parts = decompose_attention(attn, values, mask.to(mask_dtype))
    assert parts.n_real.dtype == torch.int64 and parts.n_real[:, 0].tolist() == [20, 13]
    assert torch.equal(parts.attn_eff, expected.attn_eff)
    assert torch.equal(parts.rank, expected.rank)


EMPTY_SHAPES = {"no_examples": (0, 3, 6, 4), "no_tokens": (2, 3, 0, 4),
                "no_value_dimensions": (2, 3, 6, 0)}


def empty_case(shape, dtype):
    batch, heads, n, d_head = shape
    generator = torch.Generator().manual_seed(8)
    mask = torch.ones(batch, n, dtype=torch.long)
    if batch and n:
        mask[1, 4:] = 0
    scores = torch.randn(batch, heads, n, n, generator=generator)
    attn = torch.softmax(scores.masked_fill(mask[:, None, None] == 0, -torch.inf), -1)
    return attn.to(dtype), torch.randn(batch, heads, n, d_head, generator=generator).to(dtype), mask


@pytest.mark.parametrize("torch_ops", [False, True], ids=["compiled", "torch_ops"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", sorted(EMPTY_SHAPES))
def test_empty_inputs_give_empty_or_zero_results(case, dtype, torch_ops):
    attn, values, mask = empty_case(EMPTY_SHAPES[case], dtype)
    batch, heads, n, d_head = EMPTY_SHAPES[case]
    real = (mask[:, None, :, None] * mask[:, None, None, :]).to(dtype)
    with torch_ops_path(torch_ops):
        parts = decompose_attention(attn, values, mask)
        unmasked = effective_attention(attn.flatten(0, 1), values.flatten(0, 1))
    assert parts.attn_eff.shape == attn.shape and parts.attn_eff.dtype == dtype
    assert unmasked.shape == attn.flatten(0, 1).shape
    assert parts.rank.shape == parts.n_real.shape == (batch, heads)
    assert parts.rank.dtype == parts.n_real.dtype == torch.int64
    assert parts.n_real.tolist() == [[n] * heads, [4 if n else 0] * heads][:batch]
    # d_head = 0: V spans nothing, so nothing of A reaches the output
    assert parts.rank.sum() == 0 and parts.attn_eff.abs().sum() == 0
    assert torch.equal(parts.attn_null, attn * real)


@pytest.mark.parametrize("case", sorted(EMPTY_SHAPES))
def test_empty_inputs_give_empty_or_zero_norm_weighted_attention(case):
    attn, values, mask = empty_case(EMPTY_SHAPES[case], torch.float32)
    batch, heads, n, d_head = EMPTY_SHAPES[case]
    norms = transformed_value_norms(values, torch.randn(heads, d_head, 16), mask)
    assert norms.shape == (batch, heads, n)
    assert norms.abs().sum() == 0  # no keys, or value vectors of length 0
    assert norm_weighted_attention(attn, norms).shape == attn.shape


def test_capture_of_an_empty_batch_or_a_bad_mask_raises_a_clear_error():
    from transformers import BertConfig, BertModel

    from effattn import capture_attention

    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_attention_heads=2,
                                 num_hidden_layers=1, intermediate_size=16)).eval()
    for input_ids in (torch.ones(0, 5, dtype=torch.long), torch.ones(2, 0, dtype=torch.long)):
        with pytest.raises(InputShapeError, match="skip empty batches"):
            capture_attention(model, {"input_ids": input_ids,
                                      "attention_mask": torch.ones_like(input_ids)})
    with pytest.raises(InputShapeError, match="only 0 and 1"):
        capture_attention(model, {"input_ids": torch.ones(1, 5, dtype=torch.long),
                                  "attention_mask": torch.tensor([[1, 1, 2, 1, 0]])})
