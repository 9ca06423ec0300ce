"""Efficient attention (effattn/efficient.py, project-defined): each row is the vertex of
{p ≥ 0, Σp = 1, pᵀV = aᵀV} that maximises aᵀp. Checked against the definition row by row and
against scipy's HiGHS (test-only reference) on the same linear programs."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from effattn import InputShapeError, NonFiniteValuesError, NotAProbabilityError
from effattn import efficient_kernel
from effattn.efficient import (constraint_basis, efficient_attention,
                               efficient_attention_with_status)
from tests.test_effective import padded_batch, random_attention

REPO = Path(__file__).resolve().parents[1]


def random_heads(heads, n, d_head, seed=0, sharpness=3.0, dtype=torch.float64):
    """(attn (heads, n, n), values (heads, n, d_head)) for one unpadded example."""
    generator = torch.Generator().manual_seed(seed)
    attn = random_attention(heads, n, n, generator=generator, dtype=dtype, sharpness=sharpness)
    return attn, torch.randn(heads, n, d_head, generator=generator, dtype=dtype)


def low_rank_values(heads, n, d_head, rank, seed=1, with_ones=False):
    """(values = F G of the given rank (heads, n, d_head), F (heads, n, rank)) in float64; with
    `with_ones`, F's first column is 1, so the ones vector lies in V's column space."""
    generator = torch.Generator().manual_seed(seed)
    factor = torch.randn(heads, n, rank, generator=generator, dtype=torch.float64)
    if with_ones:
        factor[..., 0] = 1.0
    mixing = torch.randn(heads, rank, d_head, generator=generator, dtype=torch.float64)
    return factor @ mixing, factor


def rule_rank(values, dtype) -> int:
    """rank of one head's V by the project's rule: NumPy's matrix_rank at the input's eps."""
    values = np.asarray(values, dtype=np.float64)
    singular = np.linalg.svd(values, compute_uv=False)
    return int(np.linalg.matrix_rank(values, tol=singular.max() * max(values.shape)
                                     * torch.finfo(dtype).eps))


def highs_optimum(row, constraint_columns) -> float:
    """max aᵀp over p ≥ 0, Σp = Σa, pᵀF = aᵀF, by scipy's HiGHS; tolerances tightened from its
    1e-7 default, whose slightly infeasible optima overshoot the true one by up to ~3e-7."""
    row = np.asarray(row, dtype=np.float64) / float(np.sum(row))
    columns = np.asarray(constraint_columns, dtype=np.float64)
    result = linprog(-row, A_eq=np.vstack([columns.T, np.ones(len(row))]),
                     b_eq=np.append(columns.T @ row, 1.0), bounds=(0, None), method="highs",
                     options={"primal_feasibility_tolerance": 1e-10,
                              "dual_feasibility_tolerance": 1e-10})
    assert result.status == 0, result.message
    return -result.fun


def assert_is_efficient_attention(attn, values, result, constraint_columns=None, dtype=None):
    """attn, values, result: (heads, n, ·) of one unpadded example; every row checked."""
    dtype = dtype or attn.dtype
    attn, values, result = attn.double(), values.double(), result.double()
    assert result.min() >= 0
    assert (result.sum(-1) - 1).abs().max() <= 1e-6
    output = attn @ values
    residual = torch.linalg.vector_norm(result @ values - output, dim=-1)
    assert (residual <= 1e-5 * torch.linalg.vector_norm(output, dim=-1)).all()
    for head in range(attn.shape[0]):
        support = (result[head] != 0).sum(-1)
        assert support.max() <= rule_rank(values[head], dtype) + 1
        columns = values[head] if constraint_columns is None else constraint_columns[head]
        for row in range(attn.shape[1]):
            objective = attn[head, row] @ result[head, row] / attn[head, row].sum()
            optimum = highs_optimum(attn[head, row].numpy(), columns.numpy())
            assert abs(objective.item() - optimum) <= 1e-7, (head, row)


@pytest.mark.parametrize("n,d_head,sharpness", [(48, 8, 3.0), (64, 32, 1.0), (64, 32, 6.0),
                                                 (40, 32, 3.0), (90, 12, 2.0)])
def test_rows_are_sparse_distributions_that_keep_the_head_output_and_solve_the_program(
        n, d_head, sharpness):
    attn, values = random_heads(2, n, d_head, seed=n + d_head, sharpness=sharpness)
    assert_is_efficient_attention(attn, values, efficient_attention(attn, values))


def test_float32_inputs_meet_the_same_bounds():
    attn, values = random_heads(2, 64, 32, seed=5, dtype=torch.float32)
    result = efficient_attention(attn, values)
    assert result.dtype == torch.float32
    assert_is_efficient_attention(attn, values, result)


def test_support_is_at_most_rank_plus_one_for_rank_deficient_values():
    values, factor = low_rank_values(2, 48, 16, rank=5)
    attn, _ = random_heads(2, 48, 16, seed=2)
    result = efficient_attention(attn, values)
    assert (result != 0).sum(-1).max() <= 6
    assert_is_efficient_attention(attn, values, result, constraint_columns=factor)


def test_support_is_at_most_rank_when_the_ones_vector_is_in_the_value_span():
    values, factor = low_rank_values(2, 48, 16, rank=4, with_ones=True)
    _, ranks = constraint_basis(values.numpy(), torch.float64)
    assert ranks.tolist() == [4, 4]                   # rank([V 1]) = rank(V): Σp = 1 comes free
    attn, _ = random_heads(2, 48, 16, seed=3)
    result = efficient_attention(attn, values)
    assert (result != 0).sum(-1).max() <= 4
    assert_is_efficient_attention(attn, values, result, constraint_columns=factor)


def test_degenerate_programs_from_repeated_tokens_are_solved():
    generator = torch.Generator().manual_seed(4)
    distinct = torch.randn(2, 12, 8, generator=generator, dtype=torch.float64)
    values = distinct[:, torch.arange(48) % 12]       # 48 tokens, 12 distinct value rows
    attn, _ = random_heads(2, 48, 8, seed=4)
    result, status = efficient_attention_with_status(attn, values)
    assert (status == 0).all()                        # no row needed the fallback
    assert_is_efficient_attention(attn, values, result)


def test_one_hot_and_uniform_rows():
    attn = torch.full((2, 40, 40), 1 / 40, dtype=torch.float64)
    attn[0] = torch.eye(40, dtype=torch.float64)
    _, values = random_heads(2, 40, 8, seed=6)
    result = efficient_attention(attn, values)
    assert torch.equal(result[0], attn[0])            # a vertex already, and the optimum
    assert_is_efficient_attention(attn, values, result)


def test_equals_attention_exactly_when_the_constraints_leave_no_freedom():
    attn, values, mask = padded_batch([32, 20, 5], dtype=torch.float32)  # n ≤ d_head, full rank
    result, status = efficient_attention_with_status(attn, values, mask)
    block = (mask[:, None, :, None] * mask[:, None, None, :]).float()
    assert torch.equal(result, attn * block)
    assert (status == -1).all()


def test_a_head_with_freedom_left_is_solved_beside_heads_without():
    attn, values = random_heads(2, 20, 32, seed=7)
    values[1] = values[1, torch.arange(20) % 6]       # 6 distinct value rows: rank 6 < n = 20
    result = efficient_attention(attn, values)
    assert torch.equal(result[0], attn[0])
    assert (result[1] != 0).sum(-1).max() <= 7
    assert_is_efficient_attention(attn, values, result)


def test_is_deterministic():
    attn, values = random_heads(3, 64, 32, seed=8, dtype=torch.float32)
    assert torch.equal(efficient_attention(attn, values), efficient_attention(attn, values))


def test_padded_batch_gives_exactly_each_example_alone():
    attn, values, mask = padded_batch([48, 37, 45, 12], heads=2)
    batched = efficient_attention(attn, values, mask)
    for example, n in enumerate([48, 37, 45, 12]):
        alone = efficient_attention(attn[example:example + 1, :, :n, :n],
                                    values[example:example + 1, :, :n])
        assert torch.equal(batched[example:example + 1, :, :n, :n], alone)
        assert batched[example, :, n:].abs().sum() == 0
        assert batched[example, :, :, n:].abs().sum() == 0


def test_nonprefix_mask_gives_the_real_tokens_alone():
    attn, values, _ = padded_batch([40], heads=2, n=40)
    mask = torch.ones(1, 40, dtype=torch.long)
    mask[0, :5] = 0                                   # left padding
    scores = torch.log(attn).masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    attn = torch.softmax(scores, -1)
    result = efficient_attention(attn, values, mask)
    alone = efficient_attention(attn[:, :, 5:, 5:], values[:, :, 5:])
    assert torch.equal(result[:, :, 5:, 5:], alone)
    assert result[:, :, :5].abs().max() == 0 and result[:, :, :, :5].abs().max() == 0


def test_all_padding_example_is_zero():
    attn, values, mask = padded_batch([48, 30], heads=2)
    mask[1] = 0
    assert efficient_attention(attn, values, mask)[1].abs().max() == 0


def test_leading_dims_without_mask_are_independent_heads():
    attn, values = random_heads(6, 40, 8, seed=9)
    result = efficient_attention(attn.reshape(2, 3, 40, 40), values.reshape(2, 3, 40, 8))
    assert torch.equal(result.reshape(6, 40, 40), efficient_attention(attn, values))


def test_the_fallback_path_reaches_the_same_optimum():
    attn, values = random_heads(1, 48, 8, seed=10)
    basis, ranks = constraint_basis(values.numpy(), torch.float64)
    rank, n = int(ranks[0]), 48
    head_rows = np.ascontiguousarray(basis[0, :, :rank].T)   # Rᵀ, r × n
    tableau = np.empty((rank, n - rank))
    basic, nonbasic = np.empty(rank, np.int64), np.empty(n - rank, np.int64)
    assert efficient_kernel._starting_tableau(head_rows, tableau, basic, nonbasic)
    for row in attn[0].numpy()[::4]:
        fast, safe = np.empty(n), np.empty(n)
        assert efficient_kernel._solve_row(head_rows, tableau, basic, nonbasic, row, fast, False)
        assert efficient_kernel._solve_row(head_rows, tableau, basic, nonbasic, row, safe, True)
        assert abs(row @ fast - row @ safe) < 1e-12 and (safe != 0).sum() <= rank


def test_rows_of_a_tiny_bert_capture(tiny_bert_dir):
    from transformers import AutoModel, AutoTokenizer

    from effattn import capture_attention

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    batch = tokenizer(["a short one", "a rather longer sentence with many more tokens in it"],
                      padding=True, return_tensors="pt")
    capture = capture_attention(AutoModel.from_pretrained(tiny_bert_dir), batch)
    for layer in capture.layers:
        result = efficient_attention(layer.attn, layer.values, layer.attention_mask)
        for example, n in enumerate(layer.n_real.tolist()):
            assert_is_efficient_attention(layer.attn[example, :, :n, :n],
                                          layer.values[example, :, :n], result[example, :, :n, :n])


def test_inputs_needing_gradients_are_detached():
    attn, values = random_heads(1, 40, 8)
    result = efficient_attention(attn.requires_grad_(), values.requires_grad_())
    assert not result.requires_grad
    assert torch.equal(result, efficient_attention(attn.detach(), values.detach()))


def test_rows_that_do_not_sum_to_one_raise():
    attn, values = random_heads(1, 40, 8)
    with pytest.raises(NotAProbabilityError, match="sum to 1"):
        efficient_attention(attn * 1.1, values)


def test_negative_attention_raises():
    attn, values = random_heads(1, 40, 8)
    shift = attn[0, 0, 0] + 0.2                       # entry 0 becomes −0.2, the sum stays 1
    attn[0, 0, 0] -= shift
    attn[0, 0, 1] += shift
    with pytest.raises(NotAProbabilityError, match="non-negative"):
        efficient_attention(attn, values)


def test_non_finite_values_raise():
    attn, values = random_heads(1, 40, 8)
    values[0, 3, 2] = float("nan")
    with pytest.raises(NonFiniteValuesError, match="nan or inf"):
        efficient_attention(attn, values)


def test_mismatched_shapes_raise():
    attn, values = random_heads(1, 40, 8)
    with pytest.raises(InputShapeError, match="values must be"):
        efficient_attention(attn, values[:, :30])


def test_plain_python_path_without_numba_agrees_with_the_compiled_one(tmp_path):
    assert efficient_kernel.COMPILED, "numba is missing: pip install -r requirements.txt"
    attn, values, mask = padded_batch([16, 11], heads=2, n=16, d_head=4)
    torch.save((attn, values, mask), tmp_path / "inputs.pt")
    script = ("import sys; sys.modules['numba'] = None; import torch; "  # importing numba fails
              "from effattn import efficient_kernel; assert not efficient_kernel.COMPILED; "
              "from effattn.efficient import efficient_attention; "
              f"inputs = torch.load({str(tmp_path / 'inputs.pt')!r}); "
              f"torch.save(efficient_attention(*inputs), {str(tmp_path / 'out.pt')!r})")
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True)
    plain = torch.load(tmp_path / "out.pt")
    compiled = efficient_attention(attn, values, mask)
    assert torch.allclose(plain, compiled, rtol=0, atol=1e-12)
    assert torch.equal(plain != 0, compiled != 0)


def test_the_compiled_solver_leaves_torchs_thread_count_alone():
    # in a fresh process: numba starts its thread pool on first use, once per process
    script = ("import torch; torch.set_num_threads(1); "
              "from effattn.efficient import efficient_attention; "
              "a = torch.softmax(torch.randn(2, 40, 40), -1); "
              "efficient_attention(a, torch.randn(2, 40, 8)); print(torch.get_num_threads())")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO, check=True)
    assert result.stdout.split()[-1] == "1"


@pytest.mark.parametrize("shape", [(0, 2, 5, 4), (1, 2, 0, 4), (1, 2, 5, 0)], ids=["batch 0", "n 0", "d_head 0"])
def test_empty_inputs_give_empty_or_standard_results(shape):
    batch, heads, n, d_head = shape
    attn = torch.softmax(torch.randn(batch, heads, n, n, dtype=torch.float64), -1)
    values = torch.randn(batch, heads, n, d_head, dtype=torch.float64)
    mask = torch.ones(batch, n, dtype=torch.bool)
    result, status = efficient_attention_with_status(attn, values, mask)
    assert result.shape == attn.shape and status.shape == attn.shape[:-1]
    if d_head == 0 and n:  # no constraint from V: every vertex is admissible; rows stay distributions
        assert torch.allclose(result.sum(-1), torch.ones(batch, heads, n, dtype=torch.float64))


def test_bfloat16_rows_are_judged_at_bfloat16_precision():
    torch.manual_seed(0)
    attn = torch.softmax(torch.randn(1, 2, 40, 40), -1).to(torch.bfloat16)
    values = torch.randn(1, 2, 40, 8).to(torch.bfloat16)
    result = efficient_attention(attn, values, torch.ones(1, 40, dtype=torch.bool))
    assert result.dtype == torch.bfloat16 and torch.isfinite(result.float()).all()
