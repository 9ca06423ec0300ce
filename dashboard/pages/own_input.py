"""Your own input: type a sentence or a pair and see every kind of attention of one head, computed
live by effattn on the embedded base model or a run's fine-tuned checkpoint (dashboard/live.py,
the one place the dashboard imports torch, imported here only once the page runs)."""

from pathlib import Path

import numpy as np
import polars as pl
import streamlit as st

from dashboard import charts, kinds, maps, paper, sidebar
from dashboard.attribution_views import RECIPE
from dashboard.charts import DIFFERENCE, Panel
from dashboard.data import data_location, discover_runs
from dashboard.errors import NoCachesError
from precompute.models import checkpoint_problem
from precompute.schema import KIND_INFO, KINDS, TASKS

PAGE_MAX_TOKENS = 128  # the runs' max_seq_len; larger maps take seconds to draw and > 20 MB per cached input
MAX_CHARS = 2000  # per box; far more than PAGE_MAX_TOKENS word pieces, so the token cap is what bites
# a pair longer than d_head = 32 tokens, so that effective and standard attention differ
DEFAULT_A = ("The new drug, tested on more than two thousand patients in twelve hospitals, works against most of "
             "the bacteria that cause pneumonia in children.")
DEFAULT_B = "Doctors say it is a good antibiotic for young patients."
CLASS_NAMES = {"rte": ("entailment", "not entailment"), "qnli": ("entailment", "not entailment"),
               "mrpc": ("not a paraphrase", "paraphrase"), "sst2": ("negative", "positive")}


def model_sources() -> tuple[dict[str, str], list[str]]:
    """({picker label: source} of the base model and every loadable checkpoint of the local runs,
    [problem] of the checkpoints that would not load). Called after `live` is imported below."""
    sources, broken = {live.BASE_LABEL: live.BASE_SOURCE}, []
    try:
        runs = discover_runs()
    except NoCachesError:
        runs = {}
    for name, location in runs.items():
        for folder in sorted(Path(location).glob("checkpoints/*/")) if not location.startswith("http") else ():
            if folder.name not in TASKS:
                continue  # e.g. <task>.training-state of an unfinished fine-tuning
            if (problem := checkpoint_problem(folder)) is not None:
                broken.append(problem)
            else:
                sources[f"{name} · {paper.task_label(folder.name)} (fine-tuned checkpoint)"] = str(folder)
    return sources, broken


def prediction_text(task: str, prediction) -> str:
    if not prediction.probabilities:  # regression (STS-B)
        return f"similarity {prediction.value:.2f} (0–5)"
    index, names = int(prediction.value), CLASS_NAMES.get(task, ())
    return f"{names[index] if index < len(names) else f'class {index}'} ({prediction.probabilities[index]:.0%})"


st.title("Your own input")
st.caption("Type a sentence, or a pair, and see what one head does with it: standard attention A, effective attention "
           "A_eff (A·V = A_eff·V), the null component A − A_eff and the other kinds, computed live by effattn. The "
           "sidebar's run, tasks, layers and heads do not apply here; its kinds are the default below.")
try:
    from dashboard import live  # here, not at the top: the other pages must never import torch
except ImportError as error:  # a dashboard installed without the live extras (Dockerfile WITH_LIVE=false)
    st.error(f"This page runs the model live and needs torch and transformers, which are not installed ({error}): "
             "install requirements.txt, or build the image with --build-arg WITH_LIVE=true.", icon=":material/error:")
    st.stop()
sources, broken = model_sources()
model_label = st.selectbox("Model", list(sources), key="own_model", bind="query-params",
                           help=f"The embedded base encoder, or a checkpoints/<task>/ folder of a run under {data_location()}")
if broken:
    st.caption("Checkpoints that would not load, so not offered: " + "; ".join(broken))

with st.spinner("Loading the model…"):
    model = live.load_model(sources[model_label])
config = model.model.config
max_tokens = min(model.max_length, PAGE_MAX_TOKENS)
text_a = st.text_area("Sentence", DEFAULT_A, key="own_text_a", max_chars=MAX_CHARS, bind="query-params")
text_b = st.text_area("Second sentence (optional: fill it in for a pair)", DEFAULT_B, key="own_text_b",
                      max_chars=MAX_CHARS, bind="query-params")
selection = st.session_state.get("_selection")  # the sidebar's, when app.py runs this page
c1, c2, c3 = st.columns([1, 1, 3])
layer = c1.selectbox("Layer", list(range(config.num_hidden_layers)), index=config.num_hidden_layers - 1,
                     key="own_layer", bind="query-params")
head = c2.selectbox("Head", list(range(config.num_attention_heads)), key="own_head", bind="query-params")
# kind names, not labels, as in the sidebar: a URL-bound widget writes what it displays into the URL
picked = c3.multiselect("Attention kinds", list(KINDS), default=list(selection.kinds if selection else KINDS),
                        key="own_kind", bind="query-params", help=sidebar.KINDS_HELP)
