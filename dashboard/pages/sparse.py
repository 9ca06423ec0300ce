"""Sparse attention (Meister et al. 2021): runs that differ only in their attention map, side by
side — accuracy and sparsity, dispersion of input influence, the λ sweep, and whether a head's
[CLS] row ranks the inputs as their importance for the output does."""

from dataclasses import replace

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from dashboard import charts, kinds, sidebar, sparse_views
from dashboard.sparse_views import SOFTMAX, THEIR_SETUP, THEIRS
from precompute.schema import TASKS

TARGETS = {"input_gradient": "input gradient (Eq. 4)", "leave_one_out": "leave-one-out (Eq. 6)",
           "intermediate_gradient": "gradient of the layer's input vectors (Eq. 5)"}

selection = sidebar.page(
    "Sparse attention",
    ("Meister et al. (2021) ask whether sparse attention points at a small set of influential inputs. Here the "
     "same encoder is fine-tuned with softmax, sparsemax and sparsegen-lin (larger λ = sparser) in every head; "
     "each run is one run folder (the sidebar shows its attention map), compared on the sidebar's tasks. "
     + THEIR_SETUP),
    "tasks", "kinds")

with st.spinner("Reading this run's metrics…"):
    metrics = sparse_views.headline_metrics(selection.run, selection.tasks)
columns = st.columns(max(len(metrics), 1))
for column, row in zip(columns, metrics.iter_rows(named=True)):
    column.metric(f"{TASKS[row['task']].folder} {row['metric']}, {selection.run.attention}", f"{row['value']:.3f}",
                  help=f"run {selection.run.name}, standard forward pass, dev")
with st.spinner("Finding runs that differ in their attention map…"):
    found = [comparison for comparison in sparse_views.comparisons() if comparison.task in selection.tasks]
if not found:
    st.info("None of the selected tasks has runs with two attention maps yet. Make a sparse run beside a softmax one, e.g. "
            "`python -m precompute --tasks sst2 --attention sparsemax --out data/minilm-sparsemax ...` "
            "(`--attention sparsegen:0.5` for sparsegen-lin), with the same other options as the softmax run.")
    st.stop()
by_task = {comparison.task: comparison for comparison in found}
# SST-2 first: it is their SST, the others stand in for their data sets
task = st.pills("Task", list(by_task), default="sst2" if "sst2" in by_task else next(iter(by_task)), required=True,
                key="sa_task", bind="query-params", help="Tasks with runs of at least two attention maps; SST-2 is "
                "their SST, the others stand in for IMDb and 20News")
comparison = by_task[task]
names = {run.name: f"{run.name} · {run.attention}" for run in comparison.runs}
colors = {attention: color for attention, color in zip(
    comparison.attentions, ["#2e8b57", "#1f5fbf", "#8e44ad", "#e08a00", "#c0392b", "#555555", "#17becf"])}


def lines(frame: pl.DataFrame, y: str, y_title: str, *, title: str, error: str | None = None,
          group: str = "attention") -> go.Figure:
    fig = go.Figure()
    for value in frame[group].unique(maintain_order=True).to_list():
        part = frame.filter(pl.col(group) == value).sort("layer")
        fig.add_trace(go.Scatter(
            x=part["layer"].to_list(), y=part[y].to_list(), mode="lines+markers", name=str(value),
            line={"color": colors.get(value)},
            error_y={"type": "data", "array": part[error].to_list(), "visible": True} if error else None,
            hovertemplate=f"{value}<br>layer %{{x}}<br>{y_title} %{{y:.3f}}<extra></extra>"))
    fig.update_layout(height=370, xaxis_title="layer", yaxis_title=y_title, legend_title_text=group,
                      title=charts.figure_title(title, [task]), margin={"l": 10, "r": 10, "t": 70, "b": 10})
    return fig


st.subheader("Accuracy and sparsity per run")
with st.spinner("Reading the runs' summaries…"):
    overview = sparse_views.overview(comparison)
