"""Property-based fuzzing of decompose_attention against the float64 reference.

Hypothesis draws the structure (batch 0-3, heads 1-3, n 0-40, d_head 0-12, dtype, right or left
padding per example, all-padding examples, which CPU path) and how the values are made (scale
spread across rows, exact duplicate rows, exact low rank); a drawn seed fills in the numbers.
Derandomised with no example database, so every run, here and in CI, tries the same inputs.
"""

import math
from dataclasses import dataclass

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from effattn import EffattnError, NonFiniteValuesError, NotAProbabilityError, decompose_attention
from tests.test_numerics_dtypes import reference_rank, torch_ops_path

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
# A singular value within this factor of the tolerance may fall either side of it: the Cholesky
# certificate sees V through its float64 Gram matrix, whose rounding moves σ by ~eps64·κ²
# (κ ≤ ~1e7 where it certifies, numerics.py), well inside 10 %.
BORDERLINE = 0.1
# Absolute error of A_eff against A·P_V, in eps(dtype): attention entries are ≤ 1 and rows sum
# to 1, so rounding A, Q and the two products costs a few eps (measured ≤ 1). float64 and
# float32 also carry the float64 subspace's sensitivity, eps64·κ (κ ≤ ~1e5 from the scale spread
# drawn here).
PROJECTION_EPS = 4
PROJECTION_FLOOR = 1e-9


@dataclass(frozen=True)
class Case:
    attn: torch.Tensor    # (batch, head, n, n) softmax over each example's real keys
    values: torch.Tensor  # (batch, head, n, d_head)
    mask: torch.Tensor    # (batch, n) int64
    torch_ops: bool


@st.composite
def cases(draw) -> Case:
    batch, heads = draw(st.integers(0, 3)), draw(st.integers(1, 3))
    n, d_head = draw(st.integers(0, 40)), draw(st.integers(0, 12))
    dtype = draw(st.sampled_from(DTYPES))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    mask = torch.zeros(batch, n, dtype=torch.int64)
    for example in range(batch):
        length = draw(st.integers(0, n))          # 0: an all-padding example
        if draw(st.booleans()):                   # right padding (a prefix) or left padding
            mask[example, :length] = 1
        else:
            mask[example, n - length:] = 1
    values = torch.randn(batch, heads, n, d_head, generator=generator, dtype=torch.float64)
    spread = draw(st.sampled_from([0.0, 1.0, 2.0]))     # rows scaled by 10^±spread
    values *= 10 ** (spread * (2 * torch.rand(batch, heads, n, 1, generator=generator) - 1))
    if n and draw(st.booleans()):                 # exact duplicates: repeated tokens
        distinct = draw(st.integers(1, n))
        values = values[:, :, torch.arange(n) % distinct]
    if draw(st.booleans()) and d_head > 1:        # exact low rank r < d_head
        rank = draw(st.integers(1, d_head - 1))
        mixing = torch.randn(rank, d_head, generator=generator, dtype=torch.float64)
        values = values[..., :rank] @ mixing
    scores = torch.randn(batch, heads, n, n, generator=generator, dtype=torch.float64) * 3
    scores = scores.masked_fill(mask[:, None, None, :] == 0, -torch.inf)
    attn = torch.softmax(scores, -1).nan_to_num(0.0)  # all-padding rows: no real keys
    torch_ops = draw(st.booleans())
    return Case(attn.to(dtype), values.to(dtype), mask, torch_ops)


def decompose(case: Case, **options):
    with torch_ops_path(case.torch_ops):
        return decompose_attention(case.attn, case.values, case.mask, **options)


def real_blocks(case: Case):
    """(example, head, kept index (n_real,)) of every head of an example with real tokens."""
    for example in range(case.mask.shape[0]):
        kept = case.mask[example].nonzero().squeeze(-1)
        if kept.numel():
            for head in range(case.attn.shape[1]):
                yield example, head, kept


