"""Figures and tables of the Patterns page (Table 2, Fig. 4, the dominant-class grid)."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from dashboard import paper
from dashboard.charts import PATTERN_COLORS, figure_title
from dashboard.kinds import label
from precompute.schema import PATTERNS

SHORT = {"block": "B", "diagonal": "D", "vertical+diagonal": "V+D", "heterogeneous": "H", "vertical": "V"}


def table2(shares: pl.DataFrame, tasks: tuple[str, ...], kinds: tuple[str, ...]) -> pl.DataFrame:
    """Table 2 layout: one row per task × kind × source (ours, and the paper's where it has that kind), percent per class."""
    rows = []
    for task in tasks:
        for kind in kinds:
            ours = shares.filter((pl.col("task") == task) & (pl.col("kind") == kind))
            lookup = dict(zip(ours["pattern"].to_list(), ours["share"].to_list()))
            n_maps = ours["n_maps"].max() if not ours.is_empty() else None
            rows.append({"task": paper.task_label(task), "attention": kind, "source": "ours", "n_maps": n_maps,
                         **{SHORT[p]: None if p not in lookup else round(100 * lookup[p], 1) for p in paper.TABLE2_PATTERNS}})
            if paper.table2_share(task, kind, PATTERNS[0]) is not None:  # the paper has standard and effective only
                rows.append({"task": paper.task_label(task), "attention": kind, "source": "paper", "n_maps": None,
                             **{SHORT[p]: round(100 * paper.table2_share(task, kind, p), 1) for p in paper.TABLE2_PATTERNS}})
    schema = {"task": pl.String, "attention": pl.String, "source": pl.String, "n_maps": pl.Int64,
              **{SHORT[p]: pl.Float64 for p in paper.TABLE2_PATTERNS}}
    return pl.DataFrame(rows, schema=schema)


def table2_figure(table: pl.DataFrame, kinds: tuple[str, ...]) -> go.Figure:
    """Fig. 4: stacked class percentages per task, ours beside the paper's, one panel per kind."""
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[label(k) for k in kinds], shared_yaxes=True)
    for col, kind in enumerate(kinds, start=1):
        part = table.filter(pl.col("attention") == kind)
        x = [part["task"].to_list(), part["source"].to_list()]  # multicategory axis: task, then source
        for pattern in paper.TABLE2_PATTERNS:
            fig.add_trace(go.Bar(
                x=x, y=part[SHORT[pattern]].to_list(), name=pattern, marker_color=PATTERN_COLORS[pattern],
                legendgroup=pattern, showlegend=col == 1,
                hovertemplate=f"%{{x}}<br>{pattern}: %{{y:.1f}}%<extra>{label(kind)}</extra>"), row=1, col=col)
    fig.update_layout(barmode="stack", height=450, yaxis_title="% of maps", legend_title_text="class",
                      title=figure_title("Share of maps per pattern class, ours beside the paper's (Table 2, Fig. 4)",
                                         table["task"].unique(maintain_order=True).to_list(), kinds),
                      margin={"l": 10, "r": 10, "t": 90, "b": 10})
    return fig


def grid_figure(grid: pl.DataFrame, kinds: tuple[str, ...], layers: tuple[int, ...], heads: tuple[int, ...],
                task: str) -> go.Figure:
    """Layer × head grid of the dominant class, drawn as clickable squares (one trace per class)."""
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[label(k) for k in kinds],
                        shared_yaxes=True, horizontal_spacing=0.04)
    size = max(10, min(30, 360 // max(len(layers), 1)))
    for col, kind in enumerate(kinds, start=1):
        part = grid.filter(pl.col("kind") == kind)
        for pattern in PATTERNS:
            cells = part.filter(pl.col("dominant_pattern") == pattern)
            fig.add_trace(go.Scatter(
                x=cells["head"].to_list(), y=cells["layer"].to_list(), mode="markers", name=pattern,
                legendgroup=pattern, showlegend=col == 1,
                marker={"symbol": "square", "size": size, "color": PATTERN_COLORS[pattern],
                        "opacity": [0.35 + 0.65 * s for s in cells["dominant_share"].to_list()]},
                customdata=[[kind, pattern, s] for s in cells["dominant_share"].to_list()],
                hovertemplate="layer %{y}, head %{x}<br>%{customdata[1]}: %{customdata[2]:.0%} of maps"
                              "<extra>%{customdata[0]}</extra>"), row=1, col=col)
        fig.update_xaxes(title_text="head", tickvals=list(heads), range=[min(heads) - 0.6, max(heads) + 0.6],
                         showgrid=False, zeroline=False, row=1, col=col)
    fig.update_yaxes(title_text="layer", tickvals=list(layers), range=[max(layers) + 0.6, min(layers) - 0.6],
                     showgrid=False, zeroline=False, row=1, col=1)
    fig.update_yaxes(showgrid=False, zeroline=False)
    fig.update_layout(height=160 + (size + 6) * len(layers), legend_title_text="dominant class",
                      title=figure_title("Dominant pattern class per layer × head (opacity: its share of maps)", [task],
                                         kinds),
                      clickmode="event+select", margin={"l": 10, "r": 10, "t": 90, "b": 10})
    return fig


def clicked_cell(event) -> tuple[str, int, int, str] | None:
    """(kind, layer, head, class) of the clicked square in a grid selection event, else None."""
    points = (event or {}).get("selection", {}).get("points") or []  # streamlit's PlotlyState is a dict
    for point in points:
        custom = point.get("customdata")
        if custom:
            return custom[0], int(point["y"]), int(point["x"]), custom[1]
    return None