st.dataframe(overview, hide_index=True)
sparsity = sparse_views.sparsity_by_layer(comparison)
if not sparsity.is_empty():
    left, right = st.columns(2)
    with left:
        part = sparsity.filter(pl.col("measure") == "zero_share")
        charts.show(lines(part, "mean", "share of exact zeros", title="Share of exact zeros per layer, standard kind"), part, f"zero_share_{task}")
    with right:
        part = sparsity.filter(pl.col("measure") == "support_size")
        charts.show(lines(part, "mean", "keys with weight > 0 per row", title="Support size per layer, standard kind"), part, f"support_size_{task}")
    st.caption("Standard kind (the attention the model runs), mean over heads and examples. Per layer × head below.")
    left, right = st.columns(2)
    run_name = left.segmented_control("Run", list(names), default=list(names)[-1], required=True, format_func=names.get,
                                      key="sa_run")
    scale = charts.scale_toggle(right)
    run = next(run for run in comparison.runs if run.name == run_name)
    grid = sparse_views.data.read(run, "sparsity_summary", tasks=(task,), kind=selection.kinds, measure=("zero_share",))
    if not grid.is_empty():
        shown = [kind for kind in selection.kinds if kind in set(grid["kind"])]
        # a share, whatever the kind: sequential from 0 (colour=None); kind_grid gives one column (one task), so lay it out with the
        # kinds across and each kind − standard under its kind
        shares = charts.kind_grid(grid, "mean", shown, row_values=sorted(set(grid["layer"])),
                                  col_values=sorted(set(grid["head"])), colour=None, measure="share of zero weights")
        across = [replace(panel, label=None) for panel in shares.panels]  # titled by kind, not by the one task
        differences = across[len(shown):]
        panels = [*across[:len(shown)], *([None, *differences] if differences else [])]
        title = charts.figure_title(f"Share of exactly-zero weights per layer × head, run {run_name} ({run.attention})",
                                    [task], shown)
        charts.show(charts.heatmaps(panels, cols=len(shown), height=(110 + 24 * run.n_layers) * (1 + bool(differences)) + 60,
                                    scale=scale, title=title, colorbar_title="share of zero weights"),
                    shares.table, f"zero_share_grid_{run_name}_{task}")
        st.caption("Share of exactly-zero weights per layer × head for each kind of this run's maps, each kind − standard "
                   "below it. Effective attention keeps the zeros of a sparse A only where n ≤ d_head (there A_eff = A); "
                   "on longer inputs the projection fills them in. Efficient attention is sparse by construction.")

st.subheader("Is input influence dispersed? (their Table 1)")
entropy = sparse_views.influence_entropy(comparison)
if entropy.is_empty():
    st.info("No layer_influence in these runs: run `python -m precompute ... --stages attribute,analyse` on each.")
else:
    charts.show(lines(entropy, "mean", "normalised entropy of input influence", error="std",
                      title="Normalised entropy of input influence per layer (their Table 1)"), entropy,
                f"influence_entropy_{task}")
    means = entropy.group_by("attention").agg(pl.col("mean").mean())
    ours = dict(zip(means["attention"], means["mean"]))
    st.caption(f"1 = every input token shapes a position's vector equally, 0 = one token does. Mean over layers: "
               + ", ".join(f"{attention} {value:.2f}" for attention, value in ours.items())
               + f". Theirs (Transformer, SST): softmax {THEIRS['entropy_softmax']}, sparsemax "
               f"{THEIRS['entropy_sparsemax']}; error bars: std over examples and queries.")

st.subheader("λ against dispersion (their Table 2)")
sweep = sparse_views.lambda_sweep(comparison)
if sweep.is_empty() or sweep["λ"].n_unique() < 2:
    st.info("Fewer than two sparsegen/sparsemax runs with layer_influence for this task: the λ sweep needs at least two λ.")