@FUZZ
@given(cases())
def test_decomposition_matches_the_float64_reference(case):
    parts = decompose(case)
    dtype = case.attn.dtype
    eps = torch.finfo(dtype).eps
    real = case.mask.bool()
    assert parts.n_real.tolist() == case.mask.sum(-1)[:, None].expand(parts.rank.shape).tolist()
    padded = ~(real[:, None, :, None] & real[:, None, None, :])
    assert parts.attn_eff.masked_select(padded).abs().sum() == 0
    assert parts.attn.masked_select(padded).abs().sum() == 0
    for example, head, kept in real_blocks(case):
        rank = int(parts.rank[example, head])
        values = case.values[example, head][kept].double()   # the upcast V the rule reads
        attn = case.attn[example, head][kept][:, kept].double()
        attn_eff = parts.attn_eff[example, head][kept][:, kept].double()
        if values.shape[-1] == 0:
            assert rank == 0 and attn_eff.abs().sum() == 0
            continue
        expected, singular, left = reference_rank(values, dtype)
        assert rank == int(expected) or _borderline(values, singular, dtype), (rank, expected)
        projection = attn @ left[:, :rank] @ left[:, :rank].T
        assert (attn_eff - projection).abs().max() <= max(PROJECTION_EPS * eps, PROJECTION_FLOOR)
        # dropping σ ≤ tolerance moves A·V by at most the tolerance (rows of A have norm ≤ 1)
        dropped = singular[rank] if rank < singular.numel() else 0.0
        scale = (attn.abs() @ values.abs()).max()
        error = (attn_eff @ values - attn @ values).abs().max()
        assert error <= dropped * 1.01 + 2 * PROJECTION_EPS * eps * math.sqrt(len(kept)) * scale


def _borderline(values, singular, dtype) -> bool:
    """Whether a singular value lies within BORDERLINE of the documented tolerance."""
    n, d_head = values.shape
    tolerance = max(torch.finfo(dtype).eps / 2 * float(singular.square().sum().sqrt()),
                    torch.finfo(torch.float64).eps * max(n, d_head) * float(singular[0]))
    return bool(((singular - tolerance).abs() <= BORDERLINE * tolerance).any())


def _real_entry(case: Case, data, tensor_name: str):
    """An index (example, head, row, column) of a real token in attn or values, or None."""
    blocks = list(real_blocks(case))
    width = case.values.shape[-1] if tensor_name == "values" else case.attn.shape[-1]
    if not blocks or width == 0:
        return None
    example, head, kept = data.draw(st.sampled_from(blocks))
    row = int(kept[data.draw(st.integers(0, len(kept) - 1))])
    column = (data.draw(st.integers(0, width - 1)) if tensor_name == "values"
              else int(kept[data.draw(st.integers(0, len(kept) - 1))]))
    return example, head, row, column


@FUZZ
@given(cases(), st.sampled_from([float("nan"), float("inf"), -float("inf")]), st.data())
def test_non_finite_values_raise_the_documented_error(case, bad, data):
    entry = _real_entry(case, data, "values")
    if entry is None:
        return                                    # nothing real to corrupt
    values = case.values.clone()
    values[entry] = bad
    corrupted = Case(case.attn, values, case.mask, case.torch_ops)
    try:
        decompose(corrupted)
    except NonFiniteValuesError as error:
        assert "nan or inf" in str(error)
    else:
        raise AssertionError("nan or inf in a real value vector was accepted")


@FUZZ
@given(cases(), st.sampled_from(["scale", "shift", "nan"]), st.data())
def test_rows_that_are_not_probabilities_raise_the_documented_error(case, corruption, data):
    entry = _real_entry(case, data, "attn")
    if entry is None:
        return
    attn = case.attn.double().clone()
    example, head, row, column = entry
    if corruption == "scale":        # a row of scores or an unnormalised map
        attn[example, head, row] *= 1.5
    elif corruption == "shift":      # one entry moved: the row misses 1 by 0.25
        attn[example, head, row, column] += 0.25
    else:
        attn[example, head, row, column] = float("nan")
    corrupted = Case(attn.to(case.attn.dtype), case.values, case.mask, case.torch_ops)
    try:
        decompose(corrupted)
    except NotAProbabilityError as error:
        assert "sum to 1" in str(error)
    else:
        raise AssertionError(f"a {corruption} row was accepted as probabilities")


@FUZZ
@given(cases(), st.data())
def test_any_failure_is_an_effattn_error(case, data):
    # corrupt anything at random, padding included: the only exceptions allowed are effattn's
    attn, values = case.attn.clone(), case.values.clone()
    for tensor in (attn, values):
        if tensor.numel() and data.draw(st.booleans()):
            flat = tensor.view(-1)
            flat[data.draw(st.integers(0, flat.numel() - 1))] = data.draw(
                st.sampled_from([float("nan"), float("inf"), 2.0, -1.0]))
    try:
        decompose(Case(attn, values, case.mask, case.torch_ops))
    except EffattnError:
        pass
