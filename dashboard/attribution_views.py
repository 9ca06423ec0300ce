"""Numbers and figures of the Attribution page: attention vs gradient attribution (Pascual et al. 2021,
measured with Meister et al.'s recipe, METHODS.md §3.3), and the input tokens' influence per layer.

The findings (dashboard/findings.py) use the same numbers. Reads only the analysis tables
``attribution_summary`` and ``influence_summary``, and the seq_len column of ``layer_influence``
(the chance level 1/n of the own-token share).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from dashboard import data, kinds, paper
from dashboard.charts import DIFFERENCE, KIND_COLORS, SIGNED, Panel, matrix
from dashboard.data import Run

MEASURES = {"jsd": "JSD", "kendall_tau": "Kendall τ-b", "top1_agreement": "top-1 agreement"}
MISMATCH_SIGN = {"jsd": 1, "kendall_tau": -1, "top1_agreement": -1}  # +1: a larger value = a larger mismatch
PANEL_KINDS = {"kendall_tau": SIGNED}  # τ-b lies in [-1, 1]: diverging; JSD and top-1 in [0, 1]: sequential from 0
UNITS = {"jsd": "JSD (bits)", "kendall_tau": "Kendall τ-b", "top1_agreement": "top-1 agreement (share of queries)"}
# "the mismatch grows with depth" when Kendall τ between layer and the layer's mean mismatch is ≥ 0.5,
# i.e. at least 75 % of the pairs of layers have the larger mismatch in the deeper layer (a rank
# statistic: robust to one odd layer, and it needs no model of how fast the mismatch grows)
DEPTH_TREND = 0.5
RECIPE = "gradient attribution (Meister et al. recipe)"
RECIPE_NOTE = (
    "Attribution row of head h at query i: g(j) = ‖∂‖z_i‖₂/∂e_j‖₂ / Σ_k ‖∂‖z_i‖₂/∂e_k‖₂, z_i the head's output at "
    "query i (before W_O), e_j the word-piece embedding of input token j, on the fine-tuned model. This is Meister "
    "et al.'s (2021) normalised gradient-of-norm recipe (METHODS.md §3.3): Pascual et al. (2021) do not state their "
    "formula where we could read it, so the attribution is a **project-chosen definition**, not theirs. JSD is base 2 "
    "(0 = same row, 1 = disjoint); signed kinds are compared as |row| / Σ|row|.")


def how_to_make(run: Run, tasks: tuple[str, ...]) -> str:
    """The st.info text for a run or task without the attribution tables: the command that makes them."""
    source = str(run.manifest.get("data_source") or "")
    glue = f" --glue-dir {source.removeprefix('glue-dir:')}" if source.startswith("glue-dir:") else ""
    return (f"No attention-vs-attribution tables for {', '.join(map(paper.task_label, tasks))} in run {run.name} yet. "
            "Make them with the attribute stage (gradients on the fine-tuned checkpoints) and the analysis:\n\n"
            f"`python -m precompute --stages attribute,analyse --tasks {','.join(tasks)} --out {run.location}{glue}`")


def read_summary(run: Run, tasks: tuple[str, ...], **where) -> pl.DataFrame:
    """attribution_summary rows: task, layer, head, kind, measure, mean, std, n."""
    return data.read(run, "attribution_summary", tasks=tasks, **where)


def sample_size(run: Run, task: str, summary: pl.DataFrame) -> int | None:
    """Examples behind the task's attribution rows: the manifest's count, else the largest summary n."""
    count = ((run.manifest.get("row_counts") or {}).get(task) or {}).get("attribution_examples")
    if count is not None:
        return int(count)
    n = summary.filter(pl.col("task") == task)["n"].max()
    return int(n) if n is not None else None


def head_panels(summary: pl.DataFrame, measure: str, shown: tuple[str, ...], layers: tuple[int, ...],
                heads: tuple[int, ...]) -> tuple[list[Panel | None], pl.DataFrame]:
    """Layer × head panels of ``measure`` (mean over the tasks in ``summary``): one per kind in the first row, each
    other kind − standard below it (when standard is shown), and their table (kind 'effective − standard' rows)."""
    cells = (summary.filter(pl.col("measure") == measure).group_by("layer", "head", "kind")
             .agg(pl.col("mean").mean(), pl.col("std").mean(), pl.col("n").sum()).sort("kind", "layer", "head"))
    hover = {"x": "head", "y": "layer", "z": MEASURES[measure]}
    z = {kind: matrix(cells.filter(pl.col("kind") == kind), "mean", row_values=layers, col_values=heads)[2]
         for kind in shown}
    panels: list[Panel | None] = [Panel(kinds.label(kind), z[kind], list(heads), list(layers),
                                        kind=PANEL_KINDS.get(measure), hover=hover) for kind in shown]
    others = [kind for kind in shown if kind != kinds.BASE] if kinds.BASE in shown else []
    if others:  # nothing under standard; each other kind's difference under that kind
        panels += [None] + [Panel(kinds.difference(kind), z[kind] - z[kinds.BASE], list(heads), list(layers),
                                  kind=DIFFERENCE, hover={**hover, "z": f"Δ {MEASURES[measure]}"}) for kind in others]
    base = cells.filter(pl.col("kind") == kinds.BASE).select("layer", "head", pl.col("mean").alias("base"))
    diffs = [cells.filter(pl.col("kind") == kind).join(base, on=["layer", "head"])
             .select("layer", "head", pl.lit(f"{kind} − {kinds.BASE}").alias("kind"), pl.col("mean") - pl.col("base"))
             for kind in others]
    return panels, pl.concat([cells, *diffs], how="diagonal_relaxed")


def per_layer(summary: pl.DataFrame, measure: str) -> pl.DataFrame:
    """kind, layer, mean (over heads of the head means, each averaged over tasks), std (across heads), n_heads."""
    heads = (summary.filter(pl.col("measure") == measure).group_by("kind", "layer", "head")
             .agg(pl.col("mean").mean()))
    return (heads.group_by("kind", "layer").agg(pl.col("mean").std().fill_null(0.0).alias("std"),
                                                 pl.col("mean").mean(), pl.len().alias("n_heads"))
            .select("kind", "layer", "mean", "std", "n_heads").sort("kind", "layer"))


def kendall_tau(x: list[float], y: list[float]) -> float | None:
    """Kendall τ-b of two equally long lists (None when either is constant or shorter than 2)."""
    sx, sy = (np.sign(np.subtract.outer(v, v))[np.triu_indices(len(v), 1)] for v in (np.asarray(x), np.asarray(y)))
    denominator = np.sqrt(np.count_nonzero(sx) * np.count_nonzero(sy))
    return float((sx * sy).sum() / denominator) if denominator else None


def trends(layered: pl.DataFrame, measure: str, shown: tuple[str, ...]) -> pl.DataFrame:
    """Per kind: mean over layers, Kendall τ and slope of the per-layer mean vs layer, and the depth verdict."""
    rows = []
    for kind in (k for k in shown if k in set(layered["kind"])):
        part = layered.filter(pl.col("kind") == kind).sort("layer")
        x, y = part["layer"].to_list(), part["mean"].to_list()
        tau = kendall_tau(x, y)
        slope = float(np.polyfit(x, y, 1)[0]) if len(x) > 1 else None
        growth = None if tau is None else tau * MISMATCH_SIGN[measure]  # τ of layer vs mismatch
        verdict = ("no trend" if growth is None else "grows" if growth >= DEPTH_TREND
                   else "shrinks" if growth <= -DEPTH_TREND else "no clear trend")
        rows.append({"kind": kinds.label(kind), "mean": float(np.mean(y)), "tau_layer": tau, "slope_per_layer": slope,
                     "mismatch with depth": verdict})
    return pl.DataFrame(rows, schema={"kind": pl.String, "mean": pl.Float64, "tau_layer": pl.Float64,
                                      "slope_per_layer": pl.Float64, "mismatch with depth": pl.String})


def sentence(table: pl.DataFrame, measure: str) -> str:
    """Which kind agrees best with attribution on average, and for which kinds the mismatch grows with depth."""
    ranked = table.sort("mean", descending=MISMATCH_SIGN[measure] < 0)  # best agreement first
    best, others = ranked.row(0, named=True), ranked.slice(1)
    rest = "; ".join(f"{row['kind']} {row['mean']:.3f}" for row in others.iter_rows(named=True))
    text = (f"On average over layers and heads, **{best['kind']}** agrees best with attribution "
            f"(mean {MEASURES[measure]} {best['mean']:.3f}" + (f"; {rest}" if rest else "") + "). ")
    groups = {verdict: table.filter(pl.col("mismatch with depth") == verdict)["kind"].to_list()
              for verdict in ("grows", "shrinks", "no clear trend")}
    phrases = {"grows": "grows", "shrinks": "shrinks", "no clear trend": "shows no clear trend"}
    parts = [f"{phrases[verdict]} for {', '.join(names)}" for verdict, names in groups.items() if names]
    return text + (f"The mismatch {'; '.join(parts)} (Kendall τ between layer and mean {MEASURES[measure]}; "
                   f"a trend needs |τ| ≥ {DEPTH_TREND})." if parts else "")


def chance_own_share(run: Run, tasks: tuple[str, ...]) -> dict[str, float]:
    """{task: mean 1/n over the attribution sample}: the own-token share if influence were uniform."""
    sizes = data.read(run, "layer_influence", tasks=tasks, columns=("task", "example_id", "seq_len"))
    sizes = sizes.unique(["task", "example_id"])  # one row per example (the table has one per layer)
    return dict(sizes.group_by("task").agg((1 / pl.col("seq_len")).mean()).iter_rows())


def per_layer_figure(layered: pl.DataFrame, shown: tuple[str, ...], measure: str) -> go.Figure:
    """Mean ``measure`` per layer, one line per kind, error bars = std across heads."""
    fig = go.Figure()
    for kind in shown:
        part = layered.filter(pl.col("kind") == kind).sort("layer")
        if part.is_empty():
            continue
        fig.add_trace(go.Scatter(
            x=part["layer"].to_list(), y=part["mean"].to_list(), mode="lines+markers", name=kinds.label(kind),
            line={"color": KIND_COLORS.get(kind)}, error_y={"type": "data", "array": part["std"].to_list(), "thickness": 1},
            hovertemplate=f"layer %{{x}}: %{{y:.3f}}<extra>{kinds.label(kind)}</extra>"))
    fig.update_layout(height=400, xaxis_title="layer", yaxis_title=f"mean {MEASURES[measure]} (over heads)",
                      xaxis={"tickvals": sorted(set(layered["layer"]))}, margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return fig


def influence_figure(influence: pl.DataFrame, chance: dict[str, float]) -> go.Figure:
    """Own-token share (with its chance level 1/n, dotted) and entropy per layer, one colour per task."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["own-token share g(i, i)", "normalised entropy of g(i, ·)"])
    for i, task in enumerate(influence["task"].unique(maintain_order=True).to_list()):
        colour, name = qualitative.Plotly[i % len(qualitative.Plotly)], paper.task_label(task)
        for col, measure in enumerate(("own_share", "entropy"), start=1):
            part = influence.filter((pl.col("task") == task) & (pl.col("measure") == measure)).sort("layer")
            fig.add_trace(go.Scatter(
                x=part["layer"].to_list(), y=part["mean"].to_list(), mode="lines+markers", name=name, legendgroup=task,
                showlegend=col == 1, line={"color": colour}, error_y={"type": "data", "array": part["std"].to_list(), "thickness": 1},
                hovertemplate=f"layer %{{x}}: %{{y:.3f}}<extra>{name} · {measure}</extra>"), row=1, col=col)
        if task in chance:
            fig.add_hline(y=chance[task], line={"color": colour, "dash": "dot", "width": 1}, row=1, col=1)
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    fig.update_xaxes(title_text="layer", dtick=1)
    return fig
