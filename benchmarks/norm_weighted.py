"""Cost of norm-weighted attention relative to the forward pass it explains (issue 11).

Prints one JSON line. `ratio` = (forward with attentions + the norm-weighted map of every head of
every example: ‖f(x_j)‖ from V and the head's W_O, then α_ij‖f(x_j)‖ divided by its row sums, as
the `norm` kind stores it) / (forward with attentions), MiniLM, batch 8, random word pieces padded to 128 (real lengths 32..128).
Medians of repeats interleaved with the plain forward, as in effective_overhead.py.

    python benchmarks/norm_weighted.py [--repeats 15] [--glue-dir ../shared/glue]
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

import torch
from effective_overhead import BATCH, SEQ_LEN, interleaved_medians, minilm_batch, parse_args

from effattn.norm_weighted import (head_output_weights, norm_weighted_attention, output_projections,
                                   transformed_value_norms)
from effattn.routing import routed_attention


def main() -> None:
    args = parse_args(__doc__)
    model, batch = minilm_batch(args.glue_dir)
    projections = output_projections(model)

    def forward():
        with torch.no_grad():
            model(**batch, output_attentions=True)

    def with_norms():
        layer = iter(projections)

        def handler(attn, values, key_mask, spare):
            norms = transformed_value_norms(values, head_output_weights(next(layer), values.shape[1]), key_mask)
            weighted = norm_weighted_attention(attn, norms)
            weighted.div_(weighted.sum(-1, keepdim=True).clamp_min_(1e-30))  # the `norm` kind's row shares, as effattn.kinds
            return attn

        with torch.no_grad(), routed_attention(model, handler):
            model(**batch, output_attentions=True)

    median = interleaved_medians({"forward": forward, "norm": with_norms}, args.repeats)
    print(json.dumps({
        "model": "all-MiniLM-L6-v2", "batch": BATCH, "seq_len": SEQ_LEN, "threads": torch.get_num_threads(),
        "repeats": args.repeats, "forward_s": round(median["forward"], 5), "norm_s": round(median["norm"], 5),
        "ratio": round(median["norm"] / median["forward"], 4), "loadavg": [round(x, 2) for x in os.getloadavg()],
    }))


if __name__ == "__main__":
    main()
