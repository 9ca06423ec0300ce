"""Plotly figure builders and ``show``: every chart with hover values, a CSV of its table and
an image of the figure (the modebar camera button, in the sidebar's PNG/SVG format).

The one colour rule (``diverging``), everywhere: a kind whose entries can be negative
(``KindInfo.signed`` in precompute.schema: effective, effective norm-weighted), the null
component and every difference are drawn on a diverging scale centred at 0 (white = 0) with a
symmetric range; so is any other signed value (``SIGNED``: a rank correlation); the other kinds
(standard, norm-weighted, efficient: distributions) and non-attention values (cosines, counts,
divergences) on a sequential scale from 0. Pages say what a panel shows (``Panel.kind``), never
which colours it gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
import polars as pl
import streamlit as st
from plotly.subplots import make_subplots

from precompute.schema import KIND_INFO

SEQUENTIAL = "Greens"  # unsigned kinds and other values from 0 (the paper's green)
DIVERGING = "RdBu_r"  # signed kinds / null / differences: red positive, blue negative, white 0
DIFFERENCE = "difference"  # Panel.kind of a difference of two kinds or of the null component: signed
SIGNED = "signed"  # Panel.kind of another value in [-1, 1] that is not attention (a Kendall τ): diverging
# bars and lines per kind (a test keeps this in step with KIND_INFO)
KIND_COLORS = {"standard": "#2e8b57", "effective": "#1f5fbf", "norm": "#e08a00",
               "effective_norm": "#8e44ad", "efficient": "#c0392b"}
SOURCE_COLORS = {"ours": KIND_COLORS["effective"], "paper": "#999999"}  # ours beside the paper's numbers
PATTERN_COLORS = {"vertical": "#d62728", "diagonal": "#2ca02c", "vertical+diagonal": "#ff7f0e",
                  "block": "#1f77b4", "heterogeneous": "#9467bd"}


@dataclass
class Panel:
    """One heatmap of a multi-panel figure: z[row][col] over y (rows) and x (columns)."""

    title: str
    z: np.ndarray  # (rows, columns) float, NaN where missing; numpy keeps plotly's validation fast
    x: Sequence
    y: Sequence
    kind: str | None = None  # a KIND_INFO name, DIFFERENCE, or None (not attention weights): sets the colours
    text: list[list[str]] | None = None  # optional per-cell hover text
    hover: dict = field(default_factory=lambda: {"x": "head", "y": "layer", "z": "value"})


def diverging(kind: str | None) -> bool:
    """The colour rule: diverging for signed kinds, differences and SIGNED values, sequential from 0 for the rest."""
    if kind in (DIFFERENCE, SIGNED):
        return True
    info = KIND_INFO.get(kind) if kind is not None else None
    return info is not None and info.signed


def _range(z: np.ndarray, signed: bool) -> tuple[float, float]:
    if not np.isfinite(z).any():
        return (0.0, 1.0)
    low, high = float(np.nanmin(z)), float(np.nanmax(z))
    if signed:
        bound = max(abs(low), abs(high)) or 1.0
        return (-bound, bound)
    return (min(0.0, low), high or 1.0)


def _shared_ranges(panels: list[Panel | None]) -> dict[bool, tuple[float, float]]:
    """{signed: (zmin, zmax)} over all panels drawn with that colour rule."""
    values: dict[bool, list[np.ndarray]] = {}
    for panel in panels:
        if panel is not None:
            values.setdefault(diverging(panel.kind), []).append(np.ravel(np.asarray(panel.z, dtype=float)))
    return {signed: _range(np.concatenate(zs), signed) for signed, zs in values.items()}


def heatmaps(panels: list[Panel | None], *, height: int | None = None, x_title: str = "head", y_title: str = "layer",
             cols: int | None = None, shared_y: bool = True, square: bool = False, shared_range: bool = False) -> go.Figure:
    """Side-by-side heatmaps, each with its own colour bar; ``shared_y`` when all panels have the same rows.

    Rows run top-down like a matrix: the first layer (or query) on top. A None leaves its cell empty
    (so that a panel can sit under the one it belongs to). ``shared_range``: one colour range over
    all panels (per colour rule), so that panels of the same measure compare by colour.
    """
    cols = cols or len(panels)
    rows = -(-len(panels) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p.title if p else "" for p in panels], shared_yaxes=shared_y,
                        horizontal_spacing=0.07 if cols > 1 else 0.02, vertical_spacing=0.32 / rows if rows > 1 else 0.1)
    traces, axes = [], {}
    shared = _shared_ranges(panels) if shared_range else {}
    for i, panel in enumerate(panels):
        row, col = divmod(i, cols)
        suffix = str(i + 1) if i else ""  # make_subplots names axes x, x2, x3, ... row by row
        if panel is None:
            axes[f"xaxis{suffix}"] = axes[f"yaxis{suffix}"] = {"visible": False}
            continue
        z = np.asarray(panel.z, dtype=float)
        signed = diverging(panel.kind)
        zmin, zmax = shared.get(signed) or _range(z, signed)
        labels = panel.hover
        template = f"{labels['y']} %{{y}}<br>{labels['x']} %{{x}}<br>{labels['z']} %{{z:.4f}}"
        if panel.text is not None:
            template += "<br>%{text}"
        domain = fig.layout[f"xaxis{suffix}"].domain or (0, 1)
        traces.append(go.Heatmap(
            z=z, x=list(panel.x), y=list(panel.y), text=panel.text, zmin=zmin, zmax=zmax,
            colorscale=DIVERGING if signed else SEQUENTIAL, zmid=0 if signed else None,
            hovertemplate=template + "<extra></extra>", name=panel.title, xaxis=f"x{suffix}", yaxis=f"y{suffix}",
            colorbar={"x": domain[1] + 0.005, "len": 0.85 / rows, "y": 1 - (row + 0.5) / rows, "thickness": 10},
        ))
        # one cell = one square with ``square``: maps keep their shape however wide the page is
        axes[f"xaxis{suffix}"] = {"title": {"text": x_title if row == rows - 1 else None}, "type": "category",
                                  **({"constrain": "domain"} if square else {})}
        first = all(panels[row * cols + c] is None for c in range(col))  # leftmost drawn panel of its row
        axes[f"yaxis{suffix}"] = {"title": {"text": y_title if first else None}, "type": "category",
                                  "autorange": "reversed", **({"showticklabels": True} if first else {}),
                                  **({"scaleanchor": f"x{suffix}", "constrain": "domain"} if square else {})}
    fig.add_traces(traces)  # one call: plotly validates per call, and this is the slow part of a page
    fig.update_layout(axes, height=height or 120 + 260 * rows, margin={"l": 10, "r": 10, "t": 50, "b": 10})
    fig.update_annotations(font_size=14 if cols <= 3 else 12)  # the subplot titles; narrower panels, smaller titles
    return fig


def matrix(frame: pl.DataFrame, value: str, *, rows: str = "layer", cols: str = "head",
           row_values: Sequence | None = None, col_values: Sequence | None = None) -> tuple[list, list, np.ndarray]:
    """(row labels, column labels, z) of ``value`` from a long frame; NaN where missing."""
    row_values, col_values, (z,) = matrices(frame, (value,), rows=rows, cols=cols, row_values=row_values,
                                            col_values=col_values)
    return row_values, col_values, z


def matrices(frame: pl.DataFrame, values: Sequence[str], *, rows: str = "layer", cols: str = "head",
             row_values: Sequence | None = None,
             col_values: Sequence | None = None) -> tuple[list, list, list[np.ndarray]]:
    """(row labels, column labels, one z per column of ``values``) from one pass over a long frame."""
    row_values = list(row_values if row_values is not None else sorted(frame[rows].unique().to_list()))
    col_values = list(col_values if col_values is not None else sorted(frame[cols].unique().to_list()))
    lookup = {(r, c): cell for r, c, *cell in frame.select(rows, cols, *values).iter_rows()}
    missing = [None] * len(values)
    cube = np.array([[lookup.get((r, c), missing) for c in col_values] for r in row_values], dtype=float).reshape(
        len(row_values), len(col_values), len(values))  # None -> NaN
    return row_values, col_values, [np.ascontiguousarray(cube[:, :, i]) for i in range(len(values))]


def bars(frame: pl.DataFrame, *, x: str, y: str, color: str, colors: dict | None = None, names: dict | None = None,
         y_title: str | None = None, height: int = 380, hover_format: str = ".3f") -> go.Figure:
    """Grouped bars of ``y`` over ``x``, one colour per ``color`` value (legend names from ``names``)."""
    fig = go.Figure()
    groups = frame[color].unique(maintain_order=True).to_list()
    order = list(colors or {})  # legend order follows the colour map (standard before effective)
    for group in sorted(groups, key=lambda g: order.index(g) if g in order else len(order)):
        part = frame.filter(pl.col(color) == group)
        fig.add_trace(go.Bar(
            x=part[x].to_list(), y=part[y].to_list(), name=(names or {}).get(group, str(group)),
            marker_color=(colors or {}).get(group),
            hovertemplate=f"{x} %{{x}}<br>{color} {(names or {}).get(group, group)}<br>{y} %{{y:{hover_format}}}<extra></extra>",
        ))
    fig.update_layout(barmode="group", height=height, yaxis_title=y_title or y, xaxis_title=x,
                      margin={"l": 10, "r": 10, "t": 30, "b": 10}, legend_title_text=color)
    return fig


def show(fig: go.Figure, table: pl.DataFrame, name: str, *, key: str | None = None,
         on_select=None):
    """Render ``fig`` with an image button (PNG/SVG) and a CSV download of ``table``."""
    fmt = st.session_state.get("image_format") or "svg"
    config = {"displaylogo": False, "toImageButtonOptions": {"format": fmt, "filename": name, "scale": 2}}
    kwargs = {"on_select": on_select, "selection_mode": ("points",)} if on_select else {}
    event = st.plotly_chart(fig, config=config, key=key or f"chart-{name}", **kwargs)
    st.download_button(f"CSV: {name}", data=table.write_csv(), file_name=f"{name}.csv", mime="text/csv",
                       key=f"csv-{name}", on_click="ignore", icon=":material/download:")
    return event
