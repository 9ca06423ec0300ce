"""Example explorer (Figs. 2, 7): one example, one head, every selected kind side by side: standard,
effective, the null component, norm-weighted, effective norm-weighted and efficient."""

import numpy as np
import polars as pl
import streamlit as st

from dashboard import charts, data, kinds, maps, paper, sidebar
from dashboard.attribution_views import RECIPE
from dashboard.charts import DIFFERENCE, Panel
from precompute.schema import KINDS

SHOWN_MEASURES = ("support_share", "cls_weight", "sep_weight", "punct_weight", "entropy")  # per kind, this head

selection = sidebar.page(
    "Example explorer",
    ("Standard attention A, effective attention A_eff (the part of A that reaches the output, A_eff·V = A·V), "
     "the null component A − A_eff (in the left null space of V: it changes nothing), and the other selected "
     "views of the same head: norm-weighted (Kobayashi et al. 2020), its effective counterpart, and efficient "
     "attention (a sparse distribution with the same head output)."),
    "tasks", "layers", "heads", "kinds")
run = selection.run

task = st.pills("Task", selection.tasks, default=selection.tasks[0], required=True, key="ex_task",
                bind="query-params")
sample = maps.sample_examples(run, task)
if sample.is_empty():
    st.info(f"No stored maps for {paper.task_label(task)}: the extract stage stores full maps for a small sample.")
    st.stop()
texts = {row["example_id"]: row for row in sample.iter_rows(named=True)}


c1, c2, c3 = st.columns(3)
example_id = c1.selectbox("Example (id in the dev split)", list(texts), key="ex_example", bind="query-params",
                          help="The map sample: examples whose full maps are stored")
layer = c2.selectbox("Layer", list(selection.layers), index=len(selection.layers) - 1, key="ex_layer", bind="query-params")
head = c3.selectbox("Head", list(selection.heads), key="ex_head", bind="query-params")
row = texts[example_id]
# standard and effective are always loaded: the null component and the head facts need them
wanted = tuple(kind for kind in KINDS if kind in selection.kinds or kind in ("standard", "effective"))

with st.spinner("Loading maps…"):
    loaded = {kind: weights for (_, _, _, kind), weights in
              maps.load_maps(run, task, (example_id,), (layer,), (head,), wanted).items()}
    measures = data.read(run, "head_measures", tasks=(task,), example_id=example_id, layer=layer, head=head,
                         kind=wanted, columns=("kind", "rank", "nullity", "null_norm", *SHOWN_MEASURES))
    attribution = maps.load_attribution(run, task, example_id, layer, head)  # None before the attribute stage
if not loaded:
    st.info(f"No stored maps for example {example_id}, layer {layer}, head {head}: pick another example or head.")
    st.stop()
attn, attn_eff = loaded.get("standard"), loaded.get("effective")
n, d_head = next(iter(loaded.values())).shape[0], run.d_head

st.markdown(f"**Example {example_id}** (n = {n} tokens)  \n**A:** {row['text_a'] or ''}"
            + (f"  \n**B:** {row['text_b']}" if row["text_b"] else ""))
facts = measures.filter(pl.col("kind") == "standard")  # rank, nullity and null_norm are properties of the head
cols = st.columns(6)
cols[0].metric("tokens n", n)
cols[1].metric("d_head", d_head if d_head is not None else "?")
rank = int(facts["rank"][0]) if not facts.is_empty() else None
nullity = int(facts["nullity"][0]) if not facts.is_empty() else None
stored_norm = facts["null_norm"][0] if not facts.is_empty() else None
# stored from the full-precision maps; the stored maps are rounded, so recomputing is only a fallback
null_norm = stored_norm if stored_norm is not None else (
    float(np.linalg.norm(attn - attn_eff)) if attn is not None and attn_eff is not None else None)
cols[2].metric("rank of V", rank if rank is not None else "?")
cols[3].metric("nullity (n − rank)", nullity if nullity is not None else "?")
cols[4].metric("‖A − A_eff‖", f"{null_norm:.3f}" if null_norm is not None else "?")
cols[5].metric("label / pred (std, eff)", f"{row['label']:g} / {row['prediction']:g}, {row['prediction_effective']:g}")
if (d_head is not None and n <= d_head) or nullity == 0:
    st.info(f"Here n = {n} ≤ d_head = {d_head} (nullity {nullity}): V's left null space is empty, so effective "
            "attention is identical to standard attention and the null component is zero (likewise effective "
            "norm-weighted = norm-weighted, and efficient = standard: the constraints leave it no freedom).")


