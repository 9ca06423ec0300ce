"""Overview: what was run, dev metrics per attention kind, the findings."""

import polars as pl
import streamlit as st

from dashboard import charts, data, kinds, paper, sidebar
from dashboard.charts import KIND_COLORS
from dashboard.attribution_views import DEPTH_TREND
from dashboard.findings import DIFFERS_TOP1, LOSES_WEIGHT, SAME_SIZE, TIME_METRICS, findings
from precompute.schema import KINDS, TASKS

VERDICT_ICONS = {"holds": "✓ holds", "does not hold": "✗ does not hold", "not computed yet": "… not computed yet"}

selection = sidebar.current()
run, manifest = selection.run, selection.run.manifest

st.title("Effective vs standard attention")
st.caption("Does the part of attention that reaches the output (effective attention) tell a different story "
           "than the attention weights? A replication of Sun & Marasović (2021) on cached runs.")

cols = st.columns([3, 1, 1, 1, 1])
cols[0].metric("Model", str(manifest.get("model", "?")))
cols[1].metric("Layers × heads", f"{run.n_layers} × {run.n_heads}")
cols[2].metric("d_head", str(run.d_head or "?"))
cols[3].metric("Tasks with results", f"{len(run.tasks_with_data())} of {len(run.tasks)}")
cols[4].metric("Device", str(manifest.get("device", "?")))

sidebar.require(selection, "tasks")
tasks = selection.tasks

st.subheader("Findings: the papers' claims on this run")
with st.spinner("Reading analysis tables…"):
    table = findings(run, tasks)
st.table(table.with_columns(pl.col("verdict").replace(VERDICT_ICONS)))
st.caption(f"Paper: {paper.PAPER_MODEL}. Ours: {manifest.get('model', '?')}, tasks {', '.join(map(paper.task_label, tasks))}. "
           f"A pattern claim \"holds\" when our change is at least {SAME_SIZE:.0%} of the paper's (over the same tasks) "
           "in its direction; a smaller one says \"direction holds\" with its size beside the paper's. "
           f"Norm-weighting \"holds\" when the norm-weighted weight is at most {LOSES_WEIGHT:.0%} of standard's; "
           f"attention \"differs markedly\" from attribution when its top-1 key agrees on fewer than {DIFFERS_TOP1:.0%} "
           f"of queries, and the mismatch \"grows with depth\" when Kendall τ(layer, mean JSD) ≥ {DEPTH_TREND}; "
           "\"context\" rows have no paper claim to test.")
kinds.show_notes(run, [kinds.SAMPLED])  # the efficient rows: project-defined, on a sample

st.subheader("Dev metrics per attention kind")
metrics = data.read(run, "metrics", tasks=tasks)
# the selected kinds that were substituted into the model (the evaluate stage decides which)
quality = metrics.filter(~pl.col("metric").is_in(TIME_METRICS) & pl.col("kind").is_in(selection.kinds))
if quality.is_empty():
    st.info("No dev metrics for the selected kinds in this run yet (the evaluate stage writes them).")
else:
    headline = pl.DataFrame([{"task": t, "metric": TASKS[t].metrics[0] if t in TASKS else ""} for t in tasks])
    shown = (quality.join(headline, on=["task", "metric"], how="semi")
             .with_columns(pl.col("task").replace(paper.TASK_LABELS).alias("task_label"))
             .sort(pl.col("task"), pl.col("kind").replace_strict({k: i for i, k in enumerate(KINDS)}, default=99)))
    fig = charts.bars(shown, x="task_label", y="value", color="kind", colors=KIND_COLORS, names=kinds.LABELS,
                      y_title="headline metric")
    fig.update_traces(hovertemplate="%{x}: %{y:.4f}<extra>%{fullData.name}</extra>")
    fig.update_layout(xaxis_title="task (headline metric: " + ", ".join(f"{paper.task_label(t)} {TASKS[t].metrics[0]}" for t in tasks if t in TASKS) + ")")
    charts.show(fig, shown.drop("task_label"), "dev_metrics")
    wide = quality.pivot(on="kind", index=["task", "metric"], values="value")
    present = [kind for kind in KINDS if kind in wide.columns]
    others = [kind for kind in present if kind != kinds.BASE] if kinds.BASE in present else []
    st.dataframe(wide.select("task", "metric", *present, *[(pl.col(k) - pl.col(kinds.BASE)).alias(f"{k} − {kinds.BASE}")
                                                         for k in others]), hide_index=True, width="stretch")

st.subheader("What was run")
summary = data.read(run, "task_summary", tasks=tasks)
counts = manifest.get("row_counts", {})
stage_seconds = manifest.get("stage_seconds", {})
rows = []
for task in tasks:
    row = {"task": paper.task_label(task), **{f"{k} rows": v for k, v in counts.get(task, {}).items()}}
    row.update({f"{k} s": v for k, v in stage_seconds.get(task, {}).items()})
    rows.append(row)
st.dataframe(pl.DataFrame(rows) if rows else pl.DataFrame(), hide_index=True, width="stretch")
if not summary.is_empty():
    st.dataframe(summary, hide_index=True, width="stretch",
                 column_config={"share_le_d_head": st.column_config.NumberColumn("share n ≤ d_head", format="percent"),
                                "prediction_agreement": st.column_config.NumberColumn(format="percent")})
if manifest.get("carve_outs"):
    st.caption("Training splits carved from dev: " + "; ".join(
        f"{paper.task_label(t)}: {c.get('train_rows')} train / {c.get('eval_rows')} eval rows" for t, c in manifest["carve_outs"].items()))
with st.expander("Full manifest"):
    st.json(manifest, expanded=False)
