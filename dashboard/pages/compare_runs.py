"""Compare runs (issue 18): the sidebar's run beside a second run on their common tasks — facts, the
Findings with a column per run, then pattern shares, token-type weights and special-token attention
next to each other, each panel titled with its run, d_head and share of inputs with n ≤ d_head."""

import streamlit as st

from dashboard import charts, data, kinds, paper, run_compare, sidebar
from dashboard.findings import TOKEN_TYPES
from dashboard.run_compare import SPECIAL_TOKENS

VS_KEY = "vs"  # widget key and URL query parameter of the second run: ?run=minilm&vs=mpnet
HOW_TO_ADD = ("python -m precompute --model mpnet --tasks rte,mrpc,sst2 --glue-dir ../shared/glue "
              "--out data/<name>")

selection = sidebar.page(
    "Compare runs",
    ("The sidebar's run beside a second run on the tasks both have: do the papers' claims hold on both? "
     "Effective attention equals standard attention on inputs with n ≤ d_head tokens, so each run's d_head and "
     "its share of such inputs are named on every panel."),
    "tasks", "kinds")
first = selection.run
requested = st.query_params.get(VS_KEY)  # before the bound widget drops a value it does not offer
others = [data.load_run(name, location) for name, location in data.discover_runs().items() if name != first.name]
if not others:
    st.info(f"Only one run ({first.name}) under {data.data_location()}: make a second one to compare with, e.g. "
            f"`{HOW_TO_ADD}`, then reload this page.")
    st.dataframe(run_compare.facts([first], selection.tasks), hide_index=True, width="stretch")
    st.stop()

names = [run.name for run in others]
partner = run_compare.default_partner(first, others)
name = st.selectbox("Compare with", names, index=names.index(partner.name), key=VS_KEY, bind="query-params",
                    help=f"Run folders under {data.data_location()} other than the sidebar's run; by default the "
                         "first one made from another model")
if requested is not None and requested not in names:
    why = ("is the sidebar's run itself" if requested == first.name
           else f"is not a run under {data.data_location()} (choose from {', '.join(names)})")
    st.warning(f"?{VS_KEY}={requested} {why}: showing {name} instead; pick the second run above.")
second = next(run for run in others if run.name == name)
pair = (first, second)

split = run_compare.split_tasks(selection.tasks, second)
if run_compare.dropped_note(split, second):
    st.info(run_compare.dropped_note(split, second))
if not split.common:
    st.warning(f"{first.name} and {second.name} have no task in common among the sidebar's tasks; {second.name} has "
               f"results for {', '.join(map(paper.task_label, second.tasks_with_data())) or 'no task yet'}: select "
               "one of those in the sidebar, or compare with another run.")
    st.stop()
tasks = split.common
ignored = sidebar.ignored_filter_note(selection, "This page", "layers", "heads")
if ignored:  # the sidebar's layers and heads are the first run's; the second may have others
    st.info(ignored)

st.subheader("The two runs")
st.dataframe(run_compare.facts(pair, tasks), hide_index=True, width="stretch")

st.subheader("Findings: the papers' claims on each run")
with st.spinner("Reading analysis tables…"):
    st.table(run_compare.findings_side_by_side(pair, tasks))
st.caption(f"Paper: {paper.PAPER_MODEL}. Each run's cell: the verdict, then its number, over "
           f"{', '.join(map(paper.task_label, tasks))} (the Overview explains each verdict's rule); "
           f"{run_compare.MISSING} where that run has no such row.")

shorts = {run.name: run_compare.short_inputs(run, tasks) for run in pair}
st.subheader("Pattern shares")
shares = {run.name: data.read(run, "pattern_shares", tasks=tasks, kind=selection.kinds) for run in pair}
drawn = {run.name: run_compare.pattern_figure(run, shares[run.name], tasks, selection.kinds,
                                              run_compare.heading(run, shorts[run.name]))
         for run in pair if not shares[run.name].is_empty()}
top = max((run_compare.bar_top(fig) for fig, _ in drawn.values()), default=100.0)
for column, run in zip(st.columns(2), pair):
    with column:
        if run.name not in drawn:
            st.warning(run_compare.stage_hint(run, "pattern_shares", tasks))
            continue
        fig, table = drawn[run.name]
        charts.show(fig.update_yaxes(range=[0, 1.02 * top]), table, f"compare_pattern_shares_{run.name}")
st.caption("Share of maps per pattern class (Table 2), each run's own classification, on one y range; with 95 % "
           "error bars where the run has intervals. The paper's shares are on the Patterns page.")

st.subheader("Per head, one task")
left, middle, right = st.columns(3)
task = left.pills("Task", tasks, default=tasks[0], required=True, key="cmp_task", bind="query-params",
                  help="The task of the per-head figures below")
token = middle.segmented_control("Special token", list(SPECIAL_TOKENS.values()), default="[SEP]", required=True,
                                 key="cmp_token", bind="query-params", help="The column whose weight is shown")
scale = charts.scale_toggle(right)
layers = f"{first.n_layers} vs {second.n_layers}"
st.caption((f"The runs' layers differ ({layers}): each run is drawn on its own layer axis, and the token types at each "
            "run's final layer." if first.n_layers != second.n_layers else
            f"Both runs have {first.n_layers} layers; the token types are at the final layer.")
           + " Shared scale: one colour range over both runs (the colours compare across runs).")


def show_side_by_side(table: str, parts, *, rows: str, row_values, measure: str, title: str, name: str) -> None:
    """The two runs' grids in one figure (one column per run), or a hint naming the run that lacks the rows."""
    empty = [run for run, _, frame in parts if frame.is_empty()]
    for run in empty:
        st.warning(run_compare.stage_hint(run, table, (task,)))
    if empty:
        return
    grid = run_compare.side_by_side(parts, "mean", selection.kinds, rows=rows, row_values=row_values, measure=measure)
    fig = charts.heatmaps(grid.panels, cols=2, shared_y=False, height=grid.height, scale=scale, colorbar_title=measure,
                          title=charts.figure_title(title, [task], selection.kinds), row_titles=grid.row_titles,
                          y_title="token type" if rows == "token_type" else "layer")
    charts.show(run_compare.separate_columns(fig, len(grid.panels), same_rows=rows == "token_type"), grid.table, name)


def task_heading(run, extra: str = "") -> str:
    return run_compare.heading(run, shorts[run.name].filter(task=task), extra)


st.subheader("Token types in the [CLS] row")
show_side_by_side("head_summary", [(run, task_heading(run, f"layer {run.n_layers - 1}"),
                                    run_compare.token_type_summary(run, task, selection.kinds)) for run in pair],
                  rows="token_type", row_values=[list(TOKEN_TYPES.values())] * 2, measure="[CLS]-row weight",
                  title="[CLS] query row: weight per token type, each run's final layer (Fig. 1)",
                  name=f"compare_token_types_{task}")

st.subheader(f"Attention to {token}")
measure = next(key for key, shown in SPECIAL_TOKENS.items() if shown == token)
show_side_by_side("head_summary", [(run, task_heading(run), run_compare.special_token_summary(run, task, selection.kinds,
                                                                                              measure)) for run in pair],
                  rows="layer", row_values=[list(range(run.n_layers)) for run in pair], measure=f"weight on {token}",
                  title=f"Attention to {token} per layer × head (mean over queries and examples; Figs. 5, 6)",
                  name=f"compare_{measure}_{task}")
kinds.show_notes(first, selection.kinds)
