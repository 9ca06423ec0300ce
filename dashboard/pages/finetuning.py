"""Finetuning (Fig. 3): cosine similarity of each head's map before and after finetuning, per layer with its
spread, and per head as the paper's grid (tasks across, kinds and their differences from standard down)."""

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from dashboard import charts, data, kinds, paper, sidebar
from dashboard.charts import FITTED, KIND_COLORS

STATISTICS = {"mean": "cosine similarity to pretrained", "std": "std of the cosine across examples",
              "IQR": "IQR of the cosine across examples"}

selection = sidebar.page(
    "What finetuning changes",
    ("Per layer × head, the cosine similarity between the flattened maps of the pretrained and the "
     "finetuned model on the same input, averaged over examples. Low = changed most. The paper (Fig. 3) "
     "finds the last two layers change most, for both kinds."),
    "tasks", "layers", "heads", "kinds")
run = selection.run

with st.spinner("Reading head summaries…"):
    summary = data.read(run, "head_summary", tasks=selection.tasks, layer=selection.layers, head=selection.heads,
                        kind=selection.kinds, measure="pretrained_cosine",
                        columns=("task", "layer", "head", "kind", "mean", "std", "q25", "q75"))
if summary.is_empty():
    st.info("No pretrained_cosine measures in this selection (the extract stage writes them).")
    st.stop()

st.subheader("Per layer: mean over heads, with the spread across examples")
per_layer = (summary.group_by("task", "kind", "layer")
             .agg(pl.col("mean").mean(), pl.col("std").mean(), pl.col("q25").mean(), pl.col("q75").mean())
             .sort("task", "kind", "layer"))
fig = go.Figure()
dashes = ["solid", "dash", "dot", "dashdot", "longdash"]
for i, task in enumerate(selection.tasks):
    for kind in selection.kinds:
        part = per_layer.filter((pl.col("task") == task) & (pl.col("kind") == kind))
        if part.is_empty():
            continue
        fig.add_trace(go.Scatter(
            x=part["layer"].to_list(), y=part["mean"].to_list(), mode="lines+markers",
            name=f"{paper.task_label(task)} · {kinds.label(kind)}", line={"color": KIND_COLORS.get(kind), "dash": dashes[i % 5]},
            error_y={"type": "data", "array": part["std"].to_list(), "thickness": 1},
            customdata=part.select("q25", "q75", "std").rows(),
            hovertemplate="layer %{x}: %{y:.3f}<br>sd %{customdata[2]:.3f}, IQR %{customdata[0]:.3f}–%{customdata[1]:.3f}"
                          f"<extra>{paper.task_label(task)} · {kinds.label(kind)}</extra>"))
fig.update_layout(height=430, xaxis_title="layer", yaxis_title="cosine similarity to pretrained",
                  xaxis={"tickvals": list(selection.layers)}, margin={"l": 10, "r": 10, "t": 70, "b": 10},
                  title=charts.figure_title("Cosine similarity of each head's map before vs after finetuning, mean "
                                            "over the layer's heads", selection.tasks, selection.kinds))
charts.show(fig, per_layer, "finetuning_per_layer")
st.caption("Error bars: standard deviation across examples, averaged over the layer's heads. Colour = kind, "
           "dash = task.")

st.subheader("Per head: the paper's Fig. 3 grid")
c1, c2, c3 = st.columns(3)
view = c1.segmented_control("View", ["per task", "averaged over tasks"], default="per task", required=True,
                            key="ft_view", bind="query-params", help="per task: one column per task, as in the paper")
statistic = c2.segmented_control("Show", list(STATISTICS), default="mean", required=True, key="ft_stat",
                                 bind="query-params", help="mean similarity, or its spread across examples")
scale = charts.scale_toggle(c3)
part = summary.with_columns((pl.col("q75") - pl.col("q25")).alias("IQR"))
if view == "averaged over tasks":
    part = (part.group_by("layer", "head", "kind").agg(pl.col("mean", "std", "q25", "q75", "IQR").mean())
            .with_columns(pl.lit("all selected").alias("task")))
measure = STATISTICS[statistic]
# the mean cosine is FITTED (mostly above 0.5: from 0, every head would look alike); the spreads start at 0
grid = charts.kind_grid(part, statistic, selection.kinds, row_values=selection.layers, col_values=selection.heads,
                        colour=FITTED if statistic == "mean" else None, measure=measure)
title = charts.figure_title(f"{measure[0].upper()}{measure[1:]} per layer × head (Fig. 3)",
                            part["task"].unique().to_list(), selection.kinds)
charts.show(charts.heatmaps(grid.panels, cols=grid.cols, height=grid.height(), scale=scale, title=title,
                            colorbar_title=measure, row_titles=grid.row_titles),
            grid.table.with_columns(pl.lit("pretrained_cosine").alias("measure"), pl.lit(statistic).alias("shown"))
            .sort("task", "kind", "layer", "head"), f"finetuning_heads_{statistic}_{view.replace(' ', '_')}")
st.caption("Rows: each kind, then each kind − standard (negative: that kind changed more than standard attention); "
           "columns: tasks in the paper's order. The mean similarity's colours run from the lowest to the highest "
           "value shown (not from 0); the spreads from 0.")
kinds.show_notes(run, selection.kinds)
