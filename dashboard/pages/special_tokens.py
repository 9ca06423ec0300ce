"""Special tokens (Figs. 5, 6): layer × head attention to [CLS], [SEP] and punctuation, as the paper's grid
(one column per task, one row per kind) with each kind's difference from standard below."""

import polars as pl
import streamlit as st

from dashboard import charts, data, kinds, sidebar

MEASURES = {"cls_weight": "[CLS]", "sep_weight": "[SEP]", "punct_weight": "punctuation"}

selection = sidebar.page(
    "Attention to [CLS] and [SEP]",
    ("Per layer × head, the weight on the [CLS] (Fig. 5) or [SEP] (Fig. 6) column, or on all punctuation "
     "columns, averaged over query tokens and examples; with two [SEP]s the larger column. The paper finds "
     "[SEP] loses weight with effective attention and [CLS] does not; Kobayashi et al. (2020) find all three "
     "carry little weight once weighted by the norm of what they pass on."),
    "tasks", "layers", "heads", "kinds")
run = selection.run

left, right = st.columns(2)
view = left.segmented_control("View", ["per task", "averaged over tasks"], default="per task", required=True,
                              key="sp_view", bind="query-params", help="per task: one column per task, as in the paper")
scale = charts.scale_toggle(right)
with st.spinner("Reading head summaries…"):
    summary = data.read(run, "head_summary", tasks=selection.tasks, layer=selection.layers, head=selection.heads,
                        kind=selection.kinds, measure=tuple(MEASURES),
                        columns=("task", "layer", "head", "kind", "measure", "mean", "std", "n"))
if summary.is_empty():
    st.info("No [CLS]/[SEP] measures in this selection.")
    st.stop()
if view == "averaged over tasks":
    summary = (summary.group_by("layer", "head", "kind", "measure").agg(pl.col("mean", "std").mean(), pl.col("n").sum())
               .with_columns(pl.lit("all selected").alias("task")))

for measure, token in MEASURES.items():
    st.subheader(f"Attention to {token}")
    part = summary.filter(pl.col("measure") == measure)
    if part.is_empty():
        st.info(f"No {measure} rows in this selection (caches before schema version 2 lack punct_weight).")
        continue
    weight = f"weight on {token}"
    grid = charts.kind_grid(part, "mean", selection.kinds, row_values=selection.layers, col_values=selection.heads,
                            measure=weight, detail=("std", "n"))
    title = charts.figure_title(f"Attention to {token} per layer × head (mean over queries and examples)",
                                part["task"].unique().to_list(), selection.kinds)
    fig = charts.heatmaps(grid.panels, cols=grid.cols, height=grid.height(), scale=scale, title=title,
                          colorbar_title=weight, row_titles=grid.row_titles)
    charts.show(fig, grid.table.sort("task", "kind", "layer", "head"), f"{measure}_{view.replace(' ', '_')}")
    columns = st.columns(len(selection.kinds))
    for column, kind in zip(columns, selection.kinds):
        mean = part.filter(pl.col("kind") == kind)["mean"].mean()
        column.metric(f"mean {token} weight, {kinds.label(kind)}", "–" if mean is None else f"{mean:.3f}",
                      help=f"mean weight on {token}, {kinds.label(kind)}, over the selected tasks, layers and heads")
st.caption("Colour: unsigned kinds on 0…m, signed kinds and the differences (kind − standard, rows below the kinds) "
           "on a diverging scale centred at 0 with a symmetric range. Shared scale: one m over all tasks and kinds, "
           "the differences their own; per panel: each panel its own range (the paper used each task's min and "
           "max effective weight).")
kinds.show_notes(run, selection.kinds)
