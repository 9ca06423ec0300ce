"""Finetuning (Fig. 3): cosine similarity of each head's map before and after finetuning, with spread."""

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from dashboard import charts, data, kinds, paper, sidebar
from dashboard.charts import KIND_COLORS, Panel

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
fig.update_layout(height=400, xaxis_title="layer", yaxis_title="cosine similarity to pretrained",
                  xaxis={"tickvals": list(selection.layers)}, margin={"l": 10, "r": 10, "t": 30, "b": 10})
charts.show(fig, per_layer, "finetuning_per_layer")
st.caption("Error bars: standard deviation across examples, averaged over the layer's heads. Colour = kind, "
           "dash = task.")

st.subheader("Per head")
task = st.pills("Task", [*selection.tasks, "all"], default=selection.tasks[0], required=True, key="ft_task",
                bind="query-params", help="`all` averages over the selected tasks")
statistic = st.segmented_control("Show", ["mean", "std", "IQR"], default="mean", required=True, key="ft_stat",
                                 bind="query-params", help="mean similarity, or its spread across examples")
part = summary if task == "all" else summary.filter(pl.col("task") == task)
part = (part.group_by("layer", "head", "kind").agg(pl.col("mean", "std", "q25", "q75").mean())
        .with_columns((pl.col("q75") - pl.col("q25")).alias("IQR")).sort("kind", "layer", "head"))
panels = []
for kind in selection.kinds:
    cells = part.filter(pl.col("kind") == kind)
    layers, heads, z = charts.matrix(cells, statistic, row_values=selection.layers, col_values=selection.heads)
    # a cosine, not an attention weight: kind=None puts every kind on the same sequential rule
    panels.append(Panel(f"{kinds.label(kind)} · {statistic}", z, heads, layers,
                        hover={"x": "head", "y": "layer", "z": statistic}))
charts.show(charts.heatmaps(panels, height=140 + 24 * len(selection.layers)),
            part.with_columns(pl.lit(task).alias("task")), f"finetuning_heads_{task}")
kinds.show_notes(run, selection.kinds)
