"""Cost of sparse attention maps in training (issue 13): one forward + backward of MiniLM with
every head on softmax (the model's eager path), on effattn's sparsemax, and on entmax's
sparsemax (an autograd.Function, for comparison; torch.func cannot differentiate it, which is
why effattn writes its own), batch 8 RTE pairs padded to 128.

Prints one JSON line: medians of interleaved repeats and the ratios to softmax, plus the
largest difference between the two sparsemax implementations' outputs.

    python benchmarks/sparse_attention.py [--repeats 15] [--glue-dir ../shared/glue]
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

import entmax
import torch
from effective_overhead import BATCH, SEQ_LEN, interleaved_medians, minilm_batch, parse_args

import effattn


def main() -> None:
    args = parse_args(__doc__)
    model, batch = minilm_batch(args.glue_dir)
    model.train()  # dropout on, as in fine-tuning

    def step(attention: str):
        def run():
            effattn.set_attention_map(model, attention)
            model.zero_grad(set_to_none=True)
            model(**batch).last_hidden_state.pow(2).mean().backward()
        return run

    runs = {"softmax": step("softmax"), "sparsemax": step("sparsemax")}

    def entmax_run():
        effattn.set_attention_map(model, "sparsemax")
        with _normalizer_replaced(lambda scores: entmax.sparsemax(scores, dim=-1)):
            model.zero_grad(set_to_none=True)
            model(**batch).last_hidden_state.pow(2).mean().backward()

    runs["entmax_sparsemax"] = entmax_run
    median = interleaved_medians(runs, args.repeats)
    model.eval()
    with torch.no_grad():
        effattn.set_attention_map(model, "sparsemax")
        ours = model(**batch).last_hidden_state
        with _normalizer_replaced(lambda scores: entmax.sparsemax(scores, dim=-1)):
            theirs = model(**batch).last_hidden_state
    print(json.dumps({
        "model": "all-MiniLM-L6-v2", "batch": BATCH, "seq_len": SEQ_LEN, "threads": torch.get_num_threads(),
        "repeats": args.repeats, **{f"{name}_s": round(value, 4) for name, value in median.items()},
        "sparsemax_ratio": round(median["sparsemax"] / median["softmax"], 3),
        "entmax_ratio": round(median["entmax_sparsemax"] / median["softmax"], 3),
        "max_output_difference": float((ours - theirs).abs().max()),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }))


class _normalizer_replaced:
    """Within the block, the sparsemax map name resolves to another function (entmax's)."""

    def __init__(self, function):
        self.function = function

    def __enter__(self):
        from effattn import routing

        self.saved = routing.normalizer
        routing.normalizer = lambda name: self.function if name == "sparsemax" else self.saved(name)

    def __exit__(self, *exc):
        from effattn import routing

        routing.normalizer = self.saved


if __name__ == "__main__":
    main()
