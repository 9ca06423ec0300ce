"""Cost (Table 3): evaluation time with standard vs effective attention, ours beside the paper's."""

import polars as pl
import streamlit as st

from dashboard import charts, data, paper, sidebar

selection = sidebar.current()
run = selection.run
st.title("What effective attention costs")
st.caption("Evaluation clock time over the dev set with standard attention and with effective attention "
           "substituted (an SVD of V per head and example). The paper's effective runs took about 2× as long.")
sidebar.require(selection, "tasks")

with st.spinner("Reading metrics…"):
    metrics = data.read(run, "metrics", tasks=selection.tasks, metric=("eval_seconds", "examples_per_second"),
                        columns=("task", "kind", "metric", "value", "n_examples"))
rows = []
for task in selection.tasks:
    ours = metrics.filter(pl.col("task") == task)
    get = lambda kind, metric: next(iter(ours.filter((pl.col("kind") == kind) & (pl.col("metric") == metric))["value"]), None)  # noqa: E731
    std, eff = get("standard", "eval_seconds"), get("effective", "eval_seconds")
    paper_times = paper.TABLE3_SECONDS.get(task, {})
    p_std, p_eff = paper_times.get("standard"), paper_times.get("effective")
    n_examples = next(iter(ours["n_examples"]), None)
    rows.append({
        "task": paper.task_label(task), "n_examples": n_examples,
        "ours standard": paper.mmss(std), "ours effective": paper.mmss(eff),
        "ours ratio": eff / std if std and eff else None,
        "ours examples/s standard": get("standard", "examples_per_second"),
        "ours examples/s effective": get("effective", "examples_per_second"),
        "paper standard": paper.mmss(p_std), "paper effective": paper.mmss(p_eff),
        "paper ratio": p_eff / p_std if p_std else None,
        "_std_s": std, "_eff_s": eff})
table = pl.DataFrame(rows, infer_schema_length=None)
if table["_std_s"].is_null().all():
    st.info("No evaluation times in this run yet (the evaluate stage writes eval_seconds).")
    st.stop()

st.subheader("Table 3: evaluation time (m:ss)")
shown = table.drop("_std_s", "_eff_s")
st.dataframe(shown, hide_index=True, width="stretch",
             column_config={"ours ratio": st.column_config.NumberColumn(format="%.2f×"),
                            "paper ratio": st.column_config.NumberColumn(format="%.2f×"),
                            "ours examples/s standard": st.column_config.NumberColumn(format="%.1f"),
                            "ours examples/s effective": st.column_config.NumberColumn(format="%.1f")})

st.subheader("Effective / standard time")
ratios = pl.concat([
    table.select("task", pl.col("ours ratio").alias("ratio"), pl.lit("ours").alias("source")),
    table.select("task", pl.col("paper ratio").alias("ratio"), pl.lit("paper").alias("source")),
]).drop_nulls("ratio")
fig = charts.bars(ratios, x="task", y="ratio", color="source", colors={"ours": "#1f5fbf", "paper": "#999999"},
                  y_title="effective time / standard time", hover_format=".2f")
fig.add_hline(y=2.0, line_dash="dot", line_color="#555", annotation_text="2×")
charts.show(fig, ratios, "cost_ratio")

seconds = pl.concat([
    table.select("task", pl.col("_std_s").alias("seconds"), pl.lit("standard").alias("kind")),
    table.select("task", pl.col("_eff_s").alias("seconds"), pl.lit("effective").alias("kind")),
]).drop_nulls("seconds")
fig = charts.bars(seconds, x="task", y="seconds", color="kind", colors=charts.KIND_COLORS,
                  y_title="our evaluation time (s)", hover_format=".1f")
charts.show(fig, seconds, "cost_seconds")
st.caption(f"Paper: {paper.PAPER_MODEL}, one GTX 1070, full dev sets. Ours: {run.manifest.get('model', '?')} on "
           f"{run.manifest.get('device', '?')}; our dev sets may be smaller (n_examples). Compare the ratios, not "
           "the absolute times.")
