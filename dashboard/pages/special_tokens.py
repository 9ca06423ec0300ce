"""Special tokens (Figs. 5, 6): layer × head attention to [CLS], [SEP] and punctuation, every selected
kind and each kind's difference from standard."""

import polars as pl
import streamlit as st

from dashboard import charts, data, kinds, sidebar
from dashboard.charts import DIFFERENCE, Panel

MEASURES = {"cls_weight": "[CLS]", "sep_weight": "[SEP]", "punct_weight": "punctuation"}

selection = sidebar.page(
    "Attention to [CLS] and [SEP]",
    ("Per layer × head, the weight on the [CLS] (Fig. 5) or [SEP] (Fig. 6) column, or on all punctuation "
     "columns, averaged over query tokens and examples; with two [SEP]s the larger column. The paper finds "
     "[SEP] loses weight with effective attention and [CLS] does not; Kobayashi et al. (2020) find all three "
     "carry little weight once weighted by the norm of what they pass on."),
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
# each other selected kind minus standard, per head (only when standard is selected too)
others = [kind for kind in selection.kinds if kind != kinds.BASE] if kinds.BASE in selection.kinds else []
wide = summary.pivot(on="kind", index=["layer", "head", "measure"], values="mean")
diffs = [wide.select("layer", "head", pl.lit(f"{kind} − {kinds.BASE}").alias("kind"), "measure",
                     (pl.col(kind) - pl.col(kinds.BASE)).alias("mean"))
         for kind in others if kind in wide.columns and kinds.BASE in wide.columns]
summary = pl.concat([summary, *diffs], how="diagonal_relaxed")
titles = {**kinds.LABELS, **{f"{kind} − {kinds.BASE}": kinds.difference(kind) for kind in others}}

for measure, label in MEASURES.items():
    st.subheader(f"Attention to {label}")
    part = summary.filter(pl.col("measure") == measure)
    if part.is_empty():
        st.info(f"No {measure} rows in this selection (caches before schema version 2 lack punct_weight).")
        continue
    # kinds in the first row, each one's difference from standard below it (nothing under standard)
    names = [*selection.kinds, *([None, *(f"{kind} − {kinds.BASE}" for kind in others)] if others else [])]
    panels = []
    for name in names:
        if name is None:
            panels.append(None)
            continue
        cells = part.filter(pl.col("kind") == name)
        layers, heads, z = charts.matrix(cells, "mean", row_values=selection.layers, col_values=selection.heads)
        panels.append(Panel(titles[name], z, heads, layers, kind=name if name in selection.kinds else DIFFERENCE))
    rows = 2 if others else 1
    charts.show(charts.heatmaps(panels, cols=len(selection.kinds), height=(110 + 24 * len(selection.layers)) * rows + 30),
                part.with_columns(pl.lit(task).alias("task")), f"{measure}_{task}")
    columns = st.columns(len(selection.kinds))
    for column, kind in zip(columns, selection.kinds):
        mean = part.filter(pl.col("kind") == kind)["mean"].mean()
        column.metric(f"mean {label} weight, {kinds.label(kind)}", "–" if mean is None else f"{mean:.3f}")
st.caption("Colour: unsigned kinds on 0…max; signed kinds and the differences on a diverging scale centred at 0 with a "
           "symmetric range (the paper used each task's min and max effective weight).")
kinds.show_notes(run, selection.kinds)
