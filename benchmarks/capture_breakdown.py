"""Where `capture_attention`'s time over a forward goes (issue 15): the profile behind its ratio.

Prints ONE JSON line. On one batch (MiniLM, batch 8 of random word pieces, as effective_overhead.py
builds it) it times, as medians of --repeats interleaved repeats, each as a share of the plain
forward (`output_attentions=True`):

- `capture`: the public call;
- `capture_on_layer`: the same with an `on_layer` callback that keeps every layer, which
  decomposes each layer inside the forward on a copy of A (the order capture used before);
- `routed_forward`: the same forward routed through effattn with a handler that only keeps
  each layer's A and V (what capture adds to the model's own work before any arithmetic);
  `routed_keeping_nothing` and `routed_keeping_a` keep less, to show what keeping costs;
- then each step of capture's arithmetic alone, on that forward's kept tensors: `compiled_pass`
  (the numba pass: float64 Gram matrix, Cholesky, rank certificate and basis of every head,
  padding zeroed), `products` (A·Q·Qᵀ of every head), `masked_copy` (A restricted to the real
  blocks, padded batches only) and `value_norms` (‖v_j W_O^h‖);
- `interaction`: capture − routed_forward − the steps, the time the steps cost beyond their
  own when they run between the model's layers (cache and thread effects).

With --captures-only it times just the forward, capture and capture with on_layer, holding no
other tensors (the steps keep every layer's A, V and outputs alive, ~1.2 GB at n = 512).

    python benchmarks/capture_breakdown.py [--n 128] [--padding full|padded] [--repeats 15] [--threads N]
        [--captures-only]
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

import torch
from effective_overhead import interleaved_medians, minilm_model, random_batch

from effattn import capture_attention
from effattn.effective import _real_block_indices, _restricted_to_real_blocks
from effattn.fused_cpu import fused_bases
from effattn.norm_weighted import head_output_weights, output_projections, transformed_value_norms
from effattn.routing import routed_attention


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--padding", choices=("full", "padded"), default="full")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--captures-only", action="store_true", help="only forward, capture, capture_on_layer")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    model, tokenizer = minilm_model()
    batch = random_batch(tokenizer.vocab_size, args.n, args.padding, "cpu")
    projections = output_projections(model)
    mask = batch["attention_mask"]

    def forward():
        with torch.no_grad():
            model(**batch, output_attentions=True)

    def routed(keep):
        def run():
            kept = []
            with torch.no_grad(), routed_attention(model, lambda attn, values, key_mask, spare:
                                                   kept.append(keep(attn, values)) or attn):
                model(**batch)
            return kept
        return run

    routed_forward = routed(lambda attn, values: (attn, values))

    def capture_on_layer():
        kept = []
        capture_attention(model, batch, on_layer=kept.append)
        return kept

    if args.captures_only:
        seconds = interleaved_medians({"forward": forward, "capture": lambda: capture_attention(model, batch),
                                       "capture_on_layer": capture_on_layer}, args.repeats)
        print(json.dumps({
            "benchmark": "capture_breakdown", "captures_only": True, "n": args.n, "padding": args.padding,
            "repeats": args.repeats, "threads": torch.get_num_threads(),
            "load_average_before": [round(x, 2) for x in load_before], "forward_s": round(seconds["forward"], 5),
            "share_of_forward": {name: round(value / seconds["forward"], 4) for name, value in seconds.items()
                                 if name != "forward"}}))
        return
    layers = routed_forward()
    blocks = [(attn.reshape(attn.shape[0], -1, args.n, args.n), values.reshape(*values.shape[:2], args.n, -1))
              for attn, values in layers]
    indices, lengths, prefix = _real_block_indices(mask)
    outputs = [torch.empty_like(attn) for attn, _ in blocks]
    bases = [fused_bases(attn, values, lengths, prefix, out)[0] for (attn, values), out in zip(blocks, outputs)]

    def compiled_pass():
        for (attn, values), out in zip(blocks, outputs):
            fused_bases(attn, values, lengths, prefix, out)

    def products():  # as capture runs them: one batched product when every example fills the batch
        with torch.no_grad():
            for (attn, _), basis, out in zip(blocks, bases, outputs):
                if all(length == args.n for length in lengths):
                    torch.matmul(torch.matmul(attn, basis), basis.mT, out=out)
                    continue
                for example, (_, block) in enumerate(indices):
                    crop = basis[example, :, :lengths[example]]
                    out[example][block] = (attn[example][block] @ crop) @ crop.mT

    def masked_copy():
        for attn, _ in blocks:
            _restricted_to_real_blocks(attn, attn, mask, lengths, prefix)

    def value_norms():
        with torch.no_grad():
            for projection, (_, values) in zip(projections, layers):
                transformed_value_norms(values, head_output_weights(projection, values.shape[1]), mask)

    steps = {"compiled_pass": compiled_pass, "products": products, "masked_copy": masked_copy,
             "value_norms": value_norms}
    seconds = interleaved_medians({"forward": forward, "capture": lambda: capture_attention(model, batch),
                                   "capture_on_layer": capture_on_layer, "routed_forward": routed_forward,
                                   "routed_keeping_nothing": routed(lambda attn, values: None),
                                   "routed_keeping_a": routed(lambda attn, values: attn), **steps}, args.repeats)
    share = {name: round(value / seconds["forward"], 4) for name, value in seconds.items() if name != "forward"}
    share["interaction"] = round(share["capture"] - share["routed_forward"] - sum(share[name] for name in steps), 4)
    print(json.dumps({
        "benchmark": "capture_breakdown", "model": "all-MiniLM-L6-v2", "batch": len(lengths), "n": args.n,
        "padding": args.padding, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "forward_s": round(seconds["forward"], 5), "share_of_forward": share,
    }))


if __name__ == "__main__":
    main()
