"""Example explorer (Figs. 2, 7): one example, one head (the sidebar's Layer and Head), every selected
kind side by side on one colour scale, every token labelled, and a readable view of a range of rows."""

import numpy as np
import polars as pl
import streamlit as st

from dashboard import charts, data, kinds, map_figures, maps, paper, sidebar
from dashboard.attribution_views import RECIPE
from dashboard.map_figures import MapPanel
from precompute.schema import KINDS

SHOWN_MEASURES = ("support_share", "cls_weight", "sep_weight", "punct_weight", "entropy")  # per kind, this head
NULL_TITLE = "null A − A_eff"
LAST_ROWS = 8  # rows of the row-range view at first: the paper's Fig. 2 shows the last rows

selection = sidebar.page(
    "Example explorer",
    ("Standard attention A, effective attention A_eff (the part of A that reaches the output, A_eff·V = A·V), "
     "the null component A − A_eff (in the left null space of V: it changes nothing), and the other selected "
     "views of the same head: norm-weighted (Kobayashi et al. 2020), its effective counterpart, and efficient "
     "attention (a sparse distribution with the same head output). Layer and head: in the sidebar."),
    "tasks", "layers", "heads", "kinds")
run, layer, head, d_head = selection.run, selection.layers[0], selection.heads[0], selection.run.d_head

task = st.pills("Task", selection.tasks, default=selection.tasks[0], required=True, key="ex_task",
                bind="query-params")
sample = maps.sample_examples(run, task)
if sample.is_empty():
    st.info(f"No stored maps for {paper.task_label(task)}: the extract stage stores full maps for a small sample.")
    st.stop()
texts = {row["example_id"]: row for row in sample.iter_rows(named=True)}

f1, f2, f3 = st.columns([1, 1, 2])
long_only = f1.toggle(f"only n > d_head ({d_head})", key="ex_long", bind="query-params",
                      help="Where n ≤ d_head, effective attention equals standard attention")
wrong_only = f2.toggle("only mispredicted", key="ex_wrong", bind="query-params",
                       help="Wrong class; for STS-B a score at least 1 point from the label")
picker = maps.filter_examples(maps.example_table(sample, task), longer_than=d_head if long_only else None,
                              only_wrong=wrong_only)
if picker.is_empty():
    st.info(f"No example of the {len(sample)} stored for {task} matches the filters: switch one off.")
    st.stop()
ids = picker["id"].to_list()


def pick_row() -> None:  # a click in the table picks that example
    rows = st.session_state["ex_pick"].selection.rows
    if rows:
        st.session_state["ex_example"] = ids[rows[0]]


example_id = f3.selectbox("Example (id in the dev split)", ids, key="ex_example", bind="query-params",
                          help="Or click a row of the table below")
st.dataframe(picker, key="ex_pick", on_select=pick_row, selection_mode="single-row", hide_index=True,
             height=min(36 * (len(picker) + 1) + 2, 300), width="stretch",
             column_config={"correct": st.column_config.CheckboxColumn("correct?"),
                            "text": st.column_config.TextColumn("text (first words)", width="large")})
row = texts[example_id]
# standard and effective are always loaded: the null component and the head facts need them
wanted = tuple(kind for kind in KINDS if kind in selection.kinds or kind in ("standard", "effective"))
with st.spinner("Loading maps…"):
    loaded = {kind: weights for (_, _, _, kind), weights in
              maps.load_maps(run, task, (example_id,), (layer,), (head,), wanted).items()}
    measures = data.read(run, "head_measures", tasks=(task,), example_id=example_id, layer=layer, head=head,
                         kind=wanted, columns=("kind", "rank", "nullity", "null_norm", *SHOWN_MEASURES))
    attribution = maps.load_attribution(run, task, example_id, layer, head)  # None before the attribute stage
if not loaded:
    st.info(f"No stored maps for example {example_id}, layer {layer}, head {head}: pick another example or head.")
    st.stop()
attn, attn_eff = loaded.get("standard"), loaded.get("effective")
n = next(iter(loaded.values())).shape[0]

st.markdown(f"**Example {example_id}** (n = {n} tokens) · layer {layer}, head {head}  \n**A:** {row['text_a'] or ''}"
            + (f"  \n**B:** {row['text_b']}" if row["text_b"] else ""))
facts = measures.filter(pl.col("kind") == "standard")  # rank, nullity and null_norm are properties of the head
fact = {name: (facts[name][0] if not facts.is_empty() else None) for name in ("rank", "nullity", "null_norm")}
# stored from the full-precision maps; the stored maps are rounded, so recomputing is only a fallback
null_norm = fact["null_norm"] if fact["null_norm"] is not None else (
    float(np.linalg.norm(attn - attn_eff)) if attn is not None and attn_eff is not None else None)