with_attribution = st.toggle("Gradient attribution of the heads (slow: seconds to minutes per layer)",
                             key="own_attribution", bind="query-params",
                             help="Meister et al.'s recipe, as on the Attribution page: one backward pass per head and query")
if not (text_a or "").strip():
    st.info("The sentence is empty: type one in the first box (the second box is only for the second sentence of a pair).")
    st.stop()
if not picked:
    st.info("Select at least one attention kind above to see maps.")
    st.stop()

typed = (model.source, text_a.strip(), (text_b or "").strip() or None, max_tokens)  # what the caches key on
with st.spinner("Running the model on your input…"):
    capture = live.cached_capture(*typed)
    efficient = live.cached_efficient(*typed, layer) if "efficient" in picked else None
if with_attribution:
    with st.spinner(f"Computing the gradient attribution of layer {layer} (this takes a while)…"):
        attribution = live.cached_attribution(*typed, layer)[head]
views = live.head_views(capture, layer, head, efficient)
if capture.tokens_before_cut is not None:
    st.warning(f"Your input has {capture.tokens_before_cut} tokens; this page reads at most {max_tokens} (the model "
               f"itself {model.max_length}), so it was cut to {max_tokens}: shorten the text to see all of it.")

n, d_head = capture.n_tokens, config.hidden_size // config.num_attention_heads
rank = int(capture.rank[layer, head])
attn, attn_eff = capture.maps["standard"][layer, head], capture.maps["effective"][layer, head]
cols = st.columns(6)
cols[0].metric("tokens n", n)
cols[1].metric("d_head", d_head)
cols[2].metric("rank of V", rank)
cols[3].metric("nullity (n − rank)", n - rank)
cols[4].metric("‖A − A_eff‖", f"{float(np.linalg.norm(attn - attn_eff)):.3f}")
cols[5].metric("prediction", prediction_text(model.task, capture.prediction) if capture.prediction else "—",
               help="The fine-tuned classifier's answer; the base model has no classifier head")
if rank == n:
    st.info(f"Here n = {n} ≤ d_head = {d_head} (nullity {n - rank}): V's left null space is empty, so effective "
            "attention is identical to standard attention and the null component is zero.")

labels = maps.token_labels(list(capture.tokens), n, list(capture.segment_ids))
hover = {"x": "key", "y": "query", "z": "weight"}
panels, grid = [], {}
for kind, weights in views.items():
    if kind not in picked:
        continue
    panels.append(Panel(kinds.label(kind), weights, labels, labels, kind=kind, hover=hover))
    grid[kind] = weights.ravel()
    if kind == "effective":  # the null component sits beside what it completes
        panels.append(Panel("null A − A_eff", attn - attn_eff, labels, labels, kind=DIFFERENCE, hover=hover))
        grid["null"] = panels[-1].z.ravel()
if with_attribution:  # a distribution over the input tokens, beside the maps as in the explorer
    panels.append(Panel(RECIPE, attribution, labels, labels, hover={"x": "input token", "y": "query", "z": "attribution"}))
    grid["attribution"] = attribution.ravel()
per_row = min(3, len(panels))
height = {3: 480, 2: 620}.get(per_row, 820) * -(-len(panels) // per_row)
fig = charts.heatmaps(panels, cols=per_row, height=height, x_title="key", y_title="query", square=True)
fig.update_xaxes(tickangle=-60, tickfont={"size": 9 if n > 40 else 11})
fig.update_yaxes(tickfont={"size": 9 if n > 40 else 11})
cells = pl.DataFrame({"query": np.repeat(np.arange(n), n), "key": np.tile(np.arange(n), n),
                      "query_token": np.repeat(labels, n), "key_token": np.tile(labels, n), **grid})
charts.show(fig, cells, f"own_input_L{layer}_H{head}")
st.caption("Labels are `position token` (B: marks the second sentence). Signed kinds and the null component use a "
           "diverging scale centred at 0 (red positive, blue negative); the distributions a scale from 0. Efficient "
           "attention is solved for the whole layer the first time a layer is shown, the other kinds come from one "
           "forward pass per input, so switching heads and layers is quick."
           + (" The gradient attribution panel is the share of each input token in the head's output at that query, "
              "g(j) = ‖∂‖z_i‖/∂e_j‖ / Σ_k ‖∂‖z_i‖/∂e_k‖, by Meister et al.'s recipe (a project-chosen definition; see the "
              "Attribution page)." if with_attribution else ""))
project = [f"{kinds.PROJECT_MARK} {info.label} ({info.source}): {info.description}."
           for kind, info in KIND_INFO.items() if kind in picked and info.project_defined]
if project:
    st.caption("Project-defined kinds (our definitions, not a paper's):  \n" + "  \n".join(project))
