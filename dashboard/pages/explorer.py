"""Example explorer (Figs. 2, 7): one example, one head: standard, effective and null component."""

import numpy as np
import polars as pl
import streamlit as st

from dashboard import charts, data, maps, paper, sidebar
from dashboard.charts import Panel

selection = sidebar.page(
    "Example explorer",
    ("Standard attention A, effective attention A_eff (the part of A that reaches the output, A_eff·V = A·V) "
     "and the null component A − A_eff (in the left null space of V: it changes nothing)."),
    "tasks", "layers", "heads")
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

with st.spinner("Loading maps…"):
    loaded = maps.load_maps(run, task, (example_id,), (layer,), (head,), ("standard", "effective"))
    measures = data.read(run, "head_measures", tasks=(task,), example_id=example_id, layer=layer, head=head,
                         kind="standard", columns=("rank", "nullity", "null_norm"))
attn, attn_eff = loaded.get((example_id, layer, head, "standard")), loaded.get((example_id, layer, head, "effective"))
if attn is None or attn_eff is None:
    st.info(f"No stored maps for example {example_id}, layer {layer}, head {head}: pick another example or head.")
    st.stop()
attn_null = attn - attn_eff  # (query, key)
n, d_head = attn.shape[0], run.d_head

st.markdown(f"**Example {example_id}** (n = {n} tokens)  \n**A:** {row['text_a'] or ''}"
            + (f"  \n**B:** {row['text_b']}" if row["text_b"] else ""))
cols = st.columns(6)
cols[0].metric("tokens n", n)
cols[1].metric("d_head", d_head if d_head is not None else "?")
rank = int(measures["rank"][0]) if not measures.is_empty() else None
nullity = int(measures["nullity"][0]) if not measures.is_empty() else None
stored_norm = measures["null_norm"][0] if not measures.is_empty() else None
# stored from the full-precision maps; the stored maps are rounded, so recomputing is only a fallback
null_norm = stored_norm if stored_norm is not None else float(np.linalg.norm(attn_null))
cols[2].metric("rank of V", rank if rank is not None else "?")
cols[3].metric("nullity (n − rank)", nullity if nullity is not None else "?")
cols[4].metric("‖A − A_eff‖", f"{null_norm:.3f}")
cols[5].metric("label / pred (std, eff)", f"{row['label']:g} / {row['prediction']:g}, {row['prediction_effective']:g}")
if (d_head is not None and n <= d_head) or nullity == 0:
    st.info(f"Here n = {n} ≤ d_head = {d_head} (nullity {nullity}): V's left null space is empty, so effective "
            "attention is identical to standard attention and the null component is zero.")

labels = maps.token_labels(row["tokens"], n, row["segment_ids"])
hover = {"x": "key", "y": "query", "z": "weight"}
panels = []
if "standard" in selection.kinds:
    panels.append(Panel("standard A", attn, labels, labels, hover=hover))
if "effective" in selection.kinds:
    panels.append(Panel("effective A_eff", attn_eff, labels, labels, diverging=True, hover=hover))
panels.append(Panel("null A − A_eff", attn_null, labels, labels, diverging=True, hover=hover))
fig = charts.heatmaps(panels, height={3: 480, 2: 620}.get(len(panels), 820), x_title="key", y_title="query", square=True)
fig.update_xaxes(tickangle=-60, tickfont={"size": 9 if n > 40 else 11})
fig.update_yaxes(tickfont={"size": 9 if n > 40 else 11})
grid = pl.DataFrame({
    "query": np.repeat(np.arange(n), n), "key": np.tile(np.arange(n), n),
    "query_token": np.repeat(labels, n), "key_token": np.tile(labels, n),
    "standard": attn.ravel(), "effective": attn_eff.ravel(), "null": attn_null.ravel()})
charts.show(fig, grid, f"maps_{task}_ex{example_id}_L{layer}_H{head}")
st.caption("Labels are `position token` (B: marks the second sentence). Effective and null panels use a diverging "
           "scale centred at 0: red positive, blue negative; effective weights can be negative or above 1. Drag to "
           "zoom into a block of rows (the paper's Fig. 2 shows the last rows); double-click to reset. Fewer kinds "
           "in the sidebar give larger panels.")