cols = st.columns(6)
cols[0].metric("tokens n", n)
cols[1].metric("d_head", d_head if d_head is not None else "?")
cols[2].metric("rank of V", fact["rank"] if fact["rank"] is not None else "?")
cols[3].metric("nullity (n − rank)", fact["nullity"] if fact["nullity"] is not None else "?")
cols[4].metric("‖A − A_eff‖", f"{null_norm:.3f}" if null_norm is not None else "?")
cols[5].metric("label / pred (std, eff)", f"{row['label']:g} / {row['prediction']:g}, {row['prediction_effective']:g}")
if (d_head is not None and n <= d_head) or fact["nullity"] == 0:
    st.info(f"Here n = {n} ≤ d_head = {d_head} (nullity {fact['nullity']}): V's left null space is empty, so effective "
            "attention is identical to standard attention and the null component is zero (likewise effective "
            "norm-weighted = norm-weighted, and efficient = standard: the constraints leave it no freedom).")


def missing_reason(kind: str) -> str:
    """Why this head has no stored map of ``kind`` (never an error: the other kinds still show)."""
    shipped = maps.shipped_map_kinds(run)
    if shipped is not None and kind not in shipped:
        return (f"this copy of the run keeps only the {', '.join(map(kinds.label, shipped))} maps of its explorer "
                "sample (data/ size); a run of `python -m precompute` stores every kind")
    if kind == kinds.SAMPLED and row.get("in_efficient_sample") is False:
        return f"example {example_id} is outside the efficient sample. {kinds.sample_note(run)}"
    return ("this run's maps table has none (caches written before the kind existed, or extract did not store "
            "it): re-run `python -m precompute ... --force --stages extract,attribute,importance,analyse` to add it")


labels = maps.token_labels(row["tokens"], n, row["segment_ids"])
panels, same, missing = [], [], {}
for kind in (kind for kind in KINDS if kind in selection.kinds):
    if kind not in loaded:
        missing.setdefault(missing_reason(kind), []).append(kinds.label(kind))
        continue
    twin = next((p.title for p in panels if p.attention and map_figures.same_map(p.z, loaded[kind])), None)
    if twin is not None:  # one panel, not two that only the colour rule could make look different
        same.append(f"{kinds.label(kind)} = {twin}")
    else:
        panels.append(MapPanel(kinds.label(kind), loaded[kind]))
    if kind == "effective" and attn is not None:  # the null component sits beside what it completes
        if map_figures.same_map(attn, attn_eff):
            same.append("the null component A − A_eff is 0")
        else:
            panels.append(MapPanel(NULL_TITLE, attn - attn_eff))
for reason, names in missing.items():  # one notice per reason, not one per kind
    st.info(f"No {' / '.join(names)} map for example {example_id}, layer {layer}, head {head}: {reason}")
if panels and attribution is not None and attribution.shape == (n, n):  # a distribution over the input tokens
    panels.append(MapPanel(RECIPE, attribution, attention=False))
if not panels:
    st.stop()
if same:
    st.caption(f"Not drawn twice, equal here up to the stored rounding: {'; '.join(same)}.")
signed = "zmid" in map_figures.attention_scale(panels)
name = f"maps_{task}_ex{example_id}_L{layer}_H{head}"
cells = pl.DataFrame({"query": np.repeat(np.arange(n), n), "key": np.tile(np.arange(n), n),
                      "query_token": np.repeat(labels, n), "key_token": np.tile(labels, n),
                      **{p.title: p.z.ravel() for p in panels}})
charts.show(map_figures.full_maps(panels, labels), cells, name)
st.caption("Labels are `position token` (B: marks the second sentence). All attention panels share one colour scale "
           + ("centred at 0 (white; red positive, blue negative), because some weights here are negative"
              if signed else "from 0 (no weight here is negative)")
           + ". Hover a cell to read that (query, key) cell in every panel; zoom or pan one panel and the others follow "
             "(double-click resets)."
           + (" The gradient attribution panel (its own scale) is the share of each input token in the head's output "
              "at that query, by Meister et al.'s recipe (a project-chosen definition; see the Attribution page)."
              if attribution is not None else ""))
first, last = st.slider("Query rows to redraw at a readable height", 0, n - 1, (max(0, n - LAST_ROWS), n - 1),
                        key=f"ex_rows_{task}_{example_id}", help="The paper's Fig. 2 shows the last rows")
charts.show(map_figures.row_maps(panels, labels, first, last),
            cells.filter(pl.col("query").is_between(first, last)), f"{name}_rows{first}-{last}")
if attribution is None:
    attributed = maps.attributed_examples(run, task)
    if attributed:  # the run ships attribution maps for some explorer examples only (data/ size)
        st.caption(f"Gradient attribution maps are stored for examples {', '.join(map(str, attributed))} of {task}: "
                   "pick one of them to see the attribution beside the attention maps.")
shown = measures.filter(pl.col("kind").is_in(selection.kinds))
if not shown.is_empty():
    order = {kind: i for i, kind in enumerate(KINDS)}
    st.dataframe(shown.sort(pl.col("kind").replace_strict(order, default=len(order)))
                 .select(pl.col("kind").replace_strict(kinds.LABELS, default=pl.col("kind")), *SHOWN_MEASURES),
                 hide_index=True, width="stretch")
    st.caption("This head on this example: support_share = share of keys with a non-zero weight (1 for softmax, at "
               "most (rank + 1)/n for efficient); the weights on [CLS], [SEP] and punctuation are averaged over queries.")
kinds.show_notes(run, selection.kinds)
