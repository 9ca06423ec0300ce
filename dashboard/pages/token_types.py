"""Token types (Fig. 1): the [CLS] query row's weight on NOUN, PRON, VERB, [SEP], [CLS], PUNCT per head."""

import numpy as np
import polars as pl
import streamlit as st

from dashboard import charts, data, kinds, paper, sidebar
from dashboard.charts import KIND_COLORS, Panel

TYPES = {"cls_row_noun": "NOUN", "cls_row_pron": "PRON", "cls_row_verb": "VERB",
         "cls_row_sep": "[SEP]", "cls_row_cls": "[CLS]", "cls_row_punct": "PUNCT"}

selection = sidebar.page(
    "Token types in the [CLS] row",
    ("Per head, the weight the [CLS] query puts on each token type (max over tokens of that type, first "
     "wordpiece of a word), averaged over the dev examples where the type occurs. The paper (Fig. 1) "
     "finds [SEP] and punctuation lose weight with effective attention while [CLS] does not; compare "
     "norm-weighted attention for Kobayashi et al.'s (2020) view of the same tokens."),
    "tasks", "layers", "heads", "kinds")
run = selection.run

c1, c2 = st.columns([2, 3])
layer = c1.selectbox("Layer", list(selection.layers), index=len(selection.layers) - 1, key="tt_layer",
                     bind="query-params", help="The paper shows the final layer")
view = c2.segmented_control("View", ["per task", "averaged over tasks"], default="per task", required=True,
                            key="tt_view", bind="query-params")

with st.spinner("Reading head summaries…"):
    summary = data.read(run, "head_summary", tasks=selection.tasks, layer=layer, head=selection.heads,
                        kind=selection.kinds, measure=tuple(TYPES),
                        columns=("task", "layer", "head", "kind", "measure", "mean", "std", "n"))
if summary.is_empty():
    st.info(f"No [CLS]-row measures for layer {layer} in this selection.")
    st.stop()
summary = summary.with_columns(pl.col("measure").replace_strict(TYPES).alias("token_type"))
if view == "averaged over tasks":
    summary = (summary.group_by("layer", "head", "kind", "measure", "token_type", maintain_order=True)  # a stable CSV
               .agg(pl.col("mean").mean(), pl.col("std").mean(), pl.col("n").sum())
               .with_columns(pl.lit("all selected").alias("task")))
groups = summary["task"].unique(maintain_order=True).to_list()  # data.read keeps the selection's task order
order = list(TYPES.values())

panels = []
for task in groups:
    for kind in selection.kinds:
        part = summary.filter((pl.col("task") == task) & (pl.col("kind") == kind))
        types, heads, (z, sd, n) = charts.matrices(part, ("mean", "std", "n"), rows="token_type", cols="head",
                                                    row_values=order, col_values=selection.heads)
        text = [[f"sd {s:.3f}, n {c:.0f}" if np.isfinite(s) else "" for s, c in zip(srow, nrow)] for srow, nrow in zip(sd, n)]
        panels.append(Panel(f"{paper.task_label(task)} · {kinds.label(kind)}", z, heads, types, kind=kind, text=text,
                            hover={"x": "head", "y": "type", "z": "weight"}))
fig = charts.heatmaps(panels, cols=len(selection.kinds), y_title="token type", height=110 + 230 * len(groups))
table = summary.select("task", "layer", "head", "kind", "token_type", "mean", "std", "n").sort("task", "kind", "head")
charts.show(fig, table, f"token_types_layer{layer}")
kinds.show_notes(run, selection.kinds)

st.subheader("Averaged over heads")
means = (summary.group_by("task", "kind", "token_type").agg(pl.col("mean").mean())
         .with_columns(pl.col("token_type").cast(pl.Enum(order))).sort("task", "token_type", "kind")
         .with_columns(pl.col("token_type").cast(pl.String)))
for task in groups:
    part = means.filter(pl.col("task") == task)
    fig = charts.bars(part, x="token_type", y="mean", color="kind", colors=KIND_COLORS, names=kinds.LABELS,
                      y_title="mean [CLS]-row weight", height=300)
    fig.update_layout(title=paper.task_label(task))
    charts.show(fig, part, f"token_types_mean_{task}_layer{layer}")
