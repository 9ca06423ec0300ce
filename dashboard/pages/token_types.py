"""Token types (Fig. 1): the [CLS] query row's weight on NOUN, PRON, VERB, [SEP], [CLS], PUNCT per head, as a grid
(tasks across, kinds and their differences from standard down), and averaged over heads."""

import polars as pl
import streamlit as st

from dashboard import charts, data, kinds, sidebar
from dashboard.charts import KIND_COLORS
from dashboard.findings import TOKEN_TYPES


selection = sidebar.page(
    "Token types in the [CLS] row",
    ("Per head, the weight the [CLS] query puts on each token type (max over tokens of that type, first "
     "wordpiece of a word), averaged over the dev examples where the type occurs. The paper (Fig. 1) "
     "finds [SEP] and punctuation lose weight with effective attention while [CLS] does not; compare "
     "norm-weighted attention for Kobayashi et al.'s (2020) view of the same tokens."),
    "tasks", "layers", "heads", "kinds")
run = selection.run

c1, c2, c3 = st.columns([2, 3, 2])
layer = c1.selectbox("Layer", list(selection.layers), index=len(selection.layers) - 1, key="tt_layer",
                     bind="query-params", help="The paper shows the final layer")
view = c2.segmented_control("View", ["per task", "averaged over tasks"], default="per task", required=True,
                            key="tt_view", bind="query-params", help="per task: one column per task, as in the paper")
scale = charts.scale_toggle(c3)

with st.spinner("Reading head summaries…"):
    summary = data.read(run, "head_summary", tasks=selection.tasks, layer=layer, head=selection.heads,
                        kind=selection.kinds, measure=tuple(TOKEN_TYPES),
                        columns=("task", "layer", "head", "kind", "measure", "mean", "std", "n"))
if summary.is_empty():
    st.info(f"No [CLS]-row measures for layer {layer} in this selection.")
    st.stop()
summary = summary.with_columns(pl.col("measure").replace_strict(TOKEN_TYPES).alias("token_type"))
if view == "averaged over tasks":
    summary = (summary.group_by("layer", "head", "kind", "measure", "token_type", maintain_order=True)  # a stable CSV
               .agg(pl.col("mean").mean(), pl.col("std").mean(), pl.col("n").sum())
               .with_columns(pl.lit("all selected").alias("task")))
groups = charts.paper_order(summary["task"].unique().to_list())
order = list(TOKEN_TYPES.values())

grid = charts.kind_grid(summary, "mean", selection.kinds, rows="token_type", row_values=order,
                        col_values=selection.heads, measure="[CLS]-row weight", detail=("std", "n"))
title = charts.figure_title(f"[CLS] query row: weight per token type, layer {layer} (Fig. 1)", groups, selection.kinds)
fig = charts.heatmaps(grid.panels, cols=grid.cols, y_title="token type", height=grid.height(), scale=scale, title=title,
                      colorbar_title="[CLS]-row weight", row_titles=grid.row_titles)
table = grid.table.select("task", "layer", "head", "kind", "token_type", "mean", "std", "n").sort("task", "kind", "head")
charts.show(fig, table, f"token_types_layer{layer}")
st.caption("Rows: each kind, then each kind − standard; columns: tasks in the paper's order. Shared scale: one range "
           "over all tasks and kinds (unsigned kinds 0…m, signed −m…m), the differences their own symmetric range.")
kinds.show_notes(run, selection.kinds)

st.subheader("Averaged over heads")
means = (summary.group_by("task", "kind", "token_type").agg(pl.col("mean").mean())
         .with_columns(pl.col("token_type").cast(pl.Enum(order))).sort("task", "token_type", "kind")
         .with_columns(pl.col("token_type").cast(pl.String)))
for task in groups:
    part = means.filter(pl.col("task") == task)
    fig = charts.bars(part, x="token_type", y="mean", color="kind", colors=KIND_COLORS, names=kinds.LABELS,
                      y_title="mean [CLS]-row weight", height=320)
    fig.update_layout(title=charts.figure_title(f"[CLS]-row weight per token type, mean over heads, layer {layer}",
                                                [task], selection.kinds), margin={"t": 70})
    charts.show(fig, part, f"token_types_mean_{task}_layer{layer}")