else:
    tau_influence = sparse_views.kendall_tau(sweep["λ"].to_list(), sweep["influence_entropy"].to_list())
    tau_output = (sparse_views.kendall_tau(sweep["λ"].to_list(), sweep["output_entropy"].to_list())
                  if "output_entropy" in sweep.columns else None)
    fig = go.Figure(go.Box(x=sweep["λ"].to_list(), y=sweep["influence_entropy"].to_list(), boxpoints="all",
                           marker_color=charts.SOURCE_COLORS["ours"], name="input influence entropy",
                           hovertemplate="λ %{x}<br>entropy %{y:.3f}<extra></extra>"))
    fig.update_layout(height=370, xaxis_title="λ (sparsegen-lin; 0 = sparsemax)", yaxis_title="entropy per example",
                      title=charts.figure_title("Input-influence entropy per example against λ (their Table 2)", [task]),
                      margin={"l": 10, "r": 10, "t": 70, "b": 10})
    charts.show(fig, sweep, f"lambda_sweep_{task}")
    left, right = st.columns(2)
    left.metric("Kendall τ-b, λ vs input-influence entropy", "–" if tau_influence is None else f"{tau_influence:+.2f}",
                help=f"theirs (Transformer, SST): {THEIRS['tau_lambda_entropy']}")
    right.metric("Kendall τ-b, λ vs entropy of the output's input gradient",
                 "–" if tau_output is None else f"{tau_output:+.2f}")
    st.caption(f"Over every (λ, example) pair of the sparsegen runs; theirs {THEIRS['tau_lambda_entropy']} (Transformer, "
               "SST). A negative τ: the larger λ (sparser attention), the lower the entropy.")

st.subheader("Does a head's attention rank the inputs as their importance does? (their Table 6)")
by_layer = sparse_views.importance_by_layer(comparison, selection.kinds)
if by_layer.is_empty():
    st.info("No importance rows in these runs: run `python -m precompute ... --stages importance,analyse` on each.")
else:
    target = st.segmented_control("Importance of", list(TARGETS), default="input_gradient", required=True,
                                  format_func=TARGETS.get, key="sa_target")
    part = by_layer.filter(pl.col("target") == target)
    for attention in comparison.attentions:
        rows = part.filter(pl.col("attention") == attention).with_columns(label=pl.col("kind").replace_strict(kinds.LABELS))
        if rows.is_empty():
            continue
        fig = go.Figure()
        for kind in rows["kind"].unique(maintain_order=True).to_list():
            line = rows.filter(pl.col("kind") == kind).sort("layer")
            fig.add_trace(go.Scatter(x=line["layer"].to_list(), y=line["mean"].to_list(), mode="lines+markers",
                                     name=kinds.label(kind), line={"color": charts.KIND_COLORS.get(kind)},
                                     hovertemplate=f"{kinds.label(kind)}<br>layer %{{x}}<br>τ %{{y:.3f}}<extra></extra>"))
        shown = rows["kind"].unique(maintain_order=True).to_list()
        title = charts.figure_title(f"Kendall τ-b, [CLS] row vs {TARGETS[target]}, run {attention}", [task], shown)
        fig.update_layout(height=340, title=title, xaxis_title="layer", yaxis_title="Kendall τ-b",
                          yaxis_range=[-1, 1], margin={"l": 10, "r": 10, "t": 70, "b": 10})
        charts.show(fig, rows, f"importance_{target}_{attention}_{task}")
    standard = {attention: sparse_views.mean_tau(by_layer, attention, target) for attention in comparison.attentions}
    st.caption("τ-b between each head's [CLS] row and the importance row, over the content tokens ([CLS]/[SEP] "
               "cannot be deleted), mean over heads of the layer and the examples. Standard kind, all layers: "
               + ", ".join(f"{attention} {value:+.2f}" for attention, value in standard.items() if value is not None)
               + f". Theirs (Transformer, SST, input gradient): softmax {THEIRS['tau_input_gradient_softmax']}, "
               f"sparsemax {THEIRS['tau_input_gradient_sparsemax']}.")

st.subheader("Ours beside theirs")
st.dataframe(sparse_views.beside_theirs(comparison), hide_index=True)
st.caption(THEIR_SETUP + " Their attention is one distribution per example over the encoder states; ours is every "
           "head's [CLS] row, so the numbers compare in direction, not in size.")
kinds.show_notes(comparison.runs[0], selection.kinds)
