"""Cost of effective attention relative to the forward pass it explains (issue 2).

Prints one JSON line. `ratio` = (forward with attentions + effective attention of every head of
every example) / (forward with attentions), MiniLM, batch 8, inputs padded to 128 as in the
paper, computed inside the forward as capture does it (A_eff written into the layer's spent
score buffer); `fresh_output_ratio` the same with A_eff in newly allocated memory, as a plain
`effective_attention(attn, values, mask)` call does (the page faults of 6 MB per layer are
visible here); `original_code_ratio` the same with the research code's padded method;
`capture_ratio` the same for `capture_attention`, which also keeps each layer's masked A, V and
rank. Times are medians of repeats in one process, each method interleaved with its own forward
passes so machine noise hits both alike.

    python benchmarks/effective_overhead.py [--repeats 15] [--glue-dir ../shared/glue]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

import torch
from transformers import AutoModel, AutoTokenizer

from effattn import capture_attention, effective_attention, original_code_effective_attention
from effattn.routing import routed_attention
from precompute.config import resolve_model
from precompute.glue import dev_path, read_tsv

BATCH, SEQ_LEN = 8, 128
FALLBACK_PAIRS = [  # made-up pairs of RTE-like lengths, used when the GLUE files are not beside the repo
    ("The committee approved the budget after a long debate about schools, roads and taxes, and "
     "the mayor said that the new plan would cut waiting times at the two largest hospitals.",
     "The budget was approved."),
    ("She moved to Paris in 1998, where she opened a small bookshop near the river that sold "
     "second-hand novels, maps and old postcards to students and tourists for twenty years, "
     "before handing it over to her nephew and retiring to a village in the south.",
     "She owns a bookshop."),
    ("Heavy rain flooded the valley on Tuesday.", "The valley was flooded."),
    ("According to the report released by the ministry on Friday, exports of wheat, barley and "
     "maize fell by nearly a third in the first half of the year, mainly because of the drought "
     "that hit the northern provinces, while imports of fertiliser and fuel rose sharply over the "
     "same period, widening the trade deficit to its highest level in a decade and putting "
     "further pressure on the currency, which has lost a fifth of its value since January.",
     "Wheat exports fell."),
] * 2


def sentence_pairs(glue_dir: Path) -> list[tuple[str, str]]:
    path = dev_path(glue_dir, "rte")
    if not path.exists():
        return FALLBACK_PAIRS
    return read_tsv("rte", path).head(BATCH).select("text_a", "text_b").rows()


def timed(function) -> float:
    started = time.perf_counter()
    function()
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


def parse_args(doc: str):
    """--repeats and --glue-dir, shared by the benchmarks that time a MiniLM batch."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--glue-dir", type=Path,
                        default=Path(__file__).resolve().parents[1].parent / "shared" / "glue")
    return parser.parse_args()


def minilm_batch(glue_dir: Path):
    """(the embedded MiniLM with eager attention, a batch of BATCH RTE pairs padded to SEQ_LEN)."""
    path = resolve_model("minilm")
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    pairs = sentence_pairs(glue_dir)
    batch = AutoTokenizer.from_pretrained(path)(
        [a for a, _ in pairs], [b for _, b in pairs], padding="max_length", max_length=SEQ_LEN,
        truncation=True, return_tensors="pt")
    return model, batch


def main() -> None:
    args = parse_args(__doc__)
    model, batch = minilm_batch(args.glue_dir)

    def forward():
        with torch.no_grad():
            model(**batch, output_attentions=True)

    def with_each_layer(method):
        def handler(attn, values, key_mask, spare):
            method(attn, values, key_mask, spare)  # every head and example, then dropped
            return attn

        def run():
            with torch.no_grad(), routed_attention(model, handler):
                model(**batch, output_attentions=True)
        return run

    identity_error = 0.0
    for layer in capture_attention(model, batch).layers:
        output = layer.attn @ layer.values
        error = (layer.attn_eff @ layer.values - output).abs().max() / output.abs().max()
        identity_error = max(identity_error, error.item())

    methods = {"effective": with_each_layer(
                   lambda attn, values, mask, spare: effective_attention(attn, values, mask, out=spare)),
               "fresh_output": with_each_layer(
                   lambda attn, values, mask, spare: effective_attention(attn, values, mask)),
               "original_code": with_each_layer(
                   lambda attn, values, mask, spare: original_code_effective_attention(attn, values, mask)),
               "capture": lambda: capture_attention(model, batch)}
    # Each method is timed in a phase of its own, interleaved with its own forward passes: the
    # methods allocate differently (the research code's padded SVDs most of all), and what one
    # leaves in the allocator and caches would otherwise slow whichever runs next.
    ratio, forward_s, method_s = {}, [], {}
    for name, method in methods.items():
        median = interleaved_medians({"forward": forward, name: method}, args.repeats)
        ratio[name] = round(median[name] / median["forward"], 4)
        forward_s.append(median["forward"])
        method_s[name] = median[name]
    print(json.dumps({
        "model": "all-MiniLM-L6-v2", "batch": BATCH, "seq_len": SEQ_LEN,
        "real_tokens": batch["attention_mask"].sum(-1).tolist(), "threads": torch.get_num_threads(),
        "repeats": args.repeats, "forward_s": round(statistics.median(forward_s), 5),
        "effective_s": round(method_s["effective"], 5), "ratio": ratio["effective"],
        "fresh_output_ratio": ratio["fresh_output"],
        "original_code_ratio": ratio["original_code"], "capture_ratio": ratio["capture"],
        "max_abs_identity_error": identity_error,
    }))


if __name__ == "__main__":
    main()
