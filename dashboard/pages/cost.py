"""Cost (Table 3): evaluation time with standard vs effective attention, ours beside the paper's."""

import polars as pl
import streamlit as st

from dashboard import charts, data, kinds, paper, sidebar
from dashboard.findings import eval_times

selection = sidebar.page(
    "What effective attention costs",
    ("Evaluation clock time over the dev set with standard attention and with effective attention "
     "substituted (an SVD of V per head and example). The paper's effective runs took about 2× as long."),
    "tasks")
run = selection.run

with st.spinner("Reading metrics…"):
    # all metrics, as the Overview reads them: one cache entry serves both pages
    metrics = data.read(run, "metrics", tasks=selection.tasks)
times = eval_times(metrics, selection.tasks)
if times["standard_eval_seconds"].is_null().all():
    st.info("No evaluation times in this run yet (the evaluate stage writes eval_seconds).")
    st.stop()


def table3_row(ours: dict) -> dict:
    """Ours beside the paper's Table 3 for one task."""
    paper_times = paper.TABLE3_SECONDS.get(ours["task"], {})
    p_std, p_eff = paper_times.get("standard"), paper_times.get("effective")
    return {
        "task": paper.task_label(ours["task"]), "n_examples": ours["n_examples"],
        "ours standard": paper.mmss(ours["standard_eval_seconds"]),
        "ours effective": paper.mmss(ours["effective_eval_seconds"]),
        "ours ratio": ours["ratio"],
        "ours examples/s standard": ours["standard_examples_per_second"],
        "ours examples/s effective": ours["effective_examples_per_second"],
        "paper standard": paper.mmss(p_std), "paper effective": paper.mmss(p_eff),
        "paper ratio": p_eff / p_std if p_std else None}


table = pl.DataFrame([table3_row(ours) for ours in times.iter_rows(named=True)], infer_schema_length=None)

st.subheader("Table 3: evaluation time (m:ss)")
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"ours ratio": st.column_config.NumberColumn(format="%.2f×"),
                            "paper ratio": st.column_config.NumberColumn(format="%.2f×"),
                            "ours examples/s standard": st.column_config.NumberColumn(format="%.1f"),
                            "ours examples/s effective": st.column_config.NumberColumn(format="%.1f")})

st.subheader("Effective / standard time")
ratios = pl.concat([
    table.select("task", pl.col("ours ratio").alias("ratio"), pl.lit("ours").alias("source")),
    table.select("task", pl.col("paper ratio").alias("ratio"), pl.lit("paper").alias("source")),
]).drop_nulls("ratio")
fig = charts.bars(ratios, x="task", y="ratio", color="source", colors=charts.SOURCE_COLORS,
                  y_title="effective time / standard time", hover_format=".2f")
fig.add_hline(y=2.0, line_dash="dot", line_color="#555", annotation_text="2×")
charts.show(fig, ratios, "cost_ratio")

seconds = pl.concat([
    times.select(pl.col("task").replace(paper.TASK_LABELS),
                 pl.col(f"{kind}_eval_seconds").alias("seconds"), pl.lit(kind).alias("kind"))
    for kind in ("standard", "effective")
]).drop_nulls("seconds")
fig = charts.bars(seconds, x="task", y="seconds", color="kind", colors=charts.KIND_COLORS, names=kinds.LABELS,
                  y_title="our evaluation time (s)", hover_format=".1f")
charts.show(fig, seconds, "cost_seconds")
st.caption(f"Paper: {paper.PAPER_MODEL}, one GTX 1070, full dev sets. Ours: {run.manifest.get('model', '?')} on "
           f"{run.manifest.get('device', '?')}; our dev sets may be smaller (n_examples). Compare the ratios, not "
           "the absolute times.")
