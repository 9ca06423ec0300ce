"""Attribution (Pascual, Brunner & Wattenhofer 2021): each head's attention row of every kind vs the gradient
attribution of the head's output to the input tokens, per layer × head and per layer; and the input
tokens' influence on each layer's output (Meister et al. 2021, Table 1)."""

import polars as pl
import streamlit as st

from dashboard import attribution_views as views
from dashboard import charts, data, kinds, paper, sidebar

selection = sidebar.page(
    "Attention vs gradient attribution",
    ("Does a head's attention row say which input tokens shape its output? Pascual et al. (2021) find that the "
     "gradient attribution of a head's output to the input tokens differs markedly from its attention (the "
     "context is mixed across layers), the more so in deeper layers, with some patterns persisting through all "
     "layers. Per layer × head and kind: the discrepancy between the attention row and the attribution row, "
     "averaged over queries and examples."),
    "tasks", "layers", "heads", "kinds")
run = selection.run

task = st.pills("Task", [*selection.tasks, "all"], default="all", required=True, key="at_task", bind="query-params",
                help="`all` averages over the selected tasks")
tasks = selection.tasks if task == "all" else (task,)
with st.spinner("Reading attribution summaries…"):
    summary = views.read_summary(run, tasks, layer=selection.layers, head=selection.heads, kind=selection.kinds)
if summary.is_empty():
    st.info(views.how_to_make(run, tasks))
    st.stop()
missing = tuple(t for t in tasks if t not in set(summary["task"]))
if missing:
    st.info(views.how_to_make(run, missing))

# options are the measure names, not their labels: a URL-bound widget writes what it shows into the URL (?at_measure=jsd)
measure = st.selectbox("Discrepancy measure", list(views.MEASURES), key="at_measure", bind="query-params",
                       help="jsd = Jensen–Shannon divergence (lower = closer); kendall_tau = Kendall τ-b of the two rows' "
                            "rankings, top1_agreement = share of queries whose largest entries fall on the same token "
                            "(higher = closer)")
shown = tuple(k for k in selection.kinds if k in set(summary["kind"]))
present = [t for t in tasks if t not in missing]
for column, name in zip(st.columns(max(len(present), 1)), present):
    size = views.sample_size(run, name, summary)
    column.metric(f"attribution sample, {paper.task_label(name)}", "?" if size is None else f"{size} examples")
st.caption(views.RECIPE_NOTE)

st.subheader(f"{views.MEASURES[measure]} per layer × head")
scale = charts.scale_toggle()
panels, cells = views.head_panels(summary, measure, shown, selection.layers, selection.heads)
title = charts.figure_title(f"{views.MEASURES[measure]} between each head's attention row and its attribution row",
                            present, shown)
charts.show(charts.heatmaps(panels, cols=len(shown), height=(140 + 24 * len(selection.layers)) * (1 + (len(panels) > len(shown))),
                            scale=scale, title=title, colorbar_title=views.UNITS[measure]),
            cells.with_columns(pl.lit(task).alias("task"), pl.lit(measure).alias("measure")), f"attribution_{measure}_{task}")
st.caption("First row: each kind; below it, that kind − standard. Shared scale: one colour range for all kinds, so that "
           "they compare by colour, the differences their own. "
           + ("Lower = the attention row is closer to the attribution row." if views.MISMATCH_SIGN[measure] > 0 else
              "Higher = the attention row agrees better with the attribution row."))

st.subheader("Per layer: does the mismatch grow with depth? Which kind agrees best?")
layered = views.per_layer(summary, measure)
fig = views.per_layer_figure(layered, shown, measure)
fig.update_layout(title=charts.figure_title(f"Mean {views.MEASURES[measure]} per layer", present, shown), margin={"t": 70})
charts.show(fig, layered, f"attribution_per_layer_{measure}_{task}")
table = views.trends(layered, measure, shown)
st.markdown(views.sentence(table, measure))
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"tau_layer": st.column_config.NumberColumn("τ (layer, mean)", format="%+.2f"),
                            "slope_per_layer": st.column_config.NumberColumn("slope per layer", format="%+.4f"),
                            "mean": st.column_config.NumberColumn(f"mean {views.MEASURES[measure]}", format="%.3f")})
st.caption("Error bars: standard deviation across the layer's heads (each head averaged over examples and tasks).")

st.subheader("Influence of the input tokens on each layer's output (Meister et al. 2021, Table 1)")
influence = data.read(run, "influence_summary", tasks=tasks, layer=selection.layers)
if influence.is_empty():
    st.info(views.how_to_make(run, tasks))
else:
    fig = views.influence_figure(influence, views.chance_own_share(run, tasks))
    fig.update_layout(title=charts.figure_title("Influence of the input tokens on each layer's output (gradient "
                                                "attribution)", influence["task"].unique().to_list()),
                      height=420, margin={"t": 90})
    charts.show(fig, influence, f"influence_{task}")
    st.caption("Same recipe with h = the hidden state after the layer at position i: own-token share = g(i, i), how much "
               "a position's own input token shapes it (dotted: 1/n, a uniform share); entropy of g(i, ·) / log n: "
               "1 = every input token alike, 0 = one token. Error bars: standard deviation across examples.")
kinds.show_notes(run, shown)
