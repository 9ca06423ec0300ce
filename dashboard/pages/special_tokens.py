"""Special tokens (Figs. 5, 6): layer × head attention to [CLS] and to [SEP], both kinds and their difference."""

import polars as pl
import streamlit as st

from dashboard import charts, data, sidebar
from dashboard.charts import Panel

MEASURES = {"cls_weight": "[CLS]", "sep_weight": "[SEP]"}

selection = sidebar.page(
    "Attention to [CLS] and [SEP]",
    ("Per layer × head, the weight on the [CLS] (Fig. 5) or [SEP] (Fig. 6) column averaged over query "
     "tokens and examples; with two [SEP]s the larger column. The paper finds [SEP] loses weight with "
     "effective attention and [CLS] does not."),
    "tasks", "layers", "heads", "kinds")
run = selection.run

task = st.pills("Task", [*selection.tasks, "all"], default=selection.tasks[0], required=True, key="sp_task",
                bind="query-params", help="`all` averages over the selected tasks")
tasks = selection.tasks if task == "all" else (task,)
with st.spinner("Reading head summaries…"):
    summary = data.read(run, "head_summary", tasks=tasks, layer=selection.layers, head=selection.heads,
                        kind=selection.kinds, measure=tuple(MEASURES),
                        columns=("layer", "head", "kind", "measure", "mean", "std"))
if summary.is_empty():
    st.info("No [CLS]/[SEP] measures in this selection.")
    st.stop()
summary = (summary.group_by("layer", "head", "kind", "measure").agg(pl.col("mean").mean(), pl.col("std").mean())
           .sort("measure", "kind", "layer", "head"))
both = {"standard", "effective"} <= set(selection.kinds)
if both:
    diff = (summary.pivot(on="kind", index=["layer", "head", "measure"], values="mean")
            .with_columns((pl.col("effective") - pl.col("standard")).alias("mean"), pl.lit("effective − standard").alias("kind"))
            .select("layer", "head", "kind", "measure", "mean"))
    summary = pl.concat([summary, diff.with_columns(pl.lit(None, pl.Float64).alias("std"))], how="diagonal_relaxed")

for measure, label in MEASURES.items():
    st.subheader(f"Attention to {label}")
    part = summary.filter(pl.col("measure") == measure)
    kinds = [*selection.kinds, *(["effective − standard"] if both else [])]
    panels = []
    for kind in kinds:
        cells = part.filter(pl.col("kind") == kind)
        layers, heads, z = charts.matrix(cells, "mean", row_values=selection.layers, col_values=selection.heads)
        panels.append(Panel(kind, z, heads, layers, diverging=kind != "standard"))
    charts.show(charts.heatmaps(panels, height=140 + 24 * len(selection.layers)),
                part.with_columns(pl.lit(task).alias("task")), f"{measure}_{task}")
    cols = st.columns(len(selection.kinds))
    for col, kind in zip(cols, selection.kinds):
        col.metric(f"mean {label} weight, {kind}", f"{part.filter(pl.col('kind') == kind)['mean'].mean():.3f}")
st.caption("Colour: standard on 0…max; effective and the difference on a diverging scale centred at 0 with a "
           "symmetric range (the paper used each task's min and max effective weight).")
