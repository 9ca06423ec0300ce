"""Time of the "Your own input" page on a 64-token input, after the model is loaded; prints ONE JSON line.

    python benchmarks/own_input.py [--model base|CHECKPOINT_FOLDER] [--tokens 64] [--repeats 5] [--attribution-repeats 1]

Each number is the median of --repeats runs (a shared machine is noisy; ``load_avg`` says how busy
it was):
- dashboard/live.py on its own: ``new_input_s`` = one forward pass with every cheap kind of every
  layer (``capture_input``) + efficient attention of the shown layer (``efficient_layer``), what a
  new input costs; ``new_layer_s`` = efficient attention of another layer (the other kinds are
  lookups), what a new layer costs; ``new_head_s`` = a head of a layer already shown. Broken down
  per kind in ``per_kind_s`` (all layers, except efficient: one layer).
- the page script through Streamlit's AppTest (widgets, live computation, the plotly figure of every
  kind; AppTest's own overhead included, so an upper bound): ``page_new_input_s``,
  ``page_new_layer_s``, ``page_new_head_s``.
- the opt-in gradient attribution of one layer's heads (``attribution_layer_s``, median of
  --attribution-repeats, 0 = skip: a backward pass per head and query, far slower than a view).
Goal (issue 16): every view (a new layer or head) <= 1 s after the model is loaded: ``meets_target``;
``new_input_within_target`` says the same of a new input.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 1.0
# cut to exactly --tokens word pieces; a different first word per repeat makes every input new
TEXT = ("The new drug, tested on more than two thousand patients in twelve hospitals across the country, works "
        "against most of the bacteria that cause pneumonia in young children, and doctors who took part in the "
        "trial say it is the best antibiotic they have seen in years, although it is still expensive to make and "
        "the company has not yet said when it will reach the market or how much it will cost.")
OPENERS = ("Indeed", "However", "Today", "Surprisingly", "Reportedly", "Officially", "Notably", "Again", "Finally",
           "Meanwhile", "Still", "Overall")


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def median(seconds: list[float]) -> float:
    return round(statistics.median(seconds), 4)


def text_of(tokenizer, tokens: int, repeat: int) -> str:
    """A sentence of exactly `tokens` word pieces with [CLS] and [SEP] (checked by the caller)."""
    pieces = tokenizer.tokenize(f"{OPENERS[repeat % len(OPENERS)]}, {TEXT} {TEXT}")[: tokens - 2]
    return tokenizer.convert_tokens_to_string(pieces)


def library_times(live, model, tokens: int, repeats: int) -> dict:
    import effattn
    from effattn.kinds import KIND_FUNCTIONS

    layers = model.model.config.num_hidden_layers
    new_input, new_layer, new_head, per_kind, n = [], [], [], {}, set()
    for repeat in range(repeats):
        text = text_of(model.tokenizer, tokens, repeat)
        capture_s, capture = timed(live.capture_input, model, text)
        efficient_s, _ = timed(live.efficient_layer, capture, layers - 1)
        new_input.append(capture_s + efficient_s)
        new_layer.append(timed(live.efficient_layer, capture, repeat % (layers - 1))[0])
        new_head.append(timed(live.head_views, capture, layers - 1, repeat % 4, None)[0])
        n.add(capture.n_tokens)
        batch = dict(model.tokenizer(text, return_tensors="pt"))
        with live.computing():  # the threads the page would use
            per_kind.setdefault("forward_and_capture", []).append(timed(effattn.capture_attention, model.model, batch)[0])
            result = effattn.capture_attention(model.model, batch)
            for kind, function in KIND_FUNCTIONS.items():
                if kind != "efficient":
                    per_kind.setdefault(kind, []).append(sum(timed(function, layer)[0] for layer in result.layers))
        per_kind.setdefault("efficient (one layer)", []).append(efficient_s)
    return {"n_tokens": sorted(n), "new_input_s": median(new_input), "new_layer_s": median(new_layer),
            "new_head_s": median(new_head), "per_kind_s": {kind: median(s) for kind, s in per_kind.items()}}


def page_times(model_label: str, tokens: int, repeats: int, tokenizer) -> dict:
    from streamlit.testing.v1 import AppTest

    page = AppTest.from_file(str(REPO / "dashboard" / "pages" / "own_input.py"), default_timeout=600)
    page.query_params["own_model"] = model_label
    page.query_params["own_text_b"] = ""
    page.run()  # the model loads here, outside the timings
    times = {"page_new_input_s": [], "page_new_layer_s": [], "page_new_head_s": []}
    layers = len(page.selectbox(key="own_layer").options)
    for repeat in range(repeats):
        page.text_area(key="own_text_a").set_value(text_of(tokenizer, tokens, repeat + 100))
        times["page_new_input_s"].append(timed(page.run)[0])
        page.selectbox(key="own_layer").set_value(repeat % (layers - 1))
        times["page_new_layer_s"].append(timed(page.run)[0])
        page.selectbox(key="own_head").set_value(1 + repeat % 3)
        times["page_new_head_s"].append(timed(page.run)[0])
    problems = [str(e.value)[:200] for e in page.exception] + [str(e.value)[:200] for e in page.error]
    n = next(m.value for m in page.metric if m.label == "tokens n")
    return {**{name: median(s) for name, s in times.items()}, "page_n_tokens": int(n), "page_problems": problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base", help="base (the embedded all-MiniLM-L6-v2) or a checkpoints/<task>/ folder")
    parser.add_argument("--tokens", type=int, default=64, help="input length in word pieces, with [CLS] and [SEP]")
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement; the median is reported")
    parser.add_argument("--attribution-repeats", type=int, default=1, help="runs of the slow attribution (0: skip)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from dashboard import live
    from precompute.threads import ThreadChooser

    load_s, model = timed(live.load_model, args.model)
    library = library_times(live, model, args.tokens, args.repeats)
    capture = live.capture_input(model, text_of(model.tokenizer, args.tokens, 0))
    attribution = [timed(live.attribution_layer, model, capture, layer)[0]
                   for layer in [model.model.config.num_hidden_layers - 1] * args.attribution_repeats]
    library["attribution_layer_s"] = median(attribution) if attribution else None
    label = live.BASE_LABEL if args.model == live.BASE_SOURCE else None  # the page is timed on the base model
    page = page_times(label, args.tokens, args.repeats, model.tokenizer) if label else {}
    views = [library["new_layer_s"], *(page.get(k, 0) for k in ("page_new_layer_s", "page_new_head_s"))]
    inputs = [library["new_input_s"], page.get("page_new_input_s", 0)]
    print(json.dumps({
        "benchmark": "own_input", "model": args.model, "tokens": args.tokens, "repeats": args.repeats,
        "load_s": round(load_s, 3), **library, **page, "target_s": TARGET_SECONDS,
        "meets_target": max(views) <= TARGET_SECONDS, "new_input_within_target": max(inputs) <= TARGET_SECONDS, "free_cores_at_end": ThreadChooser().choose(),  # the threads live.computing() would use now
        "load_avg": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
