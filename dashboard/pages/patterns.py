"""Patterns (Table 2, Fig. 4): class shares standard vs effective, the dominant class per head,
example maps of a class, and the classifier's measured F1."""

import polars as pl
import streamlit as st

from dashboard import charts, classifier, data, kinds, maps, paper, sidebar
from dashboard.charts import Panel
from dashboard.pattern_views import SHORT, clicked_cell, grid_figure, table2, table2_figure
from dashboard.share_views import add_error_bars, table2_intervals, table2_numbers
from precompute.schema import PATTERNS

selection = sidebar.page(
    "Attention patterns",
    ("Each map of each head and example is one of five classes (Kovaleva et al. 2019): vertical (weight on "
     "[CLS]/[SEP] columns), diagonal, vertical+diagonal, block (within-sentence), heterogeneous."),
    "tasks", "kinds")
run = selection.run
tasks, shown = selection.tasks, selection.kinds  # shown kinds

with st.spinner("Reading pattern tables…"):
    shares = data.read(run, "pattern_shares", tasks=tasks, kind=shown)
if shares.is_empty():
    st.info("Patterns are not classified yet in this run (the pattern columns are empty). Run the pattern "
            "classifier stage of `python -m precompute` (see its `--help`); meanwhile, the paper's Table 2:")
    st.dataframe(table2(shares, tasks, shown).filter(pl.col("source") == "paper"), hide_index=True)
    st.stop()

st.subheader("Table 2: share of each class, ours beside the paper's")
ignored = sidebar.ignored_filter_note(selection, "Table 2, like the paper's,", "layers", "heads")
if ignored:
    st.info(ignored)
table = table2_numbers(shares, tasks, shown)
charts.show(add_error_bars(table2_figure(table, shown), table, shares, shown), table, "pattern_shares")
st.dataframe(table2_intervals(shares, tasks, shown), hide_index=True, width="stretch")
st.caption("Paper: BERT-base, ~1,000 dev examples per task, Kovaleva et al.'s CNN; standard and effective only. "
           f"Ours: {run.manifest.get('model', '?')}, our classifier (below); n_maps per kind. Where the run has "
           "intervals, ours is the share corrected for the classifier's held-out confusion (adjusted classify-and-"
           "count) with its 95 % interval (examples bootstrapped, the confusion drawn from its Dirichlet); runs "
           "without per-map labels (the sparse runs) show raw shares and no interval. See data/pattern_labels/README.md.")
kinds.show_notes(run, shown)

st.subheader("Classifier accuracy")
classifier.show(run)

st.subheader("Dominant class per head")
sidebar.require(selection, "layers", "heads")
task = st.pills("Task", tasks, default=tasks[0], required=True, key="pt_task", bind="query-params")
grid = data.read(run, "pattern_grid", tasks=(task,), kind=shown, layer=selection.layers, head=selection.heads)


def _on_click() -> None:
    cell = clicked_cell(st.session_state.get("pt_grid"))
    if cell:
        kind, layer, head, pattern = cell
        st.session_state.update(pt_kind=kind, pt_layer=layer, pt_head=head, pt_class=pattern)


if grid.is_empty():
    st.info(f"No pattern_grid rows for {paper.task_label(task)} in this selection.")
else:
    st.caption("Colour = the class most maps of that head fall into; opacity = its share. Click a square to see "
               "example maps of that class from that head below.")
    charts.show(grid_figure(grid, shown, selection.layers, selection.heads, task), grid, f"pattern_grid_{task}",
                key="pt_grid", on_select=_on_click)

st.subheader("Example maps of a class")
# selectboxes (no explicit default) because a grid click sets them through st.session_state
c1, c2, c3, c4, c5 = st.columns(5)
cls = c1.selectbox("Class", PATTERNS, key="pt_class", bind="query-params")
kind = c2.selectbox("Kind", shown, key="pt_kind", bind="query-params")  # kind names: the URL keeps them
layer = c3.selectbox("Layer", ["any", *selection.layers], key="pt_layer", bind="query-params", format_func=str)
head = c4.selectbox("Head", ["any", *selection.heads], key="pt_head", bind="query-params", format_func=str)
scale = charts.scale_toggle(c5)
sample = maps.sample_examples(run, task)
where = {"layer": selection.layers if layer == "any" else layer, "head": selection.heads if head == "any" else head}
hits = data.read(run, "head_measures", tasks=(task,), kind=kind, pattern=cls, example_id=tuple(sample["example_id"]),
                 columns=("example_id", "layer", "head", "pattern_score"), **where)
hits = hits.sort("pattern_score", descending=True, nulls_last=True)
if hits.is_empty():
    st.info(f"No {kinds.label(kind)} map of class {cls} among the {sample.height} sampled examples of {paper.task_label(task)} "
            "for this layer/head: pick another class, head or task.")
    st.stop()
st.caption(f"{hits.height} {kinds.label(kind)} maps of class **{cls}** among the map sample; the 6 most confident:")
top = hits.head(6)
loaded = maps.load_maps(run, task, tuple(top["example_id"]), tuple(top["layer"]), tuple(top["head"]), (kind,))
tokens = {row["example_id"]: row for row in sample.iter_rows(named=True)}
panels = []
for example_id, lay, hd, score in top.iter_rows():
    attn = loaded.get((example_id, lay, hd, kind))
    if attn is None:
        continue
    labels = maps.token_labels(tokens[example_id]["tokens"], attn.shape[0], tokens[example_id]["segment_ids"])
    panels.append(Panel(f"ex {example_id} · L{lay} H{hd}", attn, labels, labels, kind=kind,
                        hover={"x": "key", "y": "query", "z": "weight"}))
title = charts.figure_title(f"The most confident maps of class {cls} (attention weight, query rows × key columns)",
                            [task], [kind])
fig = charts.heatmaps(panels, cols=3, x_title="", y_title="", shared_y=False, square=True, scale=scale, title=title,
                      colorbar_title="attention weight")
fig.update_xaxes(showticklabels=False)
fig.update_yaxes(showticklabels=False)
charts.show(fig, top.with_columns(pl.lit(task).alias("task"), pl.lit(kind).alias("kind")), f"pattern_examples_{task}_{cls}")
st.caption("Open one in the Example explorer (token labels, null component):")
for col, (example_id, lay, hd, _) in zip(st.columns(3) * 2, top.iter_rows()):
    col.page_link("dashboard/pages/explorer.py", label=f"example {example_id} · layer {lay} · head {hd}", icon=":material/search:",
                  query_params=sidebar.link_params(ex_task=task, ex_example=example_id, ex_layer=lay, ex_head=hd))
