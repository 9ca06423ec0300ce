"""Cost of the public effattn calls relative to the forward pass they explain (issues 2 and 15).

Prints ONE JSON line. Two public paths, each timed against its own forward pass (same inputs,
same threads, warm-up, medians of --repeats interleaved pairs, so that machine noise hits both):

- `capture_ratio`: `capture_attention(model, batch)` (the default outputs: masked A, V, A_eff,
  rank, W_O and value norms of every layer) / `model(**batch, output_attentions=True)`;
- `effective_ratio`: (that forward + `effective_attention(attn, values, mask)` of every layer on
  the finished forward's tensors, fresh output) / that forward.

Batch 8. Inputs are random word pieces: n real tokens each ("full"), or n padded with real
lengths spread evenly over n/4..n ("padded"). Models: the embedded all-MiniLM-L6-v2 (6 × 12
heads, d_head 32) over --lengths, and a randomly initialised BERT-base shape (12 × 12 heads,
d_head 64) over --bert-lengths. The headline is MiniLM at n = 128, full and padded (the issue's
goal: ≤ 1.10, and ≤ 1.15 up to n = 512). The machine's load average is printed before and after,
because on a shared machine only ratios measured in one run mean anything.

    python benchmarks/effective_overhead.py [--repeats 15] [--lengths 32,64,128,256,512]
        [--bert-lengths 128,512] [--paddings full,padded] [--device cpu|cuda]
        [--dtypes float32,bfloat16] [--threads N]

One run of the default table takes ~30 min on a 2-core CPU (BERT-base at n = 512 is 20 of them):
split it with --lengths/--bert-lengths/--paddings and run the parts back to back.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from effattn import capture_attention, effective_attention
from precompute.config import resolve_model

BATCH, SEQ_LEN = 8, 128
PADDINGS = ("full", "padded")


DEVICE = ["cpu"]  # set by main; timed() synchronises CUDA


def timed(function) -> float:
    if DEVICE[0] == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    function()
    if DEVICE[0] == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def interleaved_medians(runs: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each run, repeats interleaved so machine noise hits all alike."""
    times = {name: [] for name in runs}
    for function in runs.values():  # warm-up
        function()
    for _ in range(repeats):
        for name, function in runs.items():
            times[name].append(timed(function))
    return {name: statistics.median(values) for name, values in times.items()}


def parse_args(doc: str, argv=None):
    """Options shared with benchmarks/norm_weighted.py."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--glue-dir", type=Path,
                        default=Path(__file__).resolve().parents[1].parent / "shared" / "glue")
    parser.add_argument("--lengths", default="32,64,128,256,512", help="MiniLM sequence lengths")
    parser.add_argument("--bert-lengths", default="128,512", help="BERT-base-shape lengths ('' for none)")
    parser.add_argument("--paddings", default=",".join(PADDINGS), help="comma-separated: full, padded")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtypes", default="float32", help="comma-separated: float32, bfloat16, float16")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    return parser.parse_args(argv)


def minilm_model():
    path = resolve_model("minilm")
    return AutoModel.from_pretrained(path, attn_implementation="eager").eval(), AutoTokenizer.from_pretrained(path)


def minilm_batch(glue_dir: Path | None = None):
    """(MiniLM with eager attention, a padded batch of BATCH inputs of SEQ_LEN positions), as
    benchmarks/norm_weighted.py uses it."""
    model, tokenizer = minilm_model()
    return model, random_batch(tokenizer.vocab_size, SEQ_LEN, "padded", "cpu")


def bert_base_model():
    torch.manual_seed(0)
    # BERT-base: 12 layers × 12 heads, d_model 768, 512 positions
    return BertModel._from_config(BertConfig(), attn_implementation="eager").eval()


def random_batch(vocab_size: int, n: int, padding: str, device: str) -> dict[str, torch.Tensor]:
    """BATCH random word-piece sequences of n positions, [CLS]-like first token; "padded": real
    lengths spread evenly over n/4..n (right padding)."""
    generator = torch.Generator().manual_seed(n)
    input_ids = torch.randint(1000, vocab_size, (BATCH, n), generator=generator)
    if padding == "full":
        lengths = [n] * BATCH
    else:
        lengths = torch.linspace(max(n // 4, 2), n, BATCH).round().long().tolist()
    mask = (torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]).long()
    input_ids = input_ids * mask
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device),
            "token_type_ids": torch.zeros_like(input_ids).to(device)}


def measure(model, batch: dict, repeats: int) -> dict:
    """capture and effective ratios of one model on one batch, each paired with its forward."""
    def forward():
        with torch.no_grad():
            return model(**batch, output_attentions=True)

    layers = capture_attention(model, batch).layers  # the finished forward's tensors: A, V, mask
    tensors = [(layer.attn, layer.values, batch["attention_mask"]) for layer in layers]
    identity_error = max(((attn_eff @ values - attn @ values).abs().max() / (attn @ values).abs().max()).item()
                         for (attn, values, _), attn_eff in
                         zip(tensors, (layer.attn_eff for layer in layers)))
    del layers

    def effective_of_every_layer():
        for attn, values, mask in tensors:
            effective_attention(attn, values, mask)

    capture = interleaved_medians({"forward": forward, "capture": lambda: capture_attention(model, batch)}, repeats)
    effective = interleaved_medians({"forward": forward, "effective": effective_of_every_layer}, repeats)
    return {"forward_s": round(capture["forward"], 5),
            "capture_ratio": round(capture["capture"] / capture["forward"], 4),
            "effective_ratio": round(1 + effective["effective"] / effective["forward"], 4),
            "max_identity_error": float(f"{identity_error:.3g}")}


def main(argv=None) -> None:
    args = parse_args(__doc__, argv)
    DEVICE[0] = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    minilm, tokenizer = minilm_model()
    shapes = [("all-MiniLM-L6-v2", minilm, [int(n) for n in args.lengths.split(",") if n])]
    if args.bert_lengths:
        shapes.append(("bert-base-shape (random weights)", bert_base_model(),
                       [int(n) for n in args.bert_lengths.split(",") if n]))
    paddings = [padding for padding in args.paddings.split(",") if padding]
    if not set(paddings) <= set(PADDINGS):
        raise SystemExit(f"error: --paddings takes {', '.join(PADDINGS)}, got {args.paddings!r}")
    table = []
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        for name, model, lengths in shapes:
            model = model.to(args.device, dtype)
            for n in lengths:
                for padding in paddings:
                    batch = random_batch(tokenizer.vocab_size, n, padding, args.device)
                    row = {"model": name, "dtype": dtype_name, "n": n, "padding": padding,
                           **measure(model, batch, args.repeats)}
                    print(json.dumps(row), file=sys.stderr)  # progress, one row at a time
                    table.append(row)
    headline = {row["padding"]: row for row in table
                if row["model"] == "all-MiniLM-L6-v2" and row["n"] == SEQ_LEN and row["dtype"] == "float32"}
    print(json.dumps({
        "benchmark": "effective_overhead", "device": args.device, "batch": BATCH, "repeats": args.repeats,
        "threads": torch.get_num_threads(), "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "capture_ratio_n128": {padding: row["capture_ratio"] for padding, row in headline.items()},
        "effective_ratio_n128": {padding: row["effective_ratio"] for padding, row in headline.items()},
        "table": table,
    }))


if __name__ == "__main__":
    main()