def missing_reason(kind: str) -> str:
    """Why this head has no stored map of ``kind`` (never an error: the other kinds still show)."""
    if kind == kinds.SAMPLED and row.get("in_efficient_sample") is False:
        return f"example {example_id} is outside the efficient sample. {kinds.sample_note(run)}"
    return ("this run's maps table has none (caches written before the kind existed, or extract did not store "
            "it): re-run `python -m precompute ... --force --stages extract,attribute,importance,analyse` to add it")


labels = maps.token_labels(row["tokens"], n, row["segment_ids"])
hover = {"x": "key", "y": "query", "z": "weight"}
panels, grid = [], {}
for kind in (kind for kind in KINDS if kind in selection.kinds):
    if kind not in loaded:
        st.info(f"No {kinds.label(kind)} map for example {example_id}, layer {layer}, head {head}: {missing_reason(kind)}")
        continue
    panels.append(Panel(kinds.label(kind), loaded[kind], labels, labels, kind=kind, hover=hover))
    grid[kind] = loaded[kind].ravel()
    if kind == "effective" and attn is not None:  # the null component sits beside what it completes
        panels.append(Panel("null A − A_eff", attn - attn_eff, labels, labels, kind=DIFFERENCE, hover=hover))
        grid["null"] = panels[-1].z.ravel()
if panels and attribution is not None and attribution.shape == (n, n):  # a distribution over the input tokens
    panels.append(Panel(RECIPE, attribution, labels, labels, hover={"x": "input token", "y": "query", "z": "attribution"}))
    grid["attribution"] = attribution.ravel()
if not panels:
    st.stop()
per_row = min(3, len(panels))
height = {3: 480, 2: 620}.get(per_row, 820) * -(-len(panels) // per_row)
fig = charts.heatmaps(panels, cols=per_row, height=height, x_title="key", y_title="query", square=True)
fig.update_xaxes(tickangle=-60, tickfont={"size": 9 if n > 40 else 11})
fig.update_yaxes(tickfont={"size": 9 if n > 40 else 11})
cells = pl.DataFrame({
    "query": np.repeat(np.arange(n), n), "key": np.tile(np.arange(n), n),
    "query_token": np.repeat(labels, n), "key_token": np.tile(labels, n), **grid})
charts.show(fig, cells, f"maps_{task}_ex{example_id}_L{layer}_H{head}")
st.caption("Labels are `position token` (B: marks the second sentence). Signed kinds (effective, effective "
           "norm-weighted) and the null component use a diverging scale centred at 0: red positive, blue negative; "
           "their weights can be negative or above 1. Standard, norm-weighted and efficient are distributions, on a "
           "scale from 0. Drag to zoom into a block of rows (the paper's Fig. 2 shows the last rows); double-click to "
           "reset. Fewer kinds in the sidebar give larger panels."
           + (" The gradient attribution panel is the share of each input token in the head's output at that query, "
              "by Meister et al.'s recipe (a project-chosen definition; see the Attribution page)." if attribution is not None else ""))
if attribution is None:
    attributed = maps.attributed_examples(run, task)
    if attributed:  # the run ships attribution maps for some explorer examples only (data/ size)
        st.caption(f"Gradient attribution maps are stored for examples {', '.join(map(str, attributed))} of {task}: "
                   "pick one of them to see the attribution beside the attention maps.")
shown = measures.filter(pl.col("kind").is_in(selection.kinds))
if not shown.is_empty():
    order = {kind: i for i, kind in enumerate(KINDS)}
    st.dataframe(shown.sort(pl.col("kind").replace_strict(order, default=len(order)))
                 .select(pl.col("kind").replace_strict(kinds.LABELS, default=pl.col("kind")), *SHOWN_MEASURES),
                 hide_index=True, width="stretch")
    st.caption("This head on this example: support_share = share of keys with a non-zero weight (1 for softmax, at "
               "most (rank + 1)/n for efficient); the weights on [CLS], [SEP] and punctuation are averaged over queries.")
kinds.show_notes(run, selection.kinds)
